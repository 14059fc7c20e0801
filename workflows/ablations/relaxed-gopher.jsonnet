// Ablation: olmo-tiny with Gopher's repetition rules relaxed (duplicate 5..10-gram fractions
// doubled), a common question about Dolma's quality filter. Thresholds live in the filter step
// alone, so tagging comes from the cache: only `filter` and the steps after it are recomputed.
(import '../olmo-tiny.jsonnet') + {
  params+:: { filter+: { gopher+: {
    max_dup_5_gram_char_fraction: 0.30,
    max_dup_6_gram_char_fraction: 0.28,
    max_dup_7_gram_char_fraction: 0.26,
    max_dup_8_gram_char_fraction: 0.24,
    max_dup_9_gram_char_fraction: 0.22,
    max_dup_10_gram_char_fraction: 0.20,
  } } },
}
