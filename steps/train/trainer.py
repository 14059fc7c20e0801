"""The training loop shared by pretraining, annealing, SFT and DPO.

A *batch* is a dict of tensors with a leading instance dimension (a bare tensor means
``{"input_ids": tensor}``); keys ending in ``input_ids`` hold tokens, an optional ``labels`` tensor
(aligned with ``input_ids``, ``IGNORE_INDEX`` = not trained on) defaults to ``input_ids``, and an
optional ``batch_hash`` string is copied into the step's metrics, together with ``rank_batch_hashes``: the
``batch_hash`` of the ``input_ids`` rows each rank trained on (when the batch has ``input_ids``).

Each step: fetch the global batch for the current data step, keep this rank's rows
(``batch[rank::world_size]``), split them into micro-batches, and accumulate gradients of
``loss_sum(micro-batch) / units(global batch)`` (tokens for language modelling, pairs for DPO),
so accumulation and sharding are exact. Then set the LR from the schedule (recomputed from the
config, so a resumed or annealed run needs no stored LR), clip the global gradient L2 norm, and
take an AdamW step. The LR of optimizer step ``s`` (1-based) is ``schedule.lr_at(s)``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn

from olmo_model import LRSchedule, build_adamw
from olmo_model.config import check_field_types, dataclass_from_dict
from steps.data.batches import batch_hash

from .checkpoint import TrainState
from .objectives import IGNORE_INDEX, Batch, NextTokenLoss, Objective
from .sharded_checkpoint import checkpoint_path, load_latest_checkpoint, prune_checkpoints, save_training_checkpoint

PRECISIONS = ("fp32", "bf16")
NAN_POLICIES = ("stop", "skip")

BatchSource = Callable[[int], "torch.Tensor | Batch"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm of a step was NaN or infinite (``nan_policy='stop'``)."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW hyperparameters; the peak LR lives in the schedule (``schedule.peak_lr``)."""

    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    weight_decay: float = 0.1

    def __post_init__(self) -> None:
        betas = self.betas
        if (
            not isinstance(betas, (list, tuple))
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"OptimizerConfig.betas: expected two numbers in [0, 1), got {betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        for key in ("eps", "weight_decay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"OptimizerConfig.{key}: expected a number >= 0, got {value!r}")
            object.__setattr__(self, key, float(value))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizerConfig:
        return dataclass_from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: batch sizes in instances (sequences, or pairs for DPO), steps, optimizer, LR schedule.

    ``max_grad_norm`` None disables clipping (the norm is still measured). ``precision`` "bf16"
    autocasts the forward pass to bf16 and keeps fp32 weights and optimizer state.
    ``checkpoint_every`` None checkpoints only at the end (when the run has a checkpoint directory).
    ``nan_policy`` "stop" raises on a non-finite loss or gradient norm; "skip" drops that update.
    """

    global_batch_size: int
    micro_batch_size: int
    max_steps: int
    schedule: LRSchedule
    optimizer: OptimizerConfig = OptimizerConfig()
    max_grad_norm: float | None = 1.0
    seed: int = 6198
    precision: str = "fp32"
    log_every: int = 1
    checkpoint_every: int | None = None
    nan_policy: str = "stop"

    def __post_init__(self) -> None:
        check_field_types(self)
        name = type(self).__name__
        for key in ("global_batch_size", "micro_batch_size", "max_steps", "log_every", "checkpoint_every"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{name}.{key}: expected a positive integer, got {value}")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"{name}: global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"{name}.max_grad_norm: expected a positive number or null, got {self.max_grad_norm}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"{name}.precision: expected one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"{name}.nan_policy: expected one of {list(NAN_POLICIES)}, got {self.nan_policy!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"TrainConfig: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        for key, nested in (("schedule", LRSchedule), ("optimizer", OptimizerConfig)):
            if isinstance(data.get(key), Mapping):
                try:
                    data[key] = nested.from_dict(data[key])
                except ValueError as exc:
                    raise ValueError(f"TrainConfig.{key}: {exc}") from None
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """OLMo's AdamW (decay on Linear weights only) with the config's hyperparameters."""
    opt = config.optimizer
    return build_adamw(model, lr=config.schedule.peak_lr, betas=opt.betas, eps=opt.eps,
                       weight_decay=opt.weight_decay)


# ---------------------------------------------------------------- batches


def as_batch(raw: torch.Tensor | Batch, where: str) -> Batch:
    """Normalise what a batch source returned, checking every tensor has the same number of rows."""
    batch = {"input_ids": raw} if isinstance(raw, torch.Tensor) else dict(raw)
    rows = {key: value.shape[0] for key, value in batch.items() if isinstance(value, torch.Tensor)}
    if not rows:
        raise ValueError(f"{where}: the batch holds no tensors")
    if len(set(rows.values())) != 1:
        raise ValueError(f"{where}: batch tensors disagree on the number of instances: {rows}")
    return batch


def batch_rows(batch: Batch) -> int:
    return next(value.shape[0] for value in batch.values() if isinstance(value, torch.Tensor))


def batch_tokens(batch: Batch) -> int:
    """Tokens the batch feeds the model (padding included): elements of every ``*input_ids`` tensor."""
    return sum(value.numel() for key, value in batch.items() if key.endswith("input_ids"))


def map_tensors(batch: Batch, function: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    return {key: function(value) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def micro_batches(batch: Batch, size: int) -> Iterator[Batch]:
    for start in range(0, batch_rows(batch), size):
        yield map_tensors(batch, lambda t: t[start:start + size])


# ---------------------------------------------------------------- the loop


def distributed_world() -> tuple[int, int]:
    """(world_size, rank): (1, 0) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward-pass context of ``precision``: bf16 autocast over fp32 weights, or plain fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _log_metrics(metrics: dict[str, Any]) -> None:
    logger.info(" ".join(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
                         for key, value in metrics.items()))


