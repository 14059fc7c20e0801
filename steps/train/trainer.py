"""The trainer of pretraining, the anneal, SFT and DPO: a loop over global batches, an objective, callbacks.

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
take an AdamW step unless a callback vetoes it (``NaNGuard``). The LR of optimizer step ``s`` (1-based) is
``schedule.lr_at(s)``. Every step's metrics go into ``TrainState.history``; then each callback sees them
(``steps.train.callbacks``: checkpoints and resume, console progress, metrics file, W&B, in-loop
evaluation, speed and memory).
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
import torch.distributed as dist
from torch import nn

from olmo_model import LRSchedule, build_adamw
from olmo_model.config import Config, ConfigError, require
from steps.data.batches import batch_hash

from .checkpoint import TrainState
from .objectives import IGNORE_INDEX, Batch, NextTokenLoss, Objective, with_z_loss


Precision = Literal["fp32", "bf16"]
NanPolicy = Literal["stop", "skip"]
NAN_POLICIES: tuple[str, ...] = typing.get_args(NanPolicy)

BatchSource = Callable[[int], "torch.Tensor | Batch"]

# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class OptimizerConfig(Config):
    """AdamW hyperparameters; the peak LR lives in the schedule (``schedule.peak_lr``).

    ``weight_decay`` applies to every Linear weight (an untied output matrix included), to the embedding when
    ``decay_embeddings`` and to the norm weights (OLMo 2's RMSNorm) when ``decay_norms``
    (``olmo_model.optim.parameter_groups``). The defaults are OLMo v1's (embedding not decayed; v1 has no norm
    weights); OLMo 2's recipe (OLMo-core: everything but the embedding) is ``decay_norms: true``.
    """

    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    decay_norms: bool = False

    WHERE = "train.optimizer"

    def check(self) -> None:
        require(all(0 <= beta < 1 for beta in self.betas), f"{self.WHERE}.betas", "two numbers in [0, 1)", self.betas)
        for key in ("eps", "weight_decay"):
            require(getattr(self, key) >= 0, f"{self.WHERE}.{key}", "a number >= 0", getattr(self, key))


@dataclass(frozen=True, kw_only=True)
class UpdateConfig(Config):
    """What every training block of a recipe says about one update: instances per micro-batch (sequences, or
    pairs for DPO), AdamW, gradient clipping (``max_grad_norm`` None: measured, not clipped), the seed,
    ``precision`` ("bf16" autocasts the forward pass, weights and optimizer state stay fp32) and what a
    non-finite loss or gradient norm does (``nan_policy`` "stop" raises, "skip" drops that update).

    ``z_loss_multiplier`` m (None: no z-loss) adds OLMo-core's z-loss to a next-token objective (pretraining,
    SFT): ``m * logsumexp(logits)²`` summed over the label tokens, divided as the loss is (by the global batch's
    label tokens, or rows for SFT's "sum"); OLMo 2 used 1e-5. The step's ``loss`` is then cross entropy + z-loss
    (what the gradients follow), logged beside ``ce_loss`` and ``z_loss``. DPO refuses it."""

    micro_batch_size: int
    optimizer: OptimizerConfig = OptimizerConfig()
    max_grad_norm: float | None = 1.0
    seed: int = 6198
    precision: Precision = "fp32"
    nan_policy: NanPolicy = "stop"
    z_loss_multiplier: float | None = None

    WHERE = "train"

    def check(self) -> None:
        require(self.micro_batch_size > 0, f"{self.WHERE}.micro_batch_size", "a positive integer",
                self.micro_batch_size)
        require(self.max_grad_norm is None or self.max_grad_norm > 0, f"{self.WHERE}.max_grad_norm",
                "a positive number or null", self.max_grad_norm)
        require(self.z_loss_multiplier is None or self.z_loss_multiplier >= 0, f"{self.WHERE}.z_loss_multiplier",
                "a number >= 0 or null", self.z_loss_multiplier)

    def update_settings(self) -> dict[str, Any]:
        """The fields of :class:`UpdateConfig`, to build a :class:`TrainConfig` with."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(UpdateConfig)}


@dataclass(frozen=True, kw_only=True)
class TrainConfig(UpdateConfig):
    """How the trainer trains: :class:`UpdateConfig`, and ``max_steps`` global batches of
    ``global_batch_size`` instances with the LR of ``schedule``."""

    global_batch_size: int
    max_steps: int
    schedule: LRSchedule

    def check(self) -> None:
        super().check()
        for key in ("global_batch_size", "max_steps"):
            require(getattr(self, key) > 0, f"{self.WHERE}.{key}", "a positive integer", getattr(self, key))
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"{self.WHERE}: global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """OLMo's AdamW (decay on Linear weights, and the embedding and norm weights as ``config.optimizer`` says)
    with the config's hyperparameters."""
    opt = config.optimizer
    return build_adamw(model, lr=config.schedule.peak_lr, betas=opt.betas, eps=opt.eps,
                       weight_decay=opt.weight_decay, decay_embeddings=opt.decay_embeddings,
                       decay_norms=opt.decay_norms)


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


class Callback:
    """What a callback of :class:`Trainer` may hook into; every hook does nothing by default.

    Callbacks are called in the order they are given: one that adds metrics (``SpeedMonitor``,
    ``InLoopEvaluation``) comes before those that report them, and ``Checkpointer`` last.
    """

    def on_start(self, trainer: Trainer) -> None:
        """Before the first step (``Checkpointer`` resumes here: ``trainer.state`` may change)."""

    def before_update(self, trainer: Trainer, loss: float, grad_norm: float, where: str) -> bool:
        """Whether to apply this step's update, given its loss and gradient norm (False: skip it)."""
        return True

    def on_step(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After every optimizer step; ``metrics`` is the step's record in ``trainer.state.history`` (a
        callback may add to it)."""

    def on_end(self, trainer: Trainer, failed: bool) -> None:
        """After the last step, or when training failed (``failed``)."""


class Trainer:
    """Trains ``model`` on ``batches`` (``batches(k)``: global batch ``k`` of the data order, with
    ``config.global_batch_size`` rows) with ``objective`` until ``config.max_steps`` optimizer steps are done.

    ``optimizer`` defaults to OLMo's AdamW for ``config``; ``start_state`` lets a run begin mid-order (an
    anneal: ``TrainState(data_step=..., tokens_seen=...)``). ``config.z_loss_multiplier`` is given to the
    objective (``objectives.with_z_loss``). Under ``torch.distributed`` every rank makes a Trainer and calls
    ``fit``.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: BatchSource,
        config: TrainConfig,
        objective: Objective | None = None,
        callbacks: Sequence[Callback] = (),
        optimizer: torch.optim.Optimizer | None = None,
        start_state: TrainState | None = None,
    ) -> None:
        self.model = model
        self.batches = batches
        self.config = config
        self.objective = with_z_loss(NextTokenLoss() if objective is None else objective, config.z_loss_multiplier)
        self.callbacks = list(callbacks)
        self.optimizer = build_optimizer(model, config) if optimizer is None else optimizer
        self.state = TrainState.from_dict(start_state.to_dict()) if start_state is not None else TrainState()
        self.world_size, self.rank = distributed_world()
        if config.global_batch_size % self.world_size:
            raise ValueError(
                f"global_batch_size {config.global_batch_size} is not divisible by world size {self.world_size}"
            )

    def is_last(self, step: int) -> bool:
        return step == self.config.max_steps

    def fit(self) -> TrainState:
        """Train until ``config.max_steps``; return the final state."""
        torch.manual_seed(self.config.seed)  # a resumed run's callbacks restore the RNG state it had
        failed = True
        try:
            for callback in self.callbacks:
                callback.on_start(self)
            self.model.train()
            while self.state.step < self.config.max_steps:
                metrics = self._step()
                self.state.history.append(metrics)
                for callback in self.callbacks:
                    callback.on_step(self, metrics)
            failed = False
        finally:
            for callback in self.callbacks:
                callback.on_end(self, failed)
        return self.state

    def _step(self) -> dict[str, Any]:
        """One optimizer step on the next global batch; the step's metrics."""
        state = self.state
        started = time.perf_counter()
        step = state.step + 1
        where = f"step {step} (data step {state.data_step})"
        batch = self._fetch_batch(state.data_step, where)
        lr = self.config.schedule.lr_at(step)
        outcome = self._update(batch, lr, where)
        seconds = time.perf_counter() - started
        tokens = batch_tokens(batch)
        data_step = state.data_step
        state.step, state.data_step, state.tokens_seen = step, data_step + 1, state.tokens_seen + tokens
        state.skipped_steps += int(outcome.get("skipped", False))
        metrics = {
            "step": step, "data_step": data_step, "lr": lr, "tokens": tokens, "tokens_seen": state.tokens_seen,
            "step_seconds": seconds, "tokens_per_second": tokens / seconds, **outcome,
        }
        if "batch_hash" in batch:
            metrics["batch_hash"] = batch["batch_hash"]
        return metrics

    def _fetch_batch(self, data_step: int, where: str) -> Batch:
        batch = as_batch(self.batches(data_step), where)
        if batch_rows(batch) != self.config.global_batch_size:
            raise ValueError(f"{where}: expected {self.config.global_batch_size} instances, got {batch_rows(batch)}")
        return batch

    def _update(self, batch: Batch, lr: float, where: str) -> dict[str, Any]:
        """Accumulate this rank's gradients of the global batch, clip, and step the optimizer (unless a
        callback vetoes it); loss, grad_norm, the objective's metrics, and ``skipped`` when vetoed."""
        units = self.objective.units(batch)
        if units <= 0:
            raise ValueError(f"{where}: the batch has nothing to train on (every label is {IGNORE_INDEX})")
        world_size, rank = self.world_size, self.rank
        device = next(self.model.parameters()).device
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rows = map_tensors(batch, lambda t: t[rank::world_size])
        local = map_tensors(rows, lambda t: t.to(device))
        loss_sum, metric_sums = self._accumulate_gradients(local, units)
        if world_size > 1:
            metric_sums = _all_reduce({"loss": loss_sum, **metric_sums})
            loss_sum = metric_sums.pop("loss")
        loss = float(loss_sum) / units
        grad_norm = _grad_norm(self.model, self.config.max_grad_norm)
        apply = [callback.before_update(self, loss, grad_norm, where) for callback in self.callbacks]
        if all(apply):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {"loss": loss, "grad_norm": grad_norm, **{k: float(v) / units for k, v in metric_sums.items()}}
        if "batch_hash" in batch and "input_ids" in batch:
            metrics["rank_batch_hashes"] = _rank_batch_hashes(rows["input_ids"], world_size)
        return metrics if all(apply) else {**metrics, "skipped": True}

    def _accumulate_gradients(self, batch: Batch, units: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Backward every micro-batch of this rank's ``batch``; return summed loss and metrics (detached).

        Each rank's loss is scaled by the world size because data-parallel wrappers (FSDP) average gradients.
        Under FSDP2 gradients are reduced across ranks once, in the last micro-batch's backward.
        """
        model, config = self.model, self.config
        device = next(model.parameters()).device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        metric_sums: dict[str, torch.Tensor] = {}
        count = math.ceil(batch_rows(batch) / config.micro_batch_size)
        for index, micro in enumerate(micro_batches(batch, config.micro_batch_size)):
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce gradients once, after the last one
                model.set_requires_gradient_sync(index == count - 1)
            with autocast(device, config.precision):
                loss, metrics = self.objective(model, micro)
            (loss * (self.world_size / units)).backward()
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


def _rank_batch_hashes(rank_tokens: torch.Tensor, world_size: int) -> list[str]:
    """``batch_hash`` of the rows each rank trained on, gathered from every rank (in rank order)."""
    local = batch_hash(rank_tokens.cpu().numpy())
    if world_size == 1:
        return [local]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, local)
    return gathered
