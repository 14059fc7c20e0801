// Builds the whole OLMo DAG from one params object. A recipe (olmo-tiny, olmo1b, olmo7b) is
// `recipe(params)`: its steps are built from its own (hidden) `params` field, so a change of params reaches
// every step that reads them:
//
//   (import 'olmo-tiny.jsonnet') + { params+:: { seq_len: 32, pretrain+: { max_steps: 50 } } }
//
// Ablations import a recipe and override its params (or one step by name: `steps+: { dedup+: ... }`).
// Every key of the params is checked against `paramKeys` (and of `execution` by the steps, in Python): a typo
// fails when the workflow is loaded, naming the key, before anything runs.
//
//   sources -> tag -> filter -> dedup -> mix -> tokenize -> instances -> pretrain -> anneal -> evaluate_anneal
//                                                       |                  |     `-> evaluate_base   `-> sft -> evaluate_sft -> dpo -> evaluate_dpo -> export
//                                                       `-> training_batch                           report <- everything
//   text_set_<name> (held-out text unrelated to the corpus) -> every evaluate
local ref(name) = { type: 'ref', ref: name };
local sourceStep(source) = 'source_' + std.strReplace(source.name, '-', '_');
local quoted(keys) = '[' + std.join(', ', ["'" + k + "'" for k in keys]) + ']';

// `object`, or an error naming the keys of `object` (at `where`) that are not in `known`.
local checkKeys(object, known, where) =
  local unknown = [k for k in std.objectFields(object) if !std.member(known, k)];
  if std.length(unknown) > 0 then
    error where + ': unknown key(s) ' + quoted(unknown) + '; expected some of ' + quoted(std.sort(known))
  else object;

