// OLMo-1B (arXiv 2402.00838; the released config): the 7B recipe's corpus, tokenizer and data
// order with the tied 1B model, peak LR 4e-4, 2000 warmup steps, cosine decay to 4e-5 (the paper
// text says 5000 steps and linear decay for every size; the config is what was run), micro-batch 8.
// It is the 7B recipe with these params changed (its SFT and DPO on one node included).
(import 'olmo7b.jsonnet') + { params+:: {
  name: 'olmo-1b',
  model: { preset: 'olmo-1b' },
  pretrain+: {
    micro_batch_size: 8,
    schedule+: { kind: 'cosine', peak_lr: 4e-4, warmup_steps: 2000, final_lr_fraction: 0.1 },
  },
  anneal+: { start_lr: null, micro_batch_size: 8 },
} }
