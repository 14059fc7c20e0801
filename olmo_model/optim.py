"""AdamW with OLMo's weight-decay split: decay every Linear weight; the embedding and norm weights by choice.

OLMo v1 (and the default here) decays the Linear weights only: never the embedding (so, tied, never the output
matrix), and it has no norm weights. OLMo 2 (OLMo-core's recipes: one AdamW group for every parameter and an
override ``embeddings.weight: weight_decay 0``) decays everything but the embedding, its RMSNorm weights
included: ``decay_norms=True``. ``decay_embeddings=True`` decays the embedding too (OLMo-core without that
override).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .model import LayerNorm, RMSNorm


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_embeddings: bool = False, decay_norms: bool = False
) -> list[dict[str, Any]]:
    """Two optimizer groups: the decayed parameters with ``weight_decay``, the others without.

    Linear weights are decayed; embedding weights when ``decay_embeddings`` (in a tied model the output matrix is
    the embedding, so it follows the embedding); norm weights when ``decay_norms``. Any other parameter is never
    decayed. Groups carry ``param_names`` (torch's optimizer keeps them in its state dict); empty groups are left
    out.
    """
    norms = (RMSNorm, LayerNorm, nn.LayerNorm, nn.RMSNorm)
    kinds = [(nn.Linear, True), (nn.Embedding, decay_embeddings), (norms, decay_norms)]
    decayed = {
        id(module.weight)
        for module in model.modules()
        for kind, decay in kinds
        if decay and isinstance(module, kind) and isinstance(getattr(module, "weight", None), nn.Parameter)
    }
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        (decay if id(param) in decayed else no_decay).append((name, param))
    groups = [(decay, weight_decay), (no_decay, 0.0)]
    return [
        {
            "params": [param for _, param in members],
            "param_names": [name for name, _ in members],
            "weight_decay": decay_value,
        }
        for members, decay_value in groups
        if members
    ]


def build_adamw(
    model: nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-5,
    weight_decay: float = 0.1,
    fused: bool = True,
    decay_embeddings: bool = False,
    decay_norms: bool = False,
) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups(model, weight_decay, decay_embeddings, decay_norms)`` (OLMo v1 defaults).

    ``fused`` uses torch's fused AdamW kernel (one pass over each tensor, no temporaries; CPU, CUDA and
    ROCm, DTensor parameters included); without it, torch picks its multi-tensor or per-tensor loop.
    """
    groups = parameter_groups(model, weight_decay, decay_embeddings=decay_embeddings, decay_norms=decay_norms)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
