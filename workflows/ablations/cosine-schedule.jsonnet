// Ablation: olmo-tiny pretrained with a cosine LR schedule instead of linear decay (the OLMo-1B
// config's choice). The whole corpus and data path comes from the cache; pretrain and
// everything after it is recomputed.
(import '../olmo-tiny.jsonnet') + {
  params+:: { pretrain+: { schedule+: { kind: 'cosine' } } },
}
