// OLMo 2 7B (arXiv 2501.00656; allenai/OLMo's configs/official-1124/OLMo2-7B-stage1.yaml): the olmo7b recipe with
// OLMo 2's architecture and training stabilizers, one key each (README, "OLMo 2"):
//   model olmo2-7b: RMSNorm (eps 1e-6) on the outputs of attention and MLP ("reordered norm"), QK-norm, RoPE θ 500,000,
//   init N(0, 0.02) truncated at 3σ, the dolma2 tokenizer (100,278 ids padded to 100,352), 4096-token sequences;
//   training: z-loss 1e-5, no weight decay on embeddings (norm weights decayed), AdamW eps 1e-8, 2000 warmup steps
//   from 0 to 3e-4, cosine decay towards 3e-5 at 5T tokens, stopped after 4T (stage 1), batches of 1024 × 4096
//   tokens (4M), clip 1.0, bf16; the repeated n-gram instance filter (period 1..13, 32 copies).
// OLMo 2's stage 2 (mid-training on Dolmino Mix 1124) is here the anneal on the same mix: LR from where stage 1
// stopped linearly to 0 over 50B tokens. Its corpus is olmo7b's Dolma v1.5 sources (OLMo 2's OLMo-mix-1124 is a
// different mix: point `sources` at it).
local tokens_per_step = 1024 * 4096;
local pretrain_steps = std.ceil(4e12 / tokens_per_step);  // 953,675
local schedule_steps = std.ceil(5e12 / tokens_per_step);  // the cosine's horizon, past the 4T trained

(import 'olmo7b.jsonnet') + { params+:: {
  name: 'olmo2-7b',
  tokenizer: { name: 'allenai_dolma2', eos_token_id: 100257, pad_token_id: 100277, pii_tokens: [] },
  seq_len: 4096,
  data_order: { seed: 6198, global_batch_size: 1024 },
  instance_filter: { repetition_max_count: 32, repetition_max_period: 13, repetition_min_period: 1 },
  model: { preset: 'olmo2-7b' },
  pretrain+: {
    max_steps: pretrain_steps,
    schedule: {
      kind: 'cosine', peak_lr: 3e-4, warmup_steps: 2000, warmup_start_fraction: 0.0,
      total_steps: schedule_steps, final_lr_fraction: 0.1,
    },
    optimizer: { betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, decay_embeddings: false, decay_norms: true },
    z_loss_multiplier: 1e-5,
  },
  anneal+: {
    start_lr: null,  // where stage 1 stopped
    max_steps: std.ceil(50e9 / tokens_per_step),  // 11,921
    optimizer: { betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, decay_embeddings: false, decay_norms: true },
    z_loss_multiplier: 1e-5,
  },
  sft+: { max_length: 4096, template: 'olmo' },
  dpo+: { max_length: 4096, template: 'olmo' },
} }
