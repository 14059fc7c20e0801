// OLMo 2 1B: olmo2-7b's recipe (OLMo 2's architecture, stabilizers, tokenizer, data order and schedule) with the
// olmo2-1b model (allenai/OLMo-2-0425-1B's shape: 16 layers, d_model 2048, 16 heads, SwiGLU 8192, untied;
// 1,484,916,736 parameters). OLMo-2-0425-1B's own training script is not among OLMo-core's official scripts, so
// the optimizer and schedule here are the 7B's, with a micro-batch of 4 (a rank's whole share of a 1024-instance
// batch on olmo7b's 256 GPUs).
(import 'olmo2-7b.jsonnet') + { params+:: {
  name: 'olmo2-1b',
  model: { preset: 'olmo2-1b' },
  pretrain+: { micro_batch_size: 4 },
  anneal+: { micro_batch_size: 4 },
} }
