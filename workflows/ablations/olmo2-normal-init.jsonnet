// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): every matrix drawn from N(0, 0.02) truncated at 3σ instead of OLMo 1's mitchell init.
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { model+: { init: 'normal' } },
}
