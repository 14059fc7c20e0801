// Ablation: olmo-tiny with its own byte-level BPE tokenizer, trained on the mixed corpus, in place of
// OLMo's 50k GPT-NeoX tokenizer file. The corpus stages come from the cache; the tokenizer, the tokens
// and everything after them are recomputed, with the model's vocabulary (and so its embedding) sized
// to the new tokenizer.
local olmo = import '../lib/olmo.libsonnet';
local tokenizer = olmo.trainedTokenizer(vocab_size=8192);

(import '../olmo-tiny.jsonnet') + {
  steps+: {
    tokenizer: tokenizer.step,
    pretrain+: { model+: tokenizer.model },
  },
}
