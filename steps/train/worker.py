"""One training worker: what every training step (pretrain, anneal, SFT, DPO) launches on every device.

A ``TrainingJob`` holds everything a worker needs (it is pickled into spawned processes). Each worker
joins the process group, builds OLMo on the meta device, shards it with FSDP2, initialises it (the
mitchell init is drawn in full and sharded, so the weights do not depend on the world size) or loads
it from a model artifact, makes its batches, and trains with the ``Trainer`` and the job's callbacks
(``training_callbacks``). Rank 0 writes the artifact: the consolidated model (``model/``: safetensors +
config), ``metrics.jsonl`` and, for a pretrain, the consolidated AdamW state (``checkpoint/optimizer.safetensors``,
which an anneal may carry on with). Rank 0 writes all of it, since only node 0 uploads the artifact; nothing
in it is a pickle.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch
import torch.distributed as dist

from olmo_model import Olmo, OlmoConfig
from steps.common.execution import Execution
from steps.common.models import MODEL_DIR, save_model_state

from .callbacks import (
    Checkpointer, ConsoleProgress, InLoopEvaluation, MetricsFile, NaNGuard, SpeedMonitor, WandbMetrics,
)
from .checkpoint import TrainState
from .objectives import Objective, with_z_loss
from .parallel import data_parallel_mesh, effective_precision, join_process_group, shard_model, worker_device
from .sharded_checkpoint import full_training_state, load_consolidated, save_optimizer_state
from .trainer import BatchSource, Callback, TrainConfig, Trainer, build_optimizer

if TYPE_CHECKING:
    from .in_loop_eval import InLoopEvaluator

METRICS_FILE = "metrics.jsonl"
FINAL_CHECKPOINT_DIR = "checkpoint"  # the consolidated AdamW state an anneal may carry on with


@dataclass(frozen=True)
class Initialization:
    """Where a job's weights come from: the mitchell init drawn with ``seed``, or the artifact directory
    ``pretrained`` of a training step (its ``model/``; and a pretrain's ``checkpoint/`` AdamW state too when
    ``carry_optimizer``)."""

    seed: int | None = None
    pretrained: str | None = None
    carry_optimizer: bool = False

    def load(self, model: Olmo, optimizer: torch.optim.Optimizer) -> None:
        """Load ``pretrained`` into the sharded ``model`` (and ``optimizer``) on every rank (collective)."""
        if self.pretrained is None:
            return
        artifact = Path(self.pretrained)
        if self.carry_optimizer:
            load_consolidated(model, artifact / MODEL_DIR, optimizer, artifact / FINAL_CHECKPOINT_DIR)
        else:
            load_consolidated(model, artifact / MODEL_DIR)


class TrainingData(Protocol):
    """What a job trains on: a batch source made in the worker, the objective, the sequence length (for FLOPs).
    Pretraining's data order (``steps.train.pretraining_data``), SFT's chats and DPO's preference pairs
    (``steps.adapt``)."""

    @property
    def seq_len(self) -> int: ...

    def objective(self) -> Objective: ...

    def batches(self, model: torch.nn.Module, precision: str) -> BatchSource:
        """The global batches (DPO computes its reference log-probs with ``model`` here, before training)."""


@dataclass(frozen=True)
class TrainingJob:
    """A training run: the model and its initial weights, the data and objective, the trainer's config, how to
    run it (``execution``), where to checkpoint and where to write the result. It is pickled into the spawned
    workers (and into a multi-node job's other nodes' workers, which build the same job from the workflow)."""

    model: OlmoConfig
    init: Initialization
    data: TrainingData
    config: TrainConfig
    execution: Execution
    checkpoint_dir: str
    output_dir: str
    start_state: TrainState | None = None
    hand_off_optimizer: bool = False  # write the consolidated AdamW state into the artifact's checkpoint/
    wandb_run: dict[str, Any] | None = None  # WandbLogger arguments of the step's W&B run
    in_loop_eval: Callable[[], InLoopEvaluator] | None = None  # makes the evaluator, in the worker

    def __post_init__(self) -> None:
        # A z-loss the objective cannot take (DPO) is refused here, before any worker starts.
        with_z_loss(self.data.objective(), self.config.z_loss_multiplier)


def _cpu_threads(device: torch.device) -> None:
    """Split the machine's cores between the workers of this node."""
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def build_model(job: TrainingJob, device: torch.device, precision: str) -> Olmo:
    """OLMo built on the meta device, sharded, materialised on ``device`` and given its initial weights."""
    with torch.device("meta"):
        model = Olmo(job.model)
    execution = job.execution
    mesh = data_parallel_mesh(device, execution.sharding, execution.nnodes)
    shard_model(model, mesh, precision, execution.activation_checkpointing, execution.compile)
    model.to_empty(device=device)
    if job.init.seed is not None:
        model.reset_parameters(torch.Generator().manual_seed(job.init.seed))
    return model


