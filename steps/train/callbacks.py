"""The trainer's callbacks: each one concern of a training run, composed by the worker
(``steps.train.worker.training_callbacks``) in the order metrics flow: measure, guard, report, persist.

- ``NaNGuard``: stop on a non-finite loss or gradient norm, or skip that update.
- ``SpeedMonitor``: MFU (on accelerators whose peak is known) and memory, added to each step's metrics.
- ``InLoopEvaluation``: held-out bits per byte and downstream accuracy every N steps and at the end.
- ``ConsoleProgress``: one progress line format for every training step (``steps.train.progress``).
- ``WandbMetrics``: every step's metrics to the step's W&B run.
- ``MetricsFile``: every step's metrics as ``metrics.jsonl`` when training ends.
- ``Checkpointer``: resume from the newest usable checkpoint, write one every N steps and at the end.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from integrations.wandb_logger import WandbLogger
from olmo_model.flops import flops_per_token

from .progress import TrainingProgress
from .sharded_checkpoint import checkpoint_path, load_latest_checkpoint, prune_checkpoints, save_training_checkpoint
from .throughput import memory_metrics, model_flops_utilization, peak_flops
from .trainer import NAN_POLICIES, Callback, Trainer

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm of a step was NaN or infinite (``nan_policy='stop'``)."""


class NaNGuard(Callback):
    """``policy`` "stop" raises on a non-finite loss or gradient norm; "skip" drops that update."""

    def __init__(self, policy: str = "stop"):
        if policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {list(NAN_POLICIES)}, got {policy!r}")
        self.policy = policy

    def before_update(self, trainer: Trainer, loss: float, grad_norm: float, where: str) -> bool:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return True
        if self.policy == "stop":
            raise NonFiniteLossError(
                f"{where}: non-finite loss ({loss}) or gradient norm ({grad_norm}); stopping (nan_policy='stop')"
            )
        logger.warning("%s: non-finite loss (%s) or gradient norm (%s); update skipped", where, loss, grad_norm)
        return False


class SpeedMonitor(Callback):
    """Adds memory use and, where the device's peak FLOP/s is known, MFU (model FLOPs of ``seq_len``-token
    sequences, over all ranks, per device peak)."""

    def __init__(self, model_config: Any, seq_len: int, device: torch.device):
        self.per_token = flops_per_token(model_config, seq_len)
        self.peak = peak_flops(device)
        self.device = device

    def on_step(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        metrics.update(memory_metrics(self.device))
        if self.peak is not None:
            metrics["mfu"] = model_flops_utilization(
                metrics["tokens_per_second"], self.per_token, trainer.world_size, self.peak
            )


class InLoopEvaluation(Callback):
    """Adds ``evaluate(model)``'s metrics (run on every rank) to every ``every``-th step and the last."""

    def __init__(self, evaluate: Callable[[nn.Module], dict[str, float]], every: int):
        self.evaluate = evaluate
        self.every = every

    def on_step(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if step % self.every == 0 or trainer.is_last(step):
            metrics.update(self.evaluate(trainer.model))


class ConsoleProgress(Callback):
    """A progress line every ``every`` steps and at the last (``TrainingProgress``); its ETA counts from the
    first step this run trains, so a resumed run estimates only what is left."""

    def __init__(self, every: int):
        self.every = every
        self.progress: TrainingProgress | None = None

    def on_step(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.progress is None:
            start = metrics["step"] - 1
            self.progress = TrainingProgress(trainer.config.max_steps, start_step=start, every=self.every)
        self.progress.update(metrics)


class WandbMetrics(Callback):
    """Every step's metrics to the W&B run made from ``run`` (``WandbLogger`` arguments); the run is finished
    with the training's outcome."""

    def __init__(self, run: dict[str, Any]):
        self.run = WandbLogger(**run)

    def on_step(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.run.log(metrics, step=metrics["step"])

    def on_end(self, trainer: Trainer, failed: bool) -> None:
        self.run.finish(exit_code=int(failed))


class MetricsFile(Callback):
    """Writes every step's metrics (the whole history, a resumed run's included) to ``path`` as JSON lines
    when training ends."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_end(self, trainer: Trainer, failed: bool) -> None:
        if failed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as handle:
            for metrics in trainer.state.history:
                handle.write(json.dumps(metrics) + "\n")


class Checkpointer(Callback):
    """Resumes from the newest usable checkpoint under ``directory`` (model, optimizer, RNG, state: it wins over
    the trainer's start state), and writes one every ``every`` steps (None: only at the end) and after the
    last step, keeping the newest ``keep``. Collective under ``torch.distributed``."""

    def __init__(self, directory: str | Path, every: int | None = None, keep: int = 2):
        self.directory = Path(directory)
        self.every = every
        self.keep = keep

    def on_start(self, trainer: Trainer) -> None:
        resumed = load_latest_checkpoint(self.directory, trainer.model, trainer.optimizer)
        if resumed is not None:
            where, trainer.state = resumed
            logger.info("resuming from %s at step %d", where, trainer.state.step)

    def on_step(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if (self.every is not None and step % self.every == 0) or trainer.is_last(step):
            save_training_checkpoint(checkpoint_path(self.directory, step), trainer.model, trainer.optimizer,
                                     trainer.state)
            if trainer.rank == 0:
                prune_checkpoints(self.directory, self.keep)
