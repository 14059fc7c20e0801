"""AdamW with OLMo's weight-decay split: decay every Linear weight, never the embedding."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: Linear weights with ``weight_decay``, all other parameters without.

    In a tied model the output matrix is the embedding, so it is not decayed either. Groups carry
    ``param_names`` (torch's optimizer keeps them in its state dict); empty groups are left out.
    """
    linear_weights = {
        id(module.weight) for module in model.modules() if isinstance(module, nn.Linear)
    }
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        (decay if id(param) in linear_weights else no_decay).append((name, param))
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
) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups(model, weight_decay)`` (OLMo v1 defaults).

    ``fused`` uses torch's fused AdamW kernel (one pass over each tensor, no temporaries; CPU, CUDA and
    ROCm, DTensor parameters included); without it, torch picks its multi-tensor or per-tensor loop.
    """
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)
