// A released OLMo checkpoint adapted as OLMo's authors adapt theirs: import it, fine-tune it (SFT, then DPO against
// cached reference log-probs), evaluate it before and after each stage as olmo-tiny's models are (same tasks,
// prompts, held-out documents), export the result, and report it beside the paper's numbers:
//
//   tango run workflows/adapt-hf.jsonnet -D model_dir=/path/to/OLMo-1B-hf
//   tango run workflows/adapt-hf.jsonnet -D model_dir=... -D sft_data=tulu.jsonl -D preference_data=uf.jsonl
//
// `model_dir`: an HF OlmoForCausalLM directory with safetensors weights and its tokenizer (a path or fsspec URL).
// The other `-D` settings are optional: tango.yml's `environment` gives them their defaults (empty, 'false').
// `sft_data` / `preference_data`: open-instruct-format files, URLs or datasets-hub names (README, "Fine-tune a
// released OLMo"); without them, the olmo-tiny corpus' "continue the text" data (offline). `-D anneal=true`
// anneals the checkpoint first on olmo-tiny's instances (with `anneal.start_lr`, 2.3e-5 unless overridden: an
// imported model has no LR to continue from). The settings are olmo-tiny's `sft`, `dpo` and `evaluation` params;
// override them with `params+::` in a workflow that imports this one.
local tiny = import 'olmo-tiny.jsonnet';
local lib = import 'lib/olmo.libsonnet';
local ref = lib.ref;

local modelDir = std.extVar('model_dir');
local sftFiles = std.extVar('sft_data');
local preferenceFiles = std.extVar('preference_data');
local anneal = std.extVar('anneal') == 'true';

tiny {
  local p = self.params,
  local base = super.steps,
  local x = lib.execution(p),
  local start = if anneal then 'anneal' else 'imported',
  local withModelTokenizer(step) = step { tokenizer: ref('imported') },
  // The corpus steps (for the held-out documents and the default data) come from olmo-tiny, mostly cached.
  local corpus = [name for name in std.objectFields(base) if std.startsWith(name, 'source_')]
                 + ['tag', 'filter', 'dedup', 'mix'] + [name for name in std.objectFields(base) if std.startsWith(name, 'text_set_')],

  params+:: { name: 'adapt-hf', anneal+: { start_lr: 2.3e-5 } },
  steps: { [name]: base[name] for name in corpus } + {
    imported: { type: 'import_hf', checkpoint: { path: modelDir } },
    evaluate_imported: withModelTokenizer(base.evaluate_base { model: ref('imported') }),
    sft_data: if sftFiles == '' then base.sft_data else { type: 'sft_data_files', config: { files: sftFiles } },
    preference_data:
      if preferenceFiles == '' then base.preference_data
      else { type: 'preference_data_files', config: { files: preferenceFiles } },
    sft: withModelTokenizer(base.sft { pretrained: ref(start) }),
    evaluate_sft: withModelTokenizer(base.evaluate_sft),
    dpo: withModelTokenizer(base.dpo),
    evaluate_dpo: withModelTokenizer(base.evaluate_dpo),
    export: withModelTokenizer(base.export),
    report: base.report {
      corpus: { [name]: ref(name) for name in ['tag', 'filter', 'dedup', 'mix'] },
      training: { sft: ref('sft'), dpo: ref('dpo') } + (if anneal then { anneal: ref('anneal') } else {}),
      evaluations: { imported: ref('evaluate_imported'), sft: ref('evaluate_sft'), dpo: ref('evaluate_dpo') }
                   + (if anneal then { anneal: ref('evaluate_anneal') } else {}),
      training_batch: null,
    },
  } + (if lib.needsReference(p.dpo) then { reference_logprobs: withModelTokenizer(base.reference_logprobs) } else {})
  + (if anneal then {
    [name]: base[name] for name in ['tokenizer', 'tokenize', 'instances']
  } + {
    anneal: base.anneal { pretrained: ref('imported') },
    evaluate_anneal: withModelTokenizer(base.evaluate_anneal),
  } else {}),
}
