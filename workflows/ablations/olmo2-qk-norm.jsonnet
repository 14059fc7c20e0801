// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): a norm on the query and key projections before RoPE.
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { model+: { qk_norm: true } },
}