def _accumulate_gradients(
    model: nn.Module, objective: Objective, batch: Batch, units: int, config: TrainConfig, world_size: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Backward every micro-batch of this rank's ``batch``; return summed loss and metrics (detached).

    Each rank's loss is scaled by ``world_size`` because data-parallel wrappers (FSDP) average gradients.
    Under FSDP2 gradients are reduced across ranks once, in the last micro-batch's backward.
    """
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    metric_sums: dict[str, torch.Tensor] = {}
    count = math.ceil(batch_rows(batch) / config.micro_batch_size)
    for index, micro in enumerate(micro_batches(batch, config.micro_batch_size)):
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce gradients once, after the last one
            model.set_requires_gradient_sync(index == count - 1)
        with autocast(device, config.precision):
            loss, metrics = objective(model, micro)
        (loss * (world_size / units)).backward()
        loss_sum += loss.detach().double()
        for key, value in metrics.items():
            metric_sums[key] = metric_sums.get(key, 0.0) + value.detach().double()
    return loss_sum, metric_sums


def _all_reduce(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum each scalar over all ranks (one collective)."""
    keys = sorted(values)
    stacked = torch.stack([values[key] for key in keys])
    dist.all_reduce(stacked)
    return dict(zip(keys, stacked))


def _grad_norm(model: nn.Module, max_norm: float | None) -> float:
    """Global L2 norm of all gradients before clipping; clips them to ``max_norm`` when given."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, math.inf if max_norm is None else max_norm)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)


def _fetch_batch(batches: BatchSource, data_step: int, config: TrainConfig, where: str) -> Batch:
    batch = as_batch(batches(data_step), where)
    if batch_rows(batch) != config.global_batch_size:
        raise ValueError(f"{where}: expected {config.global_batch_size} instances, got {batch_rows(batch)}")
    return batch


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    batch: Batch,
    lr: float,
    config: TrainConfig,
    where: str,
) -> dict[str, Any]:
    """One optimizer step on a global batch; returns loss, grad_norm, objective metrics and skipped."""
    units = objective.units(batch)
    if units <= 0:
        raise ValueError(f"{where}: the batch has nothing to train on (every label is {IGNORE_INDEX})")
    world_size, rank = distributed_world()
    device = next(model.parameters()).device
    for group in optimizer.param_groups:
        group["lr"] = lr
    rows = map_tensors(batch, lambda t: t[rank::world_size])
    local = map_tensors(rows, lambda t: t.to(device))
    loss_sum, metric_sums = _accumulate_gradients(model, objective, local, units, config, world_size)
    if world_size > 1:
        metric_sums = _all_reduce({"loss": loss_sum, **metric_sums})
        loss_sum = metric_sums.pop("loss")
    loss = float(loss_sum) / units
    grad_norm = _grad_norm(model, config.max_grad_norm)
    finite = math.isfinite(loss) and math.isfinite(grad_norm)
    if not finite and config.nan_policy == "stop":
        raise NonFiniteLossError(
            f"{where}: non-finite loss ({loss}) or gradient norm ({grad_norm}); stopping (nan_policy='stop')"
        )
    if finite:
        optimizer.step()
    else:
        logger.warning("%s: non-finite loss (%s) or gradient norm (%s); update skipped", where, loss, grad_norm)
    optimizer.zero_grad(set_to_none=True)
    metrics = {"loss": loss, "grad_norm": grad_norm, **{k: float(v) / units for k, v in metric_sums.items()}}
    if "batch_hash" in batch and "input_ids" in batch:
        metrics["rank_batch_hashes"] = _rank_batch_hashes(rows["input_ids"], world_size)
    return metrics if finite else {**metrics, "skipped": True}


def _rank_batch_hashes(rank_tokens: torch.Tensor, world_size: int) -> list[str]:
    """``batch_hash`` of the rows each rank trained on, gathered from every rank (in rank order)."""
    local = batch_hash(rank_tokens.cpu().numpy())
    if world_size == 1:
        return [local]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, local)
    return gathered


def train(
    model: nn.Module,
    batches: BatchSource,
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_state: TrainState | None = None,
    loss_function: Objective | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    keep_checkpoints: int = 2,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    measure: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    on_start: Callable[[TrainState], None] | None = None,
) -> TrainState:
    """Train ``model`` until ``config.max_steps`` optimizer steps are done; return the final state.

    ``batches(k)`` returns global batch ``k`` of the data order (``config.global_batch_size`` rows).
    ``optimizer`` defaults to ``build_optimizer(model, config)``; ``start_state`` lets a run begin
    mid-order (an anneal: ``TrainState(data_step=..., tokens_seen=...)``). With ``checkpoint_dir``, a
    run resumes from the newest usable checkpoint there (model, optimizer, RNG, state; it wins over
    ``start_state``) and writes one every ``config.checkpoint_every`` steps and at the end, keeping the
    newest ``keep_checkpoints``. ``evaluate(model)`` (run on every rank) adds its metrics to those of
    every ``eval_every``-th step and of the last; ``measure(metrics)`` adds measurements of each step
    (MFU, memory). ``on_start(state)`` is called once before the first step with the state the run starts
    from (the checkpoint actually loaded, not merely the newest on disk). ``log`` receives the metrics of every
    ``config.log_every``-th step and of the last (on rank 0); they are also kept in ``TrainState.history``.
    Under ``torch.distributed`` every rank calls ``train``; checkpoints are written collectively.
    """
    objective = NextTokenLoss() if loss_function is None else loss_function
    optimizer = build_optimizer(model, config) if optimizer is None else optimizer
    log = _log_metrics if log is None else log
    world_size, rank = distributed_world()
    if config.global_batch_size % world_size:
        raise ValueError(f"global_batch_size {config.global_batch_size} is not divisible by world size {world_size}")
    resumed = load_latest_checkpoint(checkpoint_dir, model, optimizer) if checkpoint_dir is not None else None
    if resumed is not None:
        where, state = resumed
        logger.info("resuming from %s at step %d", where, state.step)
    else:
        state = TrainState.from_dict(start_state.to_dict()) if start_state is not None else TrainState()
        torch.manual_seed(config.seed)
    if on_start is not None:
        on_start(state)
    model.train()
    while state.step < config.max_steps:
        started = time.perf_counter()
        step = state.step + 1
        where = f"step {step} (data step {state.data_step})"
        batch = _fetch_batch(batches, state.data_step, config, where)
        lr = config.schedule.lr_at(step)
        outcome = _train_step(model, optimizer, objective, batch, lr, config, where)
        seconds = time.perf_counter() - started
        tokens = batch_tokens(batch)
        step_data = state.data_step
        state.step, state.data_step, state.tokens_seen = step, step_data + 1, state.tokens_seen + tokens
        state.skipped_steps += int(outcome.get("skipped", False))
        metrics = {
            "step": step, "data_step": step_data, "lr": lr, "tokens": tokens, "tokens_seen": state.tokens_seen,
            "step_seconds": seconds, "tokens_per_second": tokens / seconds, **outcome,
        }
        if "batch_hash" in batch:
            metrics["batch_hash"] = batch["batch_hash"]
        if measure is not None:
            metrics.update(measure(metrics))
        last = step == config.max_steps
        if evaluate is not None and eval_every is not None and (step % eval_every == 0 or last):
            metrics.update(evaluate(model))
        if step % config.log_every == 0 or last or any(key.startswith("eval/") for key in metrics):
            state.history.append(metrics)
            if rank == 0:
                log(metrics)
        due = config.checkpoint_every is not None and step % config.checkpoint_every == 0
        if checkpoint_dir is not None and (due or last):
            save_training_checkpoint(checkpoint_path(checkpoint_dir, step), model, optimizer, state)
            if rank == 0:
                prune_checkpoints(checkpoint_dir, keep_checkpoints)
    return state
