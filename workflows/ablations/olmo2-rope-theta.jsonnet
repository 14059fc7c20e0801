// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): RoPE θ 500,000 instead of 10,000.
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { model+: { rope_theta: 500000 } },
}
