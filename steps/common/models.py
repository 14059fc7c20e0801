"""Model directories in safetensors + JSON (never pickle): writing and loading them, and where a trained model
lives inside a step's artifact.

A *model directory* (``save_model``) holds ``model.safetensors`` (tied weights stored once),
``config.json`` (``OlmoConfig.to_dict()``) and ``train_state.json``. It is written atomically and carries
``checksums.sha256``, which loading verifies (``steps.common.checksums``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from olmo_model import Olmo, OlmoConfig
from steps.common.artifacts import TOKENIZER_DIR, Artifact
from steps.common.checksums import CheckpointError, atomic_directory, read_json, verify_checksums, write_json

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.json"
MODEL_DIR = "model"


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        safetensors.torch.load_model(model, path, strict=True, device=str(_model_device(model)))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit the model ({exc})") from None


def save_model(model: Olmo, config: OlmoConfig, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``train_state.json`` (= ``extra``) atomically."""
    return save_model_state(model.state_dict(), config, directory, extra)


def save_model_state(
    weights: dict[str, torch.Tensor], config: OlmoConfig, directory: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """``save_model`` from a full state dict (the consolidated weights of a sharded model)."""
    directory = Path(directory)
    with atomic_directory(directory) as staging:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
        safetensors.torch.save_file(tensors, str(staging / MODEL_FILE))
        write_json(staging / CONFIG_FILE, config.to_dict())
        write_json(staging / STATE_FILE, extra or {})
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Olmo:
    """Build an ``Olmo`` from a model directory (or training checkpoint), checksums verified."""
    directory = Path(directory)
    verify_checksums(directory)
    try:
        config = OlmoConfig.from_dict(read_json(directory / CONFIG_FILE))
    except ValueError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from None
    with torch.device("meta"):
        model = Olmo(config)
    model.to_empty(device=device)
    _load_weights(model, directory / MODEL_FILE)
    return model


def model_dir(artifact: Artifact) -> Path:
    """The safetensors + config.json directory of a pretrain/anneal/sft/dpo artifact."""
    return artifact.path / MODEL_DIR


def model_tokenizer_dir(artifact: Artifact) -> Path | None:
    """The Hugging Face tokenizer files a model artifact carries (``TOKENIZER_DIR``), or ``None``."""
    directory = artifact.path / TOKENIZER_DIR
    return directory if directory.is_dir() else None


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
