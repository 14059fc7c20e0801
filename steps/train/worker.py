"""One training worker: what the pretrain and anneal steps launch on every device.

A ``TrainingJob`` holds everything a worker needs (it is pickled into spawned processes). Each worker
joins the process group, builds OLMo on the meta device, shards it with FSDP2, initialises it (the
mitchell init is drawn in full and sharded, so the weights do not depend on the world size) or loads
it from a pretrain artifact, trains with ``train`` (checkpoints, resume, NaN policy), and rank 0 writes the
artifact: the consolidated model (``model/``: safetensors + config), ``metrics.jsonl`` and the consolidated
AdamW state (``checkpoint/optimizer.safetensors``, which an anneal may carry on with). Rank 0 writes all of
it, since only node 0 uploads the artifact; nothing in it is a pickle.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from integrations.wandb_logger import WandbLogger
from olmo_model import Olmo, OlmoConfig
from olmo_model.flops import flops_per_token
from steps.common.artifacts import Artifact
from steps.common.models import MODEL_DIR

from .checkpoint import TrainState, save_model_state
from .parallel import data_parallel_mesh, effective_precision, join_process_group, shard_model, worker_device
from .pretraining_data import pretraining_batches
from .progress import TrainingProgress
from .sharded_checkpoint import full_training_state, load_consolidated, save_optimizer_state
from .throughput import memory_metrics, model_flops_utilization, peak_flops
from .trainer import TrainConfig, build_optimizer, train

METRICS_FILE = "metrics.jsonl"
FINAL_CHECKPOINT_DIR = "checkpoint"  # the consolidated AdamW state an anneal may carry on with


@dataclass(frozen=True)
class Initialization:
    """Where a job's weights come from: the mitchell init drawn with ``seed``, or the artifact directory
    ``pretrained`` of a pretrain step (its ``model/``; and its ``checkpoint/`` AdamW state too when
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


@dataclass(frozen=True)
class TrainingJob:
    """A pretraining or anneal run: model, data, schedule, where to checkpoint and write the result, and
    how to run it (device, sharding, activation checkpointing, ``torch.compile``, logging)."""

    model: dict[str, Any]
    train: dict[str, Any]
    instances: Artifact
    data_order: dict[str, Any]
    init: Initialization
    checkpoint_dir: str
    output_dir: str
    start_state: dict[str, Any] | None = None
    keep_checkpoints: int = 2
    device: str = "auto"
    sharding: str = "full"
    nnodes: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    log_every: int = 10
    wandb: dict[str, Any] | None = None
    in_loop_eval: Callable[[], Callable[[torch.nn.Module], dict[str, float]]] | None = None
    eval_every: int | None = None


def _cpu_threads(device: torch.device) -> None:
    """Split the machine's cores between the workers of this node."""
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def build_model(job: TrainingJob, device: torch.device, precision: str) -> Olmo:
    """OLMo built on the meta device, sharded, materialised on ``device`` and given its initial weights."""
    with torch.device("meta"):
        model = Olmo(OlmoConfig.from_dict(job.model))
    mesh = data_parallel_mesh(device, job.sharding, job.nnodes)
    shard_model(model, mesh, precision, job.activation_checkpointing, job.compile)
    model.to_empty(device=device)
    if job.init.seed is not None:
        model.reset_parameters(torch.Generator().manual_seed(job.init.seed))
    return model


def _step_measurements(config: OlmoConfig, seq_len: int, device: torch.device) -> Callable[[dict], dict]:
    per_token = flops_per_token(config, seq_len)
    peak = peak_flops(device)
    world = dist.get_world_size()

    def measure(metrics: dict[str, Any]) -> dict[str, Any]:
        extra = memory_metrics(device)
        if peak is not None:
            extra["mfu"] = model_flops_utilization(metrics["tokens_per_second"], per_token, world, peak)
        return extra

    return measure


def _console_and_wandb(job: TrainingJob, settings: TrainConfig) -> tuple[Callable, Callable, Callable]:
    """The per-step log (progress line; W&B when configured), the hook ``train`` calls with the state it
    starts from (so a resumed run's progress starts at the checkpoint actually loaded, which is not the newest
    one when that is corrupted), and the closing function (rank 0)."""
    progress: list[TrainingProgress] = []
    run = WandbLogger(**job.wandb) if job.wandb is not None else None

    def started(state: TrainState) -> None:
        progress[:] = [TrainingProgress(settings.max_steps, start_step=state.step, every=job.log_every)]

    def log(metrics: dict[str, Any]) -> None:
        progress[0].update(metrics)
        if run is not None:
            run.log(metrics, step=metrics["step"])

    def close(failed: bool) -> None:
        if run is not None:
            run.finish(exit_code=int(failed))

    return log, started, close


def run_training_job(job: TrainingJob) -> dict[str, Any] | None:
    """The worker entrypoint: train, then (rank 0) write the artifact; returns the final state (without
    the metrics history, which is in ``metrics.jsonl``) on rank 0."""
    device = worker_device(job.device)
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
    settings = TrainConfig.from_dict(job.train)
    settings = replace(settings, precision=effective_precision(settings.precision, device))
    model = build_model(job, device, settings.precision)
    optimizer = build_optimizer(model, settings)
    job.init.load(model, optimizer)
    log, started, close = _console_and_wandb(job, settings) if rank == 0 else (None, None, None)
    failed = True
    try:
        state = train(
            model,
            pretraining_batches(job.instances, job.data_order),
            settings,
            optimizer=optimizer,
            start_state=TrainState.from_dict(job.start_state) if job.start_state is not None else None,
            log=log if log is not None else (lambda metrics: None),
            checkpoint_dir=job.checkpoint_dir,
            keep_checkpoints=job.keep_checkpoints,
            evaluate=job.in_loop_eval() if job.in_loop_eval is not None else None,
            eval_every=job.eval_every,
            measure=_step_measurements(model.config, job.instances.summary["seq_len"], device),
            on_start=started,
        )
        failed = False
    finally:
        if close is not None:
            close(failed)
    weights, optimizer_state = full_training_state(model, optimizer)
    if rank != 0:
        return None
    return write_training_output(job, model.config, weights, optimizer_state, state)


def write_training_output(
    job: TrainingJob,
    config: OlmoConfig,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: TrainState,
) -> dict[str, Any]:
    """The artifact's files (rank 0): consolidated model, per-step metrics, consolidated AdamW state."""
    out = Path(job.output_dir)
    final = {k: v for k, v in state.to_dict().items() if k != "history"}
    save_model_state(weights, config, out / MODEL_DIR, extra=final)
    with open(out / METRICS_FILE, "w") as handle:
        for metrics in state.history:
            handle.write(json.dumps(metrics) + "\n")
    save_optimizer_state(optimizer_state, out / FINAL_CHECKPOINT_DIR)
    return final
