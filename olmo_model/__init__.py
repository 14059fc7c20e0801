"""OLMo v1 in plain PyTorch: config and presets, model, init, optimizer groups, LR schedules."""

from .config import OlmoConfig
from .model import Olmo
from .optim import build_adamw, parameter_groups
from .schedule import LRSchedule

__all__ = ["LRSchedule", "Olmo", "OlmoConfig", "build_adamw", "parameter_groups"]
