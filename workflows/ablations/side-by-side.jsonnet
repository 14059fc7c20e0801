// olmo-tiny and its four ablations in one graph: the report sets their training and evaluation numbers
// side by side, each beside olmo-tiny's. Steps an ablation does not change are computed once.
local variants = import '../lib/variants.libsonnet';

variants.sideBySide(import '../olmo-tiny.jsonnet', 'olmo-tiny', {
  'cosine-schedule': import 'cosine-schedule.jsonnet',
  'no-paragraph-dedup': import 'no-paragraph-dedup.jsonnet',
  'own-tokenizer': import 'own-tokenizer.jsonnet',
  'relaxed-gopher': import 'relaxed-gopher.jsonnet',
})
