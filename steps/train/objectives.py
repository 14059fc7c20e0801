"""Training objectives: losses the trainer accumulates exactly over micro-batches and ranks.

A *batch* is a dict of tensors with a leading instance dimension; ``labels`` (aligned with
``input_ids``, ``IGNORE_INDEX`` = not trained on) default to ``input_ids``.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from olmo_model.loss import IGNORE_INDEX

Batch = dict[str, Any]


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


class NextTokenLoss:
    """Next-token cross entropy summed over label tokens (``IGNORE_INDEX`` positions excluded).

    The model computes it (``Olmo(input_ids, targets)``: chunk by chunk, never the whole logits, and inside
    the model's forward, where FSDP has gathered the output matrix).
    """

    def units(self, batch: Batch) -> int:
        return int((target_labels(batch) != IGNORE_INDEX).sum())

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch.get("labels", batch["input_ids"])
        return model(batch["input_ids"], targets=next_token_targets(labels)), {}
