// Ablation: olmo-tiny with one change of OLMo 2 (arXiv 2501.00656): z-loss 1e-5 (logged beside the loss as z_loss).
// Everything before what it changes comes from the cache.
(import '../olmo-tiny.jsonnet') + {
  params+:: { pretrain+: { z_loss_multiplier: 1e-5 }, anneal+: { z_loss_multiplier: 1e-5 } },
}
