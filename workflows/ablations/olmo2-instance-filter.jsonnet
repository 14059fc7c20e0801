// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): the repeated n-gram instance filter: an instance with a block of 1..13 tokens repeated 32 times in a row keeps its place, its loss masked.
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { instance_filter: { repetition_max_count: 32, repetition_max_period: 13, repetition_min_period: 1 } },
}
