// olmo-tiny with any Hugging Face `transformers` causal LM directory evaluated the same way (same tasks,
// prompts, held-out documents and text sets) and set beside olmo-tiny's models in the report:
//
//   tango run workflows/compare-hf.jsonnet -D model_dir=/path/to/model   (a local folder or fsspec URL)
//
// olmo-tiny's steps come from the cache; only `evaluate_hf` and the report run.
local tiny = import 'olmo-tiny.jsonnet';
local ref(name) = { type: 'ref', ref: name };

tiny {
  local p = self.params,  // olmo-tiny's params, with any `params+::` override of this workflow
  steps+: {
    evaluate_hf: {
      type: 'evaluate_hf',
      model_dir: std.extVar('model_dir'),
      heldout: ref('mix'),
      config: p.evaluation,
      paloma: { [name]: ref('text_set_' + name) for name in std.objectFields(p.text_sets) },
      device: p.execution.device,
      // W&B as the lib sets it for olmo-tiny's own evaluate steps (`execution.wandb`).
      wandb: if std.objectHas(p.execution, 'wandb') && p.execution.wandb != null
             then { workflow: p.name } + p.execution.wandb else null,
    },
    report+: { evaluations+: { hf: ref('evaluate_hf') } },
  },
}