def training_callbacks(job: TrainingJob, device: torch.device, rank: int) -> list[Callback]:
    """The callbacks of a job's trainer, in the order metrics flow: guard, measure, report (rank 0), persist."""
    callbacks: list[Callback] = [NaNGuard(job.config.nan_policy), SpeedMonitor(job.model, job.data.seq_len, device)]
    if job.in_loop_eval is not None:
        evaluator = job.in_loop_eval()
        callbacks.append(InLoopEvaluation(evaluator, evaluator.every))
    if rank == 0:
        callbacks.append(ConsoleProgress(job.execution.log_every))
        if job.wandb_run is not None:
            callbacks.append(WandbMetrics(job.wandb_run))
        callbacks.append(MetricsFile(Path(job.output_dir) / METRICS_FILE))
    execution = job.execution
    callbacks.append(Checkpointer(job.checkpoint_dir, execution.checkpoint_every, execution.keep_checkpoints))
    return callbacks


def run_training_job(job: TrainingJob) -> dict[str, Any] | None:
    """The worker entrypoint: train, then (rank 0) write the artifact; returns the final state (without
    the metrics history, which is in ``metrics.jsonl``) on rank 0."""
    device = worker_device(job.execution.device)
    join_process_group(device)
    rank = dist.get_rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=f"[rank {rank}] %(message)s")
    # On an exception this process exits at once and the launcher stops the other ranks, wherever they wait:
    # a barrier here would meet them inside some other collective and hang the job instead.
    result = _train_and_save(job, device)
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()
    return result


def _train_and_save(job: TrainingJob, device: torch.device) -> dict[str, Any] | None:
    _cpu_threads(device)
    rank = dist.get_rank()
    config = replace(job.config, precision=effective_precision(job.config.precision, device))
    model = build_model(job, device, config.precision)
    optimizer = build_optimizer(model, config)
    job.init.load(model, optimizer)
    batches = job.data.batches(model, config.precision)
    callbacks = training_callbacks(job, device, rank)
    state = Trainer(model, batches, config, job.data.objective(), callbacks, optimizer, job.start_state).fit()
    weights, optimizer_state = full_training_state(model, optimizer if job.hand_off_optimizer else None)
    if rank != 0:
        return None
    return write_training_output(job, weights, optimizer_state, state)


def write_training_output(
    job: TrainingJob, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any] | None, state: TrainState
) -> dict[str, Any]:
    """The artifact's model (rank 0): consolidated weights, and the consolidated AdamW state when handed off
    (``metrics.jsonl`` is the ``MetricsFile`` callback's)."""
    out = Path(job.output_dir)
    final = {k: v for k, v in state.to_dict().items() if k != "history"}
    save_model_state(weights, job.model, out / MODEL_DIR, extra=final)
    if optimizer_state is not None:
        save_optimizer_state(optimizer_state, out / FINAL_CHECKPOINT_DIR)
    return final
