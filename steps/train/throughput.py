"""Hardware figures for the training log: peak bf16 FLOPs per device, MFU, and memory use."""
from __future__ import annotations

import resource
import sys

import torch

# Dense (no sparsity) bf16 tensor-core peak per device as PyTorch numbers devices, matched against
# ``torch.cuda.get_device_name`` in this order (more specific names first). On ROCm each MI250X GCD
# is its own device, so it gets half the card's 383e12; ROCm names both the MI250X and the MI250
# "AMD Instinct MI250X / MI250", which therefore reads as an MI250X.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835.5e12),
    ("H100", 989.5e12),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200 NVL", 835.5e12),
    ("H200", 989.5e12),
    ("A100", 312e12),
    ("MI250X", 191.5e12),
    ("MI300X", 1307.4e12),
)

GIB = 2**30
MAX_ALLOCATED_KEY = "max_memory_allocated_gib"
MAX_RESERVED_KEY = "max_memory_reserved_gib"
PEAK_RSS_KEY = "peak_rss_gib"


def peak_flops_for_name(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of the accelerator called ``device_name``; None when not in the table."""
    for pattern, peak in PEAK_BF16_FLOPS:
        if pattern in device_name:
            return peak
    return None


def peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of ``device`` (CUDA or ROCm); None on CPU or an accelerator not in the table."""
    if device.type != "cuda":
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


def model_flops_utilization(
    tokens_per_second: float, flops_per_token: float, world_size: int, peak_flops_per_device: float
) -> float:
    """MFU as a fraction: model FLOP/s per device over its peak.

    ``tokens_per_second`` is the rate of the whole run (all ``world_size`` devices together) and
    ``flops_per_token`` the training FLOPs per token (``olmo_model.flops.flops_per_token``).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size <= 0:
        raise ValueError(f"world_size: expected a positive integer, got {world_size!r}")
    if not peak_flops_per_device > 0:
        raise ValueError(f"peak_flops_per_device: expected a positive number, got {peak_flops_per_device!r}")
    return tokens_per_second * flops_per_token / world_size / peak_flops_per_device


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak memory of this process, in GiB.

    On CUDA/ROCm: the most memory allocated to tensors and reserved by the caching allocator since the
    last call (``max_memory_allocated_gib``, ``max_memory_reserved_gib``); the peaks are then reset.
    Elsewhere: the process's peak resident set size since it started (``peak_rss_gib``).
    """
    if device.type == "cuda":
        metrics = {
            MAX_ALLOCATED_KEY: torch.cuda.max_memory_allocated(device) / GIB,
            MAX_RESERVED_KEY: torch.cuda.max_memory_reserved(device) / GIB,
        }
        torch.cuda.reset_peak_memory_stats(device)
        return metrics
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return {PEAK_RSS_KEY: max_rss / GIB * (1 if sys.platform == "darwin" else 1024)}
