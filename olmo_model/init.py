"""The "mitchell" initialisation of OLMo v1: every weight truncated normal at ±3σ."""

from __future__ import annotations

import math

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from .config import OlmoConfig

TRUNCATION = 3.0  # in standard deviations


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
