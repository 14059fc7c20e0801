// olmo-tiny (OLMo 1's architecture and training) beside each OLMo 2 change alone, in one graph and one report:
// RMSNorm, reordered norm, QK-norm, RoPE θ 500,000, the N(0, 0.02) init, z-loss and the repeated n-gram instance
// filter. Steps a change does not touch are computed once (the corpus for all; the instances for all but the
// filter). OLMo 2's other change, no weight decay on embeddings, is already olmo-tiny's (and every v1 recipe's).
local variants = import '../lib/variants.libsonnet';

variants.sideBySide(import '../olmo-tiny.jsonnet', 'olmo-tiny', {
  rmsnorm: import 'olmo2-rmsnorm.jsonnet',
  'reordered-norm': import 'olmo2-reordered-norm.jsonnet',
  'qk-norm': import 'olmo2-qk-norm.jsonnet',
  'rope-theta': import 'olmo2-rope-theta.jsonnet',
  'normal-init': import 'olmo2-normal-init.jsonnet',
  'z-loss': import 'olmo2-z-loss.jsonnet',
  'instance-filter': import 'olmo2-instance-filter.jsonnet',
})