{
  ref:: ref,

  // The reference log-probs DPO trains against, as a step of their own (computed once, on one device): a β or
  // loss-type ablation reuses them. None for the reference-free loss "simpo".
  needsReference(dpo):: !(std.objectHas(dpo, 'loss_type') && dpo.loss_type == 'simpo'),
  referenceConfig(dpo):: {
    max_length: dpo.max_length,
    precision: if std.objectHas(dpo, 'precision') then dpo.precision else 'fp32',
    batch_size: dpo.micro_batch_size,
  } + (if std.objectHas(dpo, 'template') then { template: dpo.template } else {}),

  // The params a recipe may set (every one is read by `workflow`; the last five may be left out).
  paramKeys:: [
    'name', 'sources', 'source_shard_bytes', 'tag', 'filter', 'dedup', 'mix', 'tokenizer', 'seq_len', 'data_order',
    'inspect_batch', 'model', 'pretrain', 'anneal', 'sft_data', 'sft', 'preference_data', 'dpo', 'evaluation',
    'execution', 'text_sets', 'paloma', 'in_loop_eval', 'instance_filter',
  ],

  // A recipe: its params (hidden, overridable with `params+::`) and the steps `workflow` builds from them.
  recipe(params):: {
    local lib = $,
    params:: params,
    steps: lib.workflow(self.params).steps,
  },

  // The recipe's `execution` block (settings that change where and how fast things run, never what they
  // compute) as every step that runs work receives it, whole: steps/common/execution.py declares its keys and
  // defaults and checks them when the workflow is loaded. `wandb: { project: ... }` (and `entity`, `mode`) logs
  // every training and evaluate step to Weights & Biases: one run per step, named `<name>/<step>` after the
  // recipe's `name` (added here as `wandb.workflow`), grouped by it, with the step's fingerprint as its id.
  execution(params)::
    local x = if std.objectHas(params, 'execution') then params.execution else {};
    x + (if std.objectHas(x, 'wandb') && x.wandb != null then { wandb: { workflow: params.name } + x.wandb } else {}),

  // A BPE tokenizer trained on the mixed corpus (it stands in for the `tokenizer` step), and the token
  // ids the model then needs: steps/data/bpe.py rounds the vocabulary up to a multiple of 128 and puts
  // pad at 1 and EOS last.
  trainedTokenizer(vocab_size, min_frequency=2, max_documents=null):: {
    local size = std.ceil(vocab_size / 128) * 128,
    step: {
      type: 'train_tokenizer',
      documents: ref('mix'),
      vocab_size: vocab_size,
      min_frequency: min_frequency,
      max_documents: max_documents,
    },
    model: { vocab_size: size, eos_token_id: size - 1, pad_token_id: 1 },
  },

  workflow(params):: {
    local name = if std.objectHas(params, 'name') then "recipe '" + params.name + "'" else 'recipe',
    local p = checkKeys(params, $.paramKeys, name + ' params'),
    local x = $.execution(p),
    local textSets = if std.objectHas(p, 'text_sets') then p.text_sets else {},
    // Paloma-format sets every evaluate scores: the text sets made here, and any given by path or URL.
    local paloma = { [name]: ref('text_set_' + name) for name in std.objectFields(textSets) }
                   + (if std.objectHas(p, 'paloma') then p.paloma else {}),
    local sources = [sourceStep(s) for s in p.sources],
    // The in-loop evaluation of `p.in_loop_eval[stage]` (if any), on the held-out documents of the mix.
    local inLoopEval(stage) =
      if std.objectHas(p, 'in_loop_eval') then { in_loop_eval: p.in_loop_eval[stage], heldout: ref('mix') } else {},
    local evaluate(model) = {
      type: 'evaluate',
      model: ref(model),
      tokenizer: ref('tokenizer'),
      heldout: ref('mix'),
      config: p.evaluation,
      execution: x,
    } + (if std.length(paloma) > 0 then { paloma: paloma } else {}),

    steps: {
      [sourceStep(s)]: {
        type: 'corpus_source',
        source: s,
        max_shard_bytes: p.source_shard_bytes,
        execution: x,
      }
      for s in p.sources
    } + {
      // Tagging computes attributes; filtering applies thresholds to them, so changing a threshold
      // re-runs only `filter` and what follows it.
      tag: {
        type: 'tag_documents',
        sources: [ref(s) for s in sources],
        config: p.tag,
        execution: x,
      },
      filter: {
        type: 'filter_documents',
        sources: [ref(s) for s in sources],
        attributes: ref('tag'),
        config: p.filter,
        execution: x,
      },
      dedup: { type: 'deduplicate_documents', documents: ref('filter'), config: p.dedup, execution: x },
      mix: { type: 'mix_sources', documents: ref('dedup'), config: p.mix, execution: x },
      tokenizer: { type: 'tokenizer', tokenizer: p.tokenizer },
      tokenize: {
        type: 'tokenize_documents',
        documents: ref('mix'),
        tokenizer: ref('tokenizer'),
        execution: x,
      },
      // `instance_filter` (OLMo 2): instances with a repeated n-gram run are kept in the order, their loss masked.
      instances: { type: 'build_instances', tokens: ref('tokenize'), seq_len: p.seq_len }
                 + (if std.objectHas(p, 'instance_filter') then { instance_filter: p.instance_filter } else {}),
      training_batch: {
        type: 'training_batch',
        instances: ref('instances'),
        data_order: p.data_order,
        step: p.inspect_batch,
        micro_batch_size: p.pretrain.micro_batch_size,
      },
      pretrain: {
        type: 'pretrain',
        instances: ref('instances'),
        model: p.model,
        data_order: p.data_order,
        train: p.pretrain,
        execution: x,
      } + inLoopEval('pretrain'),
      anneal: {
        type: 'anneal',
        pretrained: ref('pretrain'),
        instances: ref('instances'),
        data_order: p.data_order,
        train: p.anneal,
        execution: x,
      } + inLoopEval('anneal'),
      evaluate_base: evaluate('pretrain'),
      evaluate_anneal: evaluate('anneal'),
      sft_data: { type: 'sft_data', documents: ref('mix'), config: p.sft_data },
      sft: {
        type: 'sft',
        pretrained: ref('anneal'),
        data: ref('sft_data'),
        tokenizer: ref('tokenizer'),
        train: p.sft,
        execution: x,
      },
      evaluate_sft: evaluate('sft'),
      preference_data: { type: 'preference_data', documents: ref('mix'), config: p.preference_data },
      [if $.needsReference(p.dpo) then 'reference_logprobs']: {
        type: 'reference_logprobs',
        model: ref('sft'),
        data: ref('preference_data'),
        tokenizer: ref('tokenizer'),
        config: $.referenceConfig(p.dpo),
        execution: x,
      },
      dpo: {
        type: 'dpo',
        pretrained: ref('sft'),
        data: ref('preference_data'),
        tokenizer: ref('tokenizer'),
        train: p.dpo,
        execution: x,
      } + (if $.needsReference(p.dpo) then { reference: ref('reference_logprobs') } else {}),
      evaluate_dpo: evaluate('dpo'),
      export: { type: 'export_hf', model: ref('dpo'), tokenizer: ref('tokenizer') },
    } + {
      // Unrelated held-out text (`p.text_sets`), made from the bundled evaluation data.
      ['text_set_' + name]: { type: 'task_text_set', name: name, config: p.text_sets[name] }
      for name in std.objectFields(textSets)
    } + {
      report: {
        type: 'report',
        title: p.name,
        corpus: { [s]: ref(s) for s in sources } + {
          tag: ref('tag'),
          filter: ref('filter'),
          dedup: ref('dedup'),
          mix: ref('mix'),
          tokenize: ref('tokenize'),
          instances: ref('instances'),
        },
        training: { pretrain: ref('pretrain'), anneal: ref('anneal'), sft: ref('sft'), dpo: ref('dpo') },
        evaluations: {
          base: ref('evaluate_base'), anneal: ref('evaluate_anneal'), sft: ref('evaluate_sft'), dpo: ref('evaluate_dpo'),
        },
        training_batch: ref('training_batch'),
        export: ref('export'),
      },
    },
  },
}
