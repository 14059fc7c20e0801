// The olmo-tiny DAG shrunk to seconds per step: what the test suite runs end to end.
local olmo = import 'lib/olmo.libsonnet';
local tiny = (import 'olmo-tiny.jsonnet').params;

local params = tiny {
  name: 'olmo-micro',
  sources: [
    { name: 'python-docs', type: 'embedded', kind: 'python-docs', max_documents: 60 },
    { name: 'package-metadata', type: 'embedded', kind: 'package-metadata', max_documents: 30 },
  ],
  mix+: { sampling: {}, heldout_fraction: 0.2 },  // ~10 of ~55 documents: never none, whatever is installed
  seq_len: 64,
  data_order: { seed: 6198, global_batch_size: 4 },
  model: { preset: 'olmo-micro', max_sequence_length: 128 },
  pretrain+: {
    micro_batch_size: 2,
    max_steps: 12,
    schedule+: { peak_lr: 1e-2, warmup_steps: 2, total_steps: 12 },
  },
  anneal+: { max_steps: 2, micro_batch_size: 2 },
  sft_data+: { max_examples: 16, max_chars: 200 },
  sft+: { epochs: 1, max_length: 128, global_batch_size: 8, micro_batch_size: 4 },
  preference_data+: { max_examples: 16, max_chars: 200 },
  dpo+: { epochs: 1, max_length: 128, global_batch_size: 8, micro_batch_size: 4 },
  evaluation+: { tasks: ['arc_easy', 'boolq', 'winogrande'], limit: 3, heldout_documents: 3 },
  text_sets: { wikipedia: { task: 'boolq', field: 'passage', documents: 3 } },
  // W&B runs of the training and evaluation steps, offline in their work directories (tests/workflows).
  execution: { device: 'cpu', num_workers: 1, log_every: 1, wandb: { project: 'olmo-tango', mode: 'offline' } },
};

olmo.recipe(params)
