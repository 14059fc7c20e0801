// OLMo-7B (arXiv 2402.00838): Dolma-style corpus, 2T tokens, then the 1000-step anneal to LR 0,
// SFT and DPO as in open-instruct. Point `dolma` at your copy of the Dolma v1.5 shards (any
// fsspec URL: s3://, gs://, hf://, a shared filesystem).
local olmo = import 'lib/olmo.libsonnet';

local dolma = 's3://ai2-llm/pretraining-data/sources/';
local tokens_per_step = 2048 * 2048;  // instances x sequence length
local pretrain_steps = std.ceil(2e12 / tokens_per_step);  // 2T tokens -> 476,838 steps
local source(name, path) = { name: name, type: 'files', paths: [dolma + path] };

local params = {
  name: 'olmo-7b',
  sources: [
    source('common-crawl', 'common-crawl/v1_5/documents/*.json.gz'),
    source('c4', 'c4/v1_5/documents/*.json.gz'),
    source('stack-code', 'stack/v1_5/documents/*.json.gz'),
    source('pes2o', 'pes2o/v2/documents/*.json.gz'),
    source('gutenberg', 'gutenberg/v0/documents/*.json.gz'),
    source('wikipedia', 'wikipedia/v0/documents/*.json.gz'),
    source('reddit', 'reddit/v5/documents/*.json.gz'),
  ],
  source_shard_bytes: 1073741824,
  tag: {},  // every tagger (language, code, Gopher, C4, toxicity, PII) on its default sources
  filter: {},  // Dolma v1.5 thresholds are the defaults
  dedup: {
    url: true, exact: true, paragraph: true,
    decontaminate: ['arc_easy', 'arc_challenge', 'boolq', 'copa', 'hellaswag', 'openbookqa', 'piqa', 'sciq', 'winogrande',
                    'csqa', 'socialiqa', 'mmlu'],
  },
  mix: { seed: 6198, sampling: {}, heldout_fraction: 0.0001, max_shard_bytes: 1073741824 },
  tokenizer: {
    name: 'allenai_gpt-neox-olmo-dolma-v1_5',
    eos_token_id: 50279,
    pad_token_id: 1,
    pii_tokens: ['|||EMAIL_ADDRESS|||', '|||PHONE_NUMBER|||', '|||IP_ADDRESS|||'],
  },
  seq_len: 2048,
  data_order: { seed: 6198, global_batch_size: 2048 },
  inspect_batch: 0,
  model: { preset: 'olmo-7b' },
  pretrain: {
    micro_batch_size: 2,
    max_steps: pretrain_steps,
    schedule: {
      kind: 'linear',
      peak_lr: 3e-4,
      warmup_steps: 5000,
      warmup_start_fraction: 0.1,
      total_steps: pretrain_steps,
      final_lr_fraction: 0.1,  // linear decay to 3e-5
    },
    optimizer: { betas: [0.9, 0.95], eps: 1e-5, weight_decay: 0.1 },
    max_grad_norm: 1.0,  // the released run clipped at 10.0 for its first 1000 steps
    seed: 6198,
    precision: 'bf16',
  },
  anneal: {
    start_lr: 2.3e-5,
    max_steps: 1000,
    micro_batch_size: 2,
    max_grad_norm: 1.0,
    seed: 6198,
    precision: 'bf16',
  },
  sft_data: { max_examples: 100000, seed: 0 },
  sft: {
    epochs: 3, lr: 2e-6, warmup_ratio: 0.03, max_length: 2048,
    global_batch_size: 128, micro_batch_size: 2, optimizer: { weight_decay: 0.0 }, seed: 0, precision: 'bf16',
  },
  preference_data: { max_examples: 60000, seed: 1 },
  dpo: {
    epochs: 3, lr: 5e-7, warmup_ratio: 0.1, max_length: 2048, beta: 0.1,
    global_batch_size: 32, micro_batch_size: 1, optimizer: { weight_decay: 0.0 }, seed: 0, precision: 'bf16',
  },
  evaluation: {
    tasks: ['arc_easy', 'arc_challenge', 'boolq', 'copa', 'hellaswag', 'openbookqa', 'piqa', 'sciq', 'winogrande',
            'csqa', 'socialiqa', 'mmlu'],
    limit: null,
    seed: 0,
    source: 'auto',
    heldout_documents: 10000,
  },
  text_sets: { wikipedia: { task: 'boolq', field: 'passage', documents: null } },
  // Paloma's own sources, when reachable: `paloma: { c4_en: 's3://.../paloma/c4_en/val', ... }`.
  paloma: {},
  // In-loop evaluation (steps/train/in_loop_eval.py): bits per byte on the mix's held-out split and
  // the primary accuracy of the core tasks OLMo-7B evaluated in its training loop, every 1000 steps
  // of pretraining (its eval_interval) and every 100 of the anneal. Every rank scores all of it, so
  // 500 questions a task and 1000 documents bound its cost.
  in_loop_eval: {
    local scope = {
      tasks: ['arc_easy', 'copa', 'hellaswag', 'openbookqa', 'piqa', 'sciq', 'winogrande'],
      limit: 500,
      heldout_documents: 1000,
      seed: 0,
      source: 'auto',
    },
    pretrain: scope { every: 1000 },
    anneal: scope { every: 100 },
  },
  // FSDP full sharding over every GPU of the job (32 nodes x 8), one block per FSDP unit. The first node
  // runs `tango run`, the others `olmo-tango train-node workflows/olmo7b.jsonnet --step pretrain` (README).
  // Checkpoint intervals, like the rest of `execution`, stay out of every fingerprint.
  execution: {
    device: 'auto', num_workers: 16, world_size: 256, nnodes: 32, rdzv_endpoint: 'olmo-node-0:29400', sharding: 'full',
    log_every: 10, checkpoint_every: 1000,
    dedup_partitions: 1536,  // Dolma v1.5's 1.5 TB of dedup items in 1 GiB shares (docs/scale.md)
  },
};

// SFT and DPO run on one node of 8 GPUs, as open-instruct fine-tunes a 7B: their global batches (128 and 32
// sequences) do not split over the pretraining job's 256 workers.
local oneNode = { execution+: { world_size: 8, nnodes: 1, rdzv_endpoint: null } };

olmo.recipe(params) + { steps+: { sft+: oneNode, dpo+: oneNode } }
