"""Training objectives: losses the trainer accumulates exactly over micro-batches and ranks.

A *batch* is a dict of tensors with a leading instance dimension; ``labels`` (aligned with
``input_ids``, ``IGNORE_INDEX`` = not trained on) default to ``input_ids``. A batch of packed rows (several
sequences a row, as SFT's packing makes) also has ``position_ids`` (each token's position in its own sequence)
and ``segment_ids`` (which sequence of the row a token belongs to; a token attends to the earlier tokens of its
own segment only).
"""
from __future__ import annotations

import copy
from typing import Any, Literal, Protocol, get_args

import torch
import torch.nn.functional as F
from torch import nn

from olmo_model.config import ConfigError
from olmo_model.loss import IGNORE_INDEX

Batch = dict[str, Any]
LossReduction = Literal["mean", "sum"]
LOSS_REDUCTIONS: tuple[str, ...] = get_args(LossReduction)


class Objective(Protocol):
    """A loss the trainer can accumulate exactly over micro-batches and ranks."""

    def units(self, batch: Batch) -> int:
        """How many units (label tokens, pairs...) the loss of ``batch`` is averaged over."""

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss *summed* over the units of ``batch``, and extra metrics summed the same way."""


def target_labels(batch: Batch) -> torch.Tensor:
    """Labels of the next-token predictions: ``labels`` (or ``input_ids``) without the first position."""
    return batch.get("labels", batch["input_ids"])[:, 1:]


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """The label each position [B, T] predicts: ``labels`` shifted left by one, the last position ``IGNORE_INDEX``."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[:, t+1] | tokens ≤ t) for each position [B, T-1], in fp32; 0 where ignored."""
    # Every position's logits against the next label, over contiguous [B·T, V] rows: no [B, V, T]
    # transpose and no slice of the logits, whose backward would fill and copy them.
    targets = next_token_targets(labels)
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return -flat.view(targets.shape)[:, :-1]


def segment_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, T, T] True where query ``t`` may attend key ``s``: ``s <= t`` and both in the same segment."""
    seq_len = segment_ids.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=segment_ids.device).tril()
    return (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)) & causal


class NextTokenLoss:
    """Next-token cross entropy summed over label tokens (``IGNORE_INDEX`` positions excluded).

    The model computes it (``Olmo(input_ids, targets)``: chunk by chunk, never the whole logits, and inside
    the model's forward, where FSDP has gathered the output matrix). A batch of packed rows goes in with its
    ``position_ids`` and the block-diagonal causal mask of its ``segment_ids``
    (``Olmo(input_ids, targets, position_ids=..., attention_mask=...)``).

    ``reduction`` says what the trainer divides the summed loss of a global batch by (``units``):

    ``"mean"``
        its label tokens: the loss is the token mean over the global batch.
    ``"sum"``
        its rows (instances). This is open-instruct's ``--reduce_loss sum`` (``open_instruct/finetune.py``,
        added in 4cf9067d4, removed in bb98dbcac, Sep 2025): each forward pass took
        ``CrossEntropyLoss(reduction="sum")`` over its label tokens, ``accelerator.backward`` divided that by
        ``gradient_accumulation_steps`` and data-parallel training averaged gradients over the processes, so an
        update followed Σ(label-token losses of the global batch) / (gradient_accumulation_steps ×
        num_processes), the number of forward passes per update, i.e. global batch / per_device_train_batch_size.
        Every open-instruct recipe with ``sum`` ran one sequence per forward pass (per_device_train_batch_size 1),
        which makes that the number of sequences of the global batch; with its packing (padding-free collation)
        a forward pass is one row of concatenated conversations. So the divisor here is the rows of the global
        batch: conversations unpacked, packed rows packed. (Unlike open-instruct's with larger per-device batches,
        it does not change with the micro-batch size.)

    With ``z_loss_multiplier`` m the loss adds the z-loss ``m * logsumexp(logits)²`` of the same label tokens
    (``olmo_model.loss``, as OLMo-core; divided by the same ``units``), and the metrics carry ``z_loss`` and
    ``ce_loss`` (the cross entropy alone), summed the same way, so that the trainer logs them beside ``loss``.
    """

    def __init__(self, reduction: str = "mean", z_loss_multiplier: float | None = None) -> None:
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction: expected one of {LOSS_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.z_loss_multiplier = z_loss_multiplier

    def with_z_loss(self, multiplier: float) -> NextTokenLoss:
        """This objective (a copy) with ``z_loss_multiplier``."""
        objective = copy.copy(self)
        objective.z_loss_multiplier = multiplier
        return objective

    def units(self, batch: Batch) -> int:
        tokens = int((target_labels(batch) != IGNORE_INDEX).sum())
        if self.reduction == "sum":
            return int(batch["input_ids"].shape[0]) if tokens else 0  # 0: nothing to train on, as for "mean"
        return tokens

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch.get("labels", batch["input_ids"])
        arguments: dict[str, Any] = {"targets": next_token_targets(labels)}
        if "segment_ids" in batch:
            mask = segment_attention_mask(batch["segment_ids"])
            arguments.update(position_ids=batch["position_ids"], attention_mask=mask)
        if self.z_loss_multiplier is None:
            return model(batch["input_ids"], **arguments), {}
        loss, z_loss = model(batch["input_ids"], z_loss_multiplier=self.z_loss_multiplier, **arguments)
        return loss, {"ce_loss": loss.detach() - z_loss, "z_loss": z_loss}


def with_z_loss(objective: Objective, multiplier: float | None) -> Objective:
    """``objective`` with the z-loss of ``train.z_loss_multiplier`` (unchanged when it is None); only a
    next-token objective (one with ``with_z_loss``: pretraining, SFT) has one, any other is refused."""
    if multiplier is None:
        return objective
    if not hasattr(objective, "with_z_loss"):
        raise ConfigError(
            f"train.z_loss_multiplier: the objective {type(objective).__name__} has no z-loss; it applies to "
            "next-token objectives (pretraining, SFT) only, leave it null"
        )
    return objective.with_z_loss(multiplier)
