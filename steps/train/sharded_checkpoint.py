"""Resumable training checkpoints in ``torch.distributed.checkpoint`` (DCP) format, written by every rank.

``step-00000040/`` holds DCP's ``.metadata`` and ``__<rank>_<i>.distcp`` files with the model and AdamW
state (sharded the way FSDP2 holds them; loading reshards, so a checkpoint written by W workers resumes
on W'), ``rng-rank<r>.safetensors`` (each rank's torch generator states), ``train_state.json``
(``TrainState`` and the world size), ``config.json`` and ``checksums.sha256`` covering every file.

A checkpoint is written into ``.step-00000040.tmp`` and renamed into place by rank 0 once every rank has
written and hashed its files, so a directory named ``step-*`` is complete. Loading verifies the checksums
(each rank a share of the files) and falls back to the previous checkpoint, with a warning, when the newest
is corrupted. The functions are collective under ``torch.distributed``; without a process group they
work in one process.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from .checkpoint import (
    CONFIG_FILE,
    STATE_FILE,
    CheckpointError,
    TrainState,
    file_hashes,
    read_json,
    verify_checksums,
    write_checksums,
    write_json,
)

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
DCP_METADATA = ".metadata"

logger = logging.getLogger(__name__)


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


def _rng_file(rank: int) -> str:
    return f"rng-rank{rank:05d}.safetensors"


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
        staging.mkdir(parents=True)
    _barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optimizer_state}, checkpoint_id=staging)
    safetensors.torch.save_file(_rng_tensors(), str(staging / _rng_file(rank)))
    _barrier()
    written = [p.name for p in staging.iterdir() if p.name.startswith(f"__{rank}_") or p.name == _rng_file(rank)]
    hashes = {name: digest for part in _gather(file_hashes(staging, written)) for name, digest in part.items()}
    if rank == 0:
        write_json(staging / STATE_FILE, {"train_state": state.to_dict(), "world_size": world})
        write_json(staging / CONFIG_FILE, model.config.to_dict())
        hashes.update(file_hashes(staging, [DCP_METADATA, STATE_FILE, CONFIG_FILE]))
        write_checksums(staging, hashes)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    _barrier()
    return directory


def checkpoint_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be resumed from (checked by all ranks together), or None if it can."""
    world, rank = _world()
    try:
        verify_checksums(directory, part=(rank, world))
        problem = None
    except CheckpointError as exc:
        problem = str(exc)
    return next((p for p in _gather(problem) if p is not None), None)


def load_training_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> TrainState:
    """Load weights (and the optimizer state, unless ``optimizer`` is None) from ``directory`` into the
    model as it is sharded now; restore this rank's RNG when the world size is unchanged."""
    directory = Path(directory)
    world, rank = _world()
    try:
        if optimizer is None:
            weights = get_model_state_dict(model)
            dcp.load({"model": weights}, checkpoint_id=directory)
            set_model_state_dict(model, weights)
        else:
            weights, optimizer_state = get_state_dict(model, optimizer)
            dcp.load({"model": weights, "optim": optimizer_state}, checkpoint_id=directory)
            set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optimizer_state)
    except CheckpointException as exc:  # a BaseException wrapping each rank's error
        causes = sorted({f"{type(cause).__name__}: {cause}" for cause, _ in exc.failures.values()})
        raise CheckpointError(f"{directory}: does not fit the model ({'; '.join(causes)})") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{directory}: does not fit the model ({type(exc).__name__}: {exc})") from None
    saved = read_json(directory / STATE_FILE)
    if optimizer is not None and saved["world_size"] == world:
        _restore_rng(safetensors.torch.load_file(directory / _rng_file(rank)))
    return TrainState.from_dict(saved["train_state"])


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


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on the CPU of rank 0 (empty on other ranks; collective)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
