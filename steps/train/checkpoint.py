"""Model artifacts and resumable training checkpoints, in safetensors + JSON (never pickle).

A *model directory* (``save_model``) holds ``model.safetensors`` (tied weights stored once),
``config.json`` (``OlmoConfig.to_dict()``) and ``train_state.json``.
A *training checkpoint* (``save_training_checkpoint``) holds the same model files plus
``optimizer.safetensors`` (every tensor of the optimizer state, keyed ``state.<param index>.<name>``),
``optimizer.json`` (the non-tensor rest: param groups and scalar state) and ``rng.safetensors``
(torch CPU and CUDA generator states). The trainer draws no other random numbers: the data order is
a pure function of its inputs, so Python and NumPy generator states are not saved.

Both are written into a temporary sibling directory that is renamed into place once complete, and
both carry ``checksums.sha256`` (``sha256sum -c`` format) that loading verifies.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import safetensors.torch
import torch

from olmo_model import Olmo, OlmoConfig

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.json"
OPTIMIZER_TENSORS_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
RNG_FILE = "rng.safetensors"
CHECKSUM_FILE = "checksums.sha256"
CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A model directory or checkpoint that is incomplete, corrupted or does not fit the model."""


@dataclass
class TrainState:
    """Where a training run stands.

    ``step`` counts optimizer steps done (it drives the LR schedule and ``max_steps``);
    ``data_step`` is the index of the next global batch in the data order (equal to ``step`` unless
    the run started mid-order, as an anneal does); ``history`` holds the logged metrics.
    """

    step: int = 0
    data_step: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"TrainState: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------- files, checksums, atomic writes


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path) -> None:
    """Write ``checksums.sha256`` covering every other file in ``directory``."""
    lines = [
        f"{_sha256(path)}  {path.name}\n"
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != CHECKSUM_FILE
    ]
    (directory / CHECKSUM_FILE).write_text("".join(lines), encoding="utf-8")


def verify_checksums(directory: str | Path) -> None:
    """Fail unless every file listed in ``checksums.sha256`` exists with the listed hash."""
    directory = Path(directory)
    listing = directory / CHECKSUM_FILE
    if not listing.is_file():
        raise CheckpointError(f"{directory}: no {CHECKSUM_FILE}; not a complete model directory or checkpoint")
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        expected, _, name = line.partition("  ")
        if not name:
            raise CheckpointError(f"{listing}:{number}: expected '<sha256>  <file name>'")
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {CHECKSUM_FILE} but missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match {CHECKSUM_FILE} (file corrupted or changed)")


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target``.

    Temporary names start with a dot, so readers scanning for complete directories skip them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        write_checksums(staging)
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ---------------------------------------------------------------- model directories


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
    directory = Path(directory)
    with atomic_directory(directory) as staging:
        safetensors.torch.save_model(model, str(staging / MODEL_FILE))
        _write_json(staging / CONFIG_FILE, config.to_dict())
        _write_json(staging / STATE_FILE, extra or {})
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Olmo:
    """Build an ``Olmo`` from a model directory (or training checkpoint), checksums verified."""
    directory = Path(directory)
    verify_checksums(directory)
    try:
        config = OlmoConfig.from_dict(_read_json(directory / CONFIG_FILE))
    except ValueError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from None
    with torch.device("meta"):
        model = Olmo(config)
    model.to_empty(device=device)
    _load_weights(model, directory / MODEL_FILE)
    return model


# ---------------------------------------------------------------- training checkpoints


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into its tensors and a JSON-able remainder."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalar_state": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in meta["scalar_state"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {**group, **({"betas": tuple(group["betas"])} if "betas" in group else {})}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda_states = [tensors[f"cuda.{i}"] for i in range(len(tensors) - 1)]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


def checkpoint_path(root: str | Path, step: int) -> Path:
    """Where the checkpoint after ``step`` optimizer steps lives under ``root``."""
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root`` (atomically renamed, so temporaries are skipped), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints under ``root``."""
    for path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path)


def save_training_checkpoint(
    directory: str | Path,
    model: Olmo,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    world_size: int = 1,
) -> Path:
    """Write model, config, optimizer, RNG and trainer state into ``directory`` atomically."""
    directory = Path(directory)
    tensors, meta = _optimizer_to_files(optimizer)
    with atomic_directory(directory) as staging:
        safetensors.torch.save_model(model, str(staging / MODEL_FILE))
        _write_json(staging / CONFIG_FILE, model.config.to_dict())
        safetensors.torch.save_file(tensors, str(staging / OPTIMIZER_TENSORS_FILE))
        _write_json(staging / OPTIMIZER_META_FILE, meta)
        safetensors.torch.save_file(_rng_tensors(), str(staging / RNG_FILE))
        _write_json(staging / STATE_FILE, {"train_state": state.to_dict(), "world_size": world_size})
    return directory


def load_training_checkpoint(
    directory: str | Path, model: Olmo, optimizer: torch.optim.Optimizer
) -> TrainState:
    """Load weights into ``model``, state into ``optimizer``, restore RNG states; return the TrainState."""
    directory = Path(directory)
    verify_checksums(directory)
    _load_weights(model, directory / MODEL_FILE)
    device = str(_model_device(model))
    tensors = safetensors.torch.load_file(directory / OPTIMIZER_TENSORS_FILE, device=device)
    try:
        optimizer.load_state_dict(_optimizer_from_files(tensors, _read_json(directory / OPTIMIZER_META_FILE)))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{directory}: optimizer state does not fit the optimizer ({exc})") from None
    _restore_rng(safetensors.torch.load_file(directory / RNG_FILE))
    return TrainState.from_dict(_read_json(directory / STATE_FILE)["train_state"])
