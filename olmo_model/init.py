"""Initialisation: every weight matrix truncated normal at ±3σ, with the σ of OLMo v1's "mitchell" scheme or
OLMo 2's "normal" one; norm weights (RMSNorm) start at one."""

from __future__ import annotations

import math

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from .config import OlmoConfig

TRUNCATION = 3.0  # in standard deviations
NORMAL_STD = 0.02  # OLMo-core's TransformerConfig.init_std, which OLMo 2 used


def init_stds(config: OlmoConfig) -> dict[str, float]:
    """σ of every weight matrix of ``Olmo(config)`` (norm weights excluded), keyed by its name, in
    initialisation order, for ``config.init``."""
    if config.init == "normal":
        return normal_stds(config)
    return mitchell_stds(config)


def mitchell_stds(config: OlmoConfig) -> dict[str, float]:
    """σ for every parameter, keyed by its name in ``Olmo``, in initialisation order.

    Embedding, ``att_proj``, ``ff_proj`` and an untied output matrix: 1/√d_model.
    ``attn_out`` of layer i: (1/√d_model)/√(2(i+1)); ``ff_out``: (1/√mlp_hidden_size)/√(2(i+1)).
    """
    base = 1.0 / math.sqrt(config.d_model)
    hidden_base = 1.0 / math.sqrt(config.mlp_hidden_size)
    stds = {"transformer.wte.weight": base}
    for i in range(config.n_layers):
        depth = math.sqrt(2 * (i + 1))
        prefix = f"transformer.blocks.{i}"
        stds[f"{prefix}.att_proj.weight"] = base
        stds[f"{prefix}.attn_out.weight"] = base / depth
        stds[f"{prefix}.ff_proj.weight"] = base
        stds[f"{prefix}.ff_out.weight"] = hidden_base / depth
    if not config.weight_tying:
        stds["transformer.ff_out.weight"] = base
    return stds


def normal_stds(config: OlmoConfig) -> dict[str, float]:
    """σ = 0.02 for every matrix: OLMo-core's ``InitMethod.normal`` (``olmo_core/nn/transformer/init.py``), the
    init of OLMo 2 (``TransformerConfig.init_method`` defaults to it, ``init_std`` to 0.02). There the embedding
    (``init_embeddings``), q/k/v and attention out (``Attention.init_weights``: no depth scaling for
    ``normal``), w1/w2/w3 of the feed-forward (``init_feed_forward``) and an untied output matrix
    (``init_final_w_out``) are each ``trunc_normal_(std=0.02, a=-3·0.02, b=3·0.02)``; norm weights are left at
    their ``reset_parameters`` value, one. Our fused ``att_proj`` (q, k, v) and ``ff_proj`` (up, gate) are drawn
    whole, each row from the same distribution as OLMo-core's separate matrices.
    """
    stds = {"transformer.wte.weight": NORMAL_STD}
    for i in range(config.n_layers):
        prefix = f"transformer.blocks.{i}"
        for name in ("att_proj", "attn_out", "ff_proj", "ff_out"):
            stds[f"{prefix}.{name}.weight"] = NORMAL_STD
    if not config.weight_tying:
        stds["transformer.ff_out.weight"] = NORMAL_STD
    return stds


@torch.no_grad()
def fill_truncated_normal_(
    param: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> None:
    """Fill ``param`` with N(0, σ²) truncated at ±3σ.

    The full tensor is drawn in fp32 on the CPU (from ``generator``, or the default CPU generator)
    and then copied, so a seed gives the same weights on every device type; a sharded ``DTensor``
    (FSDP2) keeps its own shard of that full tensor, so the weights do not depend on the world
    size either (every rank draws the same values; no communication).
    """
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"expected a CPU torch.Generator, got one on {generator.device}")
    values = torch.empty(param.shape, dtype=torch.float32)
    bound = TRUNCATION * std
    torch.nn.init.trunc_normal_(values, mean=0.0, std=std, a=-bound, b=bound, generator=generator)
    if isinstance(param, DTensor):
        values = distribute_tensor(
            values.to(param.device), param.device_mesh, param.placements, src_data_rank=None
        )
    param.copy_(values)
