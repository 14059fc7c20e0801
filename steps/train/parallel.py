"""How a training worker joins its job and shards OLMo with FSDP2 (``fully_shard`` per transformer block).

The same code runs on NVIDIA (CUDA/NCCL) and AMD (ROCm/RCCL, which PyTorch exposes as "cuda"/"nccl")
builds of PyTorch, and on CPUs with gloo.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._composable import checkpoint as checkpoint_activations
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from olmo_model import Olmo
from steps.common.execution import SHARDING


logger = logging.getLogger(__name__)


def worker_device(name: str) -> torch.device:
    """This worker's device: ``"auto"`` is the GPU of ``LOCAL_RANK`` when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def join_process_group(device: torch.device) -> None:
    """Join the launcher's process group: NCCL (RCCL on ROCm) for GPUs, gloo for the CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def effective_precision(precision: str, device: torch.device) -> str:
    """bf16 runs on accelerators; on a CPU, whose bf16 matrix products are ~100x slower, training is fp32."""
    if precision == "bf16" and device.type == "cpu":
        logger.warning("precision bf16 requested on a CPU: training in fp32 (CPU bf16 matmuls are far slower)")
        return "fp32"
    return precision


def data_parallel_mesh(device: torch.device, sharding: str, nnodes: int) -> DeviceMesh:
    """A 1-D mesh for full sharding, else a (replicate, shard) mesh: one shard group per node for
    ``hybrid``, shard groups of one rank (pure replication) for ``none``."""
    if sharding not in SHARDING:
        raise ValueError(f"sharding: expected one of {SHARDING}, got {sharding!r}")
    world = dist.get_world_size()
    if sharding == "full":
        return init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
    replicas = nnodes if sharding == "hybrid" else world
    if world % replicas:
        raise ValueError(f"sharding 'hybrid': world size {world} is not a multiple of nnodes {nnodes}")
    return init_device_mesh(device.type, (replicas, world // replicas), mesh_dim_names=("replicate", "shard"))


def shard_model(
    model: Olmo,
    mesh: DeviceMesh,
    precision: str,
    activation_checkpointing: bool = False,
    compile_blocks: bool = False,
) -> None:
    """FSDP2 in place: each block its own unit, then the root (embedding, output matrix).

    bf16 keeps fp32 sharded master weights and reduces gradients in fp32; blocks may recompute their
    activations in the backward pass and be compiled with ``torch.compile``.
    """
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for block in model.transformer.blocks:
        if activation_checkpointing:
            checkpoint_activations(block)  # composable: parameter names are unchanged
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def reshard(model: nn.Module) -> None:
    """Free the gathered parameters FSDP2 keeps after a forward outside training (a no-op without FSDP2)."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
