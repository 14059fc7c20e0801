// Ablation: olmo-tiny without Dolma's paragraph-level dedup (URL and exact-text dedup stay).
// Only `dedup` and the steps downstream of it are recomputed; sources, filter and the
// tokenizer come from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { dedup+: { paragraph: false } },
}
