"""Training checkpoints in safetensors + JSON, never pickle: the resumable ones every rank writes into a step's
work directory, and the consolidated optimizer state rank 0 hands off in a pretrain artifact.

A *resume checkpoint* ``step-00000040/`` holds::

    state/shard-00001-model-00001-of-00001.safetensors  rank 0's shards of the model and AdamW state
    state/shard-00002-model-00001-of-00001.safetensors  rank 1's (one file per rank that holds tensors)
    rng-rank00000.safetensors, rng-rank00001.safetensors  each rank's torch generator states
    train_state.json   ``TrainState`` and the world size
    config.json        the model config
    checksums.sha256   every file above

The ``state/`` files are written by ``torch.distributed.checkpoint`` (DCP) with
``HuggingFaceStorageWriter(save_distributed=True)``: tensors ``model.<param>`` and
``optim.state.<param>.{step,exp_avg,exp_avg_sq}``, sharded the way FSDP2 holds them, and where each shard
sits in its full tensor in the safetensors JSON header (``DCP_SHARDING_INFO``). ``HuggingFaceStorageReader``
rebuilds DCP's metadata from those headers, so loading reshards: a checkpoint written by W workers resumes
on W'. DCP's default ``FileSystemWriter`` is not used because its ``.metadata`` is a pickle that its reader
unpickles, and checkpoints live in a shared workspace. Non-tensor state is not stored: the optimizer's
``param_groups`` (hyperparameters and which parameters share them) follow from the config, and the trainer
sets every step's LR from the schedule, so loading keeps the groups of the optimizer it loads into.

A checkpoint is written into ``.step-00000040.tmp`` and renamed into place by rank 0 once every rank has
written and hashed its files, so a directory named ``step-*`` is complete. Loading verifies the checksums
and the safetensors headers (each rank a share of the files) and falls back to the previous checkpoint, with
a warning, when the newest is corrupted. The functions are collective under ``torch.distributed``; without
a process group they work in one process.

The *hand-off* in a pretrain artifact is consolidated and written by rank 0 alone (nodes need not share a
filesystem): the full weights are the artifact's model directory (``model/model.safetensors``, written by
``steps.common.models.save_model_state``), and ``checkpoint/`` holds ``optimizer.safetensors`` (the full
AdamW state, tensors ``state.<param>.{step,exp_avg,exp_avg_sq}``) and ``checksums.sha256``.
``load_consolidated`` loads both into a model sharded on any world size through the same reader, each rank
reading only its slices.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import safetensors
import safetensors.torch
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError
from torch import nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint._hf_utils import CUSTOM_METADATA_KEY, SAVED_OFFSETS_KEY, SUFFIX
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from steps.common.checksums import (
    CheckpointError,
    atomic_directory,
    file_hashes,
    read_json,
    verify_checksums,
    write_checksums,
    write_json,
)
from steps.common.models import CONFIG_FILE, STATE_FILE

from .checkpoint import TrainState

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
STATE_DIR = "state"
OPTIMIZER_FILE = "optimizer.safetensors"

logger = logging.getLogger(__name__)

Part = tuple[int, int]  # (this rank, world size): which share of the files a rank checks


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _barrier() -> None:
    if _world()[0] > 1:
        dist.barrier()


def _gather(value: Any) -> list[Any]:
    """``value`` from every rank, in rank order."""
    world, _ = _world()
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def _first_problem(*checks: Callable[[Part], None]) -> str | None:
    """The first problem (``CheckpointError``) any rank finds running ``checks`` on its share of the files."""
    world, rank = _world()
    problem = None
    try:
        for check in checks:
            check((rank, world))
    except CheckpointError as exc:
        problem = str(exc)
    return next((p for p in _gather(problem) if p is not None), None)


def _require(*checks: Callable[[Part], None]) -> None:
    problem = _first_problem(*checks)
    if problem is not None:
        raise CheckpointError(problem)


# ---------------------------------------------------------------- checks, and safetensors read through DCP


def _shard_prefix(rank: int) -> str:
    """How ``HuggingFaceStorageWriter(save_distributed=True)`` names the file of ``rank`` (its plans are
    numbered from 1 in rank order)."""
    return f"shard-{rank + 1:05d}-"


def _safetensors_files(directory: Path) -> list[Path]:
    """The files ``HuggingFaceStorageReader`` reads: every ``*.safetensors`` in ``directory``."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: missing")
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def _offsets_fit(offsets: Any, shape: list[int]) -> bool:
    return isinstance(offsets, list) and len(offsets) == len(shape) and all(type(o) is int and o >= 0 for o in offsets)


