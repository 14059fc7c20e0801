"""Model directories in safetensors + JSON (never pickle), and the checksummed atomic writes they and the
sharded training checkpoints (``steps.train.sharded_checkpoint``) share.

A *model directory* (``save_model``) holds ``model.safetensors`` (tied weights stored once),
``config.json`` (``OlmoConfig.to_dict()``) and ``train_state.json``. It is written into a temporary
sibling directory that is renamed into place once complete, and carries ``checksums.sha256``
(``sha256sum -c`` format) that loading verifies.
"""
from __future__ import annotations

import hashlib
import json
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
CHECKSUM_FILE = "checksums.sha256"


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


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not valid JSON (not UTF-8 text)") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file in ``directory``."""
    return {name: _sha256(directory / name) for name in names}


def write_checksums(directory: Path, hashes: dict[str, str] | None = None) -> None:
    """Write ``checksums.sha256`` from ``hashes`` (default: hash every other file in ``directory``)."""
    if hashes is None:
        hashes = file_hashes(directory, [p.name for p in directory.iterdir() if p.is_file() and p.name != CHECKSUM_FILE])
    lines = [f"{digest}  {name}\n" for name, digest in sorted(hashes.items())]
    (directory / CHECKSUM_FILE).write_text("".join(lines), encoding="utf-8")


def listed_checksums(directory: str | Path) -> list[tuple[str, str]]:
    """The ``(file name, sha256)`` pairs of ``checksums.sha256``; fails if it is missing or malformed."""
    directory = Path(directory)
    listing = directory / CHECKSUM_FILE
    if not listing.is_file():
        raise CheckpointError(f"{directory}: no {CHECKSUM_FILE}; not a complete model directory or checkpoint")
    try:
        text = listing.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{listing}: expected '<sha256>  <file name>' lines (not UTF-8 text)") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        expected, _, name = line.partition("  ")
        if not name:
            raise CheckpointError(f"{listing}:{number}: expected '<sha256>  <file name>'")
        pairs.append((name, expected))
    return pairs


def verify_checksums(directory: str | Path, part: tuple[int, int] = (0, 1)) -> None:
    """Fail unless every file listed in ``checksums.sha256`` exists with the listed hash.

    ``part`` ``(i, n)`` checks only every n-th listed file starting at the i-th, so n ranks can share the work.
    """
    directory = Path(directory)
    index, count = part
    for name, expected in listed_checksums(directory)[index::count]:
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
