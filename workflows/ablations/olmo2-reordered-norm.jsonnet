// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): the norm on the outputs of attention and MLP inside the residual (x + norm(attn(x))) instead of on their inputs.
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { model+: { block: 'reordered_norm' } },
}