def _check_header(path: Path) -> None:
    """Fail, naming ``path``, unless it is a safetensors file whose DCP sharding info (if any) fits its tensors."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if CUSTOM_METADATA_KEY not in header:
        return
    try:
        sharding = json.loads(header[CUSTOM_METADATA_KEY])
        offsets = {key: sharding[key][SAVED_OFFSETS_KEY] for key in shapes}
    except (ValueError, TypeError, KeyError):
        raise CheckpointError(f"{path}: malformed {CUSTOM_METADATA_KEY} in the safetensors header") from None
    for key, shape in shapes.items():
        if not _offsets_fit(offsets[key], shape):
            raise CheckpointError(f"{path}: {CUSTOM_METADATA_KEY} offsets of {key!r} do not fit its shape {shape}")


def _check_headers(directory: Path) -> Callable[[Part], None]:
    def check(part: Part) -> None:
        index, count = part
        for path in _safetensors_files(directory)[index::count]:
            _check_header(path)

    return check


def _check_checksums(directory: Path) -> Callable[[Part], None]:
    def check(part: Part) -> None:
        verify_checksums(directory, part=part)

    return check


def _read_train_state(path: Path) -> tuple[TrainState, int]:
    """The ``TrainState`` and world size in a checkpoint's ``train_state.json``."""
    try:
        saved = read_json(path)
        return TrainState.from_dict(saved["train_state"]), saved["world_size"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: expected train_state and world_size ({type(exc).__name__}: {exc})") from None


def _read(directory: Path, state: dict[str, Any]) -> None:
    """Fill the tensors of ``state`` (sharded as they are now) in place from the safetensors in ``directory``."""
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(directory)))


def _load_into(
    source: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    read: Callable[[dict[str, Any], dict[str, Any] | None], None],
) -> None:
    """Load the weights (and the AdamW tensors, unless ``optimizer`` is None) that ``read(weights,
    optimizer_tensors)`` fills in place into the model and optimizer; errors name ``source``."""
    try:
        if optimizer is None:
            weights = get_model_state_dict(model)
            read(weights, None)
            set_model_state_dict(model, weights)
        else:
            weights, optimizer_state = get_state_dict(model, optimizer)
            read(weights, optimizer_state["state"])
            set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optimizer_state)
    except CheckpointException as exc:  # a BaseException wrapping each rank's error
        causes = sorted({f"{type(cause).__name__}: {cause}" for cause, _ in exc.failures.values()})
        raise CheckpointError(f"{source}: does not fit the model ({'; '.join(causes)})") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: does not fit the model ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------- RNG


def _rng_file(rank: int) -> str:
    return f"rng-rank{rank:05d}.safetensors"


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return tensors


def _restore_rng(path: Path) -> None:
    try:
        tensors = safetensors.torch.load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        torch.set_rng_state(tensors["torch"])
        cuda_states = [tensors[f"cuda.{i}"] for i in range(len(tensors) - 1)]
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a torch RNG state ({type(exc).__name__}: {exc})") from None
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------- resume checkpoints


def checkpoint_path(root: str | Path, step: int) -> Path:
    """Where the checkpoint after ``step`` optimizer steps lives under ``root``."""
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root`` (renamed into place once written), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints under ``root`` (call on one rank)."""
    for path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path)


def save_training_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState
) -> Path:
    """Write model, optimizer, RNG and trainer state into ``directory`` (collective; atomic)."""
    world, rank = _world()
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.tmp")
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
    _barrier()
    (staging / STATE_DIR).mkdir(parents=True, exist_ok=True)  # by every rank: nodes need not share a filesystem
    model_state, optimizer_state = get_state_dict(model, optimizer)
    tensors = {"model": model_state, "optim": {"state": optimizer_state["state"]}}
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(staging / STATE_DIR), save_distributed=True))
    safetensors.torch.save_file(_rng_tensors(), str(staging / _rng_file(rank)))
    mine = [p.name for p in _safetensors_files(staging / STATE_DIR) if p.name.startswith(_shard_prefix(rank))]
    written = file_hashes(staging, [*(f"{STATE_DIR}/{name}" for name in mine), _rng_file(rank)])
    hashes = {name: digest for part in _gather(written) for name, digest in part.items()}
    if rank == 0:
        write_json(staging / STATE_FILE, {"train_state": state.to_dict(), "world_size": world})
        write_json(staging / CONFIG_FILE, model.config.to_dict())
        hashes.update(file_hashes(staging, [STATE_FILE, CONFIG_FILE]))
        write_checksums(staging, hashes)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    _barrier()
    return directory


def checkpoint_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be resumed from (checked by all ranks together), or None if it can."""
    return _first_problem(_check_checksums(directory), _check_headers(directory / STATE_DIR))


