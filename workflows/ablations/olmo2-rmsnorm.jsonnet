// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): RMSNorm (with a learned weight) instead of OLMo 1's non-parametric LayerNorm.
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { model+: { norm: 'rmsnorm' } },
}
