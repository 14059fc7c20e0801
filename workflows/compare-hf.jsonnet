// olmo-tiny with any Hugging Face `transformers` causal LM directory evaluated the same way (same tasks,
// prompts, held-out documents and text sets) and set beside olmo-tiny's models in the report:
//
//   tango run workflows/compare-hf.jsonnet -D model_dir=/path/to/model   (a local folder or fsspec URL)
//
// olmo-tiny's steps come from the cache; only `evaluate_hf` and the report run.
local tiny = import 'olmo-tiny.jsonnet';
local lib = import 'lib/olmo.libsonnet';
local ref = lib.ref;

tiny {
  local p = self.params,  // olmo-tiny's params, with any `params+::` override of this workflow
  steps+: {
    evaluate_hf: {
      type: 'evaluate_hf',
      model_dir: std.extVar('model_dir'),
      heldout: ref('mix'),
      config: p.evaluation,
      paloma: { [name]: ref('text_set_' + name) for name in std.objectFields(p.text_sets) },
      execution: lib.execution(p),  // as olmo-tiny's own evaluate steps get it
    },
    report+: { evaluations+: { hf: ref('evaluate_hf') } },
  },
}