def load_training_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> TrainState:
    """Load weights (and the optimizer state, unless ``optimizer`` is None) from ``directory`` into the
    model as it is sharded now; restore this rank's RNG when the world size is unchanged.

    The safetensors headers are checked here; the checksums by ``checkpoint_problem``."""
    directory = Path(directory)
    world, rank = _world()
    _require(_check_headers(directory / STATE_DIR))

    def read(weights: dict[str, Any], optimizer_tensors: dict[str, Any] | None) -> None:
        tensors = {"model": weights}
        if optimizer_tensors is not None:
            tensors["optim"] = {"state": optimizer_tensors}
        _read(directory / STATE_DIR, tensors)

    _load_into(str(directory), model, optimizer, read)
    state, saved_world = _read_train_state(directory / STATE_FILE)
    if optimizer is not None and saved_world == world:
        _restore_rng(directory / _rng_file(rank))
    return state


def load_latest_checkpoint(
    root: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[Path, TrainState] | None:
    """Resume from the newest complete, uncorrupted checkpoint under ``root``; None if there is none yet.

    A corrupted newest checkpoint is skipped with a warning; if every one is unusable, that is an error.
    """
    checkpoints = list_checkpoints(root)
    problems = []
    for directory in reversed(checkpoints):
        problem = checkpoint_problem(directory)
        if problem is None:
            return directory, load_training_checkpoint(directory, model, optimizer)
        logger.warning("checkpoint %s is unusable (%s); falling back to the previous one", directory.name, problem)
        problems.append(problem)
    if checkpoints:
        raise CheckpointError(f"{root}: no usable checkpoint: " + "; ".join(problems))
    return None


# ---------------------------------------------------------------- the consolidated hand-off


def full_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The unsharded weights and (with ``optimizer``) optimizer state dict on the CPU of rank 0 (empty on other
    ranks; collective)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=options), None
    return get_state_dict(model, optimizer, options=options)


def save_optimizer_state(optimizer_state: dict[str, Any], directory: str | Path) -> Path:
    """Write the tensors of a full optimizer state dict (``full_training_state``) as ``optimizer.safetensors``
    with checksums, atomically (one rank). Keys are DCP's flattened names, ``state.<param>.<name>``."""
    directory = Path(directory)
    tensors = {
        f"state.{param}.{name}": value.contiguous()
        for param, values in optimizer_state["state"].items()
        for name, value in values.items()
    }
    with atomic_directory(directory) as staging:
        safetensors.torch.save_file(tensors, str(staging / OPTIMIZER_FILE))
    return directory


def load_consolidated(
    model: nn.Module,
    model_dir: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_dir: str | Path | None = None,
) -> None:
    """Load a model directory's full weights (and, with ``optimizer``, the full optimizer state saved by
    ``save_optimizer_state`` in ``optimizer_dir``) into the model as it is sharded now, on any world size
    (collective; checksums and headers verified, each rank a share)."""
    if (optimizer is None) != (optimizer_dir is None):
        raise ValueError("load_consolidated: pass both optimizer and optimizer_dir, or neither")
    directories = [Path(model_dir)] + ([Path(optimizer_dir)] if optimizer_dir is not None else [])
    _require(*(_check_checksums(d) for d in directories), *(_check_headers(d) for d in directories))

    def read(weights: dict[str, Any], optimizer_tensors: dict[str, Any] | None) -> None:
        _read(directories[0], weights)
        if optimizer_tensors is not None:
            _read(directories[1], {"state": optimizer_tensors})

    _load_into(" + ".join(map(str, directories)), model, optimizer, read)
