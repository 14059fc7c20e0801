// Variants of a recipe side by side: a baseline workflow and variants of it (ablations) in one graph,
// whose report adds a table of every variant's training and evaluation numbers beside the baseline's.
// The baseline's steps keep their names; a variant's steps are renamed `<variant>_<step>` ('-' read as
// '_'), their refs to each other renamed alike. A variant's step that equals the baseline's has the
// baseline's fingerprint, so Tango computes it once: each variant costs only what it changes.
local isRef(value) = std.isObject(value) && std.objectHas(value, 'type') && value.type == 'ref';

// `value` with every ref to one of `names` pointing at `prefix + name`.
local renamed(value, prefix, names) =
  if std.isArray(value) then [renamed(v, prefix, names) for v in value]
  else if isRef(value) && std.member(names, value.ref) then value { ref: prefix + value.ref }
  else if std.isObject(value) then { [k]: renamed(value[k], prefix, names) for k in std.objectFields(value) }
  else value;

local prefix(variant) = std.strReplace(variant, '-', '_') + '_';

// A variant in the report's `variants` input: the training and evaluation steps `workflow`'s report reads.
local compared(workflow, prefix) = {
  local report = workflow.steps.report,
  local names = std.objectFields(workflow.steps),
  training: renamed(report.training, prefix, names),
  evaluations: renamed(report.evaluations, prefix, names),
};

{
  // A variant's steps left out of the graph: nothing the side-by-side table reads depends on them.
  uncompared:: ['report', 'export', 'training_batch'],

  // `baseline` (a workflow, its report's column named `name`) and `variants` ({name: workflow}) in one graph.
  sideBySide(baseline, name, variants)::
    baseline + {
      steps+: {
        [prefix(v) + step]: renamed(variants[v].steps[step], prefix(v), std.objectFields(variants[v].steps))
        for v in std.objectFields(variants)
        for step in std.objectFields(variants[v].steps)
        if !std.member($.uncompared, step)
      },
    } + {
      steps+: {
        report+: {
          title: name + ' and its variants',
          variants: { [name]: compared(baseline, '') } + { [v]: compared(variants[v], prefix(v)) for v in std.objectFields(variants) },
          baseline: name,
        },
      },
    },
}
