"""OLMo v1 in plain PyTorch: config and presets, model, init, optimizer groups, LR schedules.

The model, optimizer and schedule (and so torch) load on first use: the corpus stages' workers import only the
config helpers of :mod:`olmo_model.config`, and a process does not pay torch's import for them.
"""
from importlib import import_module
from typing import Any

from .config import OlmoConfig

_LAZY = {"Olmo": ".model", "build_adamw": ".optim", "parameter_groups": ".optim", "LRSchedule": ".schedule"}

__all__ = ["LRSchedule", "Olmo", "OlmoConfig", "build_adamw", "parameter_groups"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
