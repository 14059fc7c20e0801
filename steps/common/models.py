"""Model artifacts: where a trained model lives inside a step's artifact, and loading it."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from olmo_model import Olmo, OlmoConfig
from steps.common.artifacts import Artifact
from steps.train.checkpoint import CONFIG_FILE, load_model

MODEL_DIR = "model"


def model_dir(artifact: Artifact) -> Path:
    """The safetensors + config.json directory of a pretrain/anneal/sft/dpo artifact."""
    return artifact.path / MODEL_DIR


def artifact_model_config(artifact: Artifact) -> OlmoConfig:
    """The config of the model a training artifact holds."""
    return OlmoConfig.from_dict(json.loads((model_dir(artifact) / CONFIG_FILE).read_text()))


def load_artifact_model(artifact: Artifact, device: torch.device) -> Olmo:
    return load_model(model_dir(artifact), device=device)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks the GPU when there is one (CUDA or ROCm builds alike), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
