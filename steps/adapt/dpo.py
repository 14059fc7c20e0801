"""Direct preference optimisation on the shared trainer.

Three losses (``loss_type``), each per pair, with rewards ``r = β·(log π − log πref)``:

- ``"dpo"``: ``−log σ(r(c) − r(r))`` with log-probs *summed* over the response tokens (the DPO paper;
  open-instruct's ``dpo``).
- ``"dpo_norm"``: the same loss on *length-normalized* log-probs: policy and reference log-probs are each
  divided by the sequence's number of response tokens (open-instruct's ``dpo_norm``; TRL's ``sigmoid_norm``).
- ``"simpo"``: SimPO, reference-free: ``r = β·(log π)/|y|`` and the loss ``−log σ(r(c) − r(r) − γ)`` with
  ``γ = gamma_beta_ratio·β``.

``label_smoothing`` ε turns each into the conservative loss ``(1−ε)·ℓ(z) + ε·ℓ(−z)`` of the same logit z.

The reference model is the policy before DPO (the SFT model); its *summed* log-probs are computed once, before
training (``with_reference_logprobs``, in every worker with the model it is about to train), and travel in the
batches, so no second model is held in memory and none is run per step. The number of response tokens is a
function of a pair's labels, so either normalization derives from the same cached sums. SimPO needs no
reference, and ``PreferenceData`` computes none for it. ``DPOLoss`` is the trainer's objective; it averages over
the pairs of each global batch.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from steps.train.objectives import IGNORE_INDEX, label_logprobs
from steps.train.parallel import reshard
from steps.train.trainer import autocast

from .batching import ExampleBatches, ExampleData
from .instruct_data import RowReport
from .sft import collate_chats, has_labels
from .templates import TULU, ChatTemplate, Rendered, TemplateRowError, check_messages

LOSS_TYPES = ("dpo", "dpo_norm", "simpo")
LENGTH_NORMALIZED = ("dpo_norm", "simpo")
REFERENCE_FREE = ("simpo",)


def check_loss_options(loss_type: str, beta: float, label_smoothing: float, gamma_beta_ratio: float) -> None:
    """Raise a one-line ``ValueError`` naming the first bad option."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type: expected one of {', '.join(map(repr, LOSS_TYPES))}, got {loss_type!r}")
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"beta: expected a positive number, got {beta!r}")
    if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 0.5):
        raise ValueError(f"label_smoothing: expected a number in [0, 0.5), got {label_smoothing!r}")
    if not (isinstance(gamma_beta_ratio, (int, float)) and gamma_beta_ratio >= 0):
        raise ValueError(f"gamma_beta_ratio: expected a number >= 0, got {gamma_beta_ratio!r}")


def response_token_count(labels: Sequence[int]) -> int:
    """How many tokens of a rendered sequence are scored: labelled positions after the first (nothing predicts
    position 0), the count ``sequence_logprobs`` sums over."""
    return sum(label != IGNORE_INDEX for label in labels[1:])


@dataclass(frozen=True)
class EncodedPair:
    """A rendered preference pair and, once computed, the reference model's summed log-probs.

    The sums are cached rather than means: with the response token counts (``chosen_tokens``,
    ``rejected_tokens``, from the labels) they give either normalization."""

    chosen: Rendered
    rejected: Rendered
    reference_chosen_logp: float | None = None
    reference_rejected_logp: float | None = None

    @property
    def chosen_tokens(self) -> int:
        return response_token_count(self.chosen[1])

    @property
    def rejected_tokens(self) -> int:
        return response_token_count(self.rejected[1])


def encode_preference_pairs(
    pairs: Sequence[dict[str, Any]], tokenizer: Tokenizer, eos_token_id: int, max_length: int,
    *, template: ChatTemplate | None = None, report: RowReport | None = None,
) -> tuple[list[EncodedPair], dict[str, int]]:
    """Render prompt+chosen and prompt+rejected in ``template`` (tulu by default), cut to ``max_length``; a pair
    where either side keeps no reply token, or whose spans the template cannot derive, is dropped and counted
    (in ``report`` too, with its file:line, when given). Returns the pairs and ``{"pairs", "encoded",
    "dropped_<reason>"}``."""
    template = template or TULU
    encoded: list[EncodedPair] = []
    counts: Counter = Counter(pairs=len(pairs))
    for pair in pairs:
        where = pair.get("where") or f"pair {pair.get('id')!r}"
        check_messages(pair.get("prompt"), f"{where}: field 'prompt'", needs_assistant=False)
        for key in ("chosen", "rejected"):
            check_messages(pair.get(key), f"{where}: field {key!r}")
        try:
            chosen, rejected = (template.render(pair["prompt"] + pair[key], tokenizer, eos_token_id, max_length)
                                for key in ("chosen", "rejected"))
        except TemplateRowError as error:
            reason, detail = error.reason, str(error)
        else:
            if has_labels(chosen) and has_labels(rejected):
                encoded.append(EncodedPair(chosen, rejected))
                continue
            reason, detail = "no_response_tokens_within_max_length", f"no reply token within {max_length} tokens"
        counts[f"dropped_{reason}"] += 1
        if report is not None:
            report.drop(reason, where, detail, was_kept=True)
    counts["encoded"] = len(encoded)
    return encoded, dict(counts)


def response_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """The number of scored label tokens of each row of ``labels`` [B, T] (positions 1.., not ``IGNORE_INDEX``),
    shape [B], fp32."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=-1).float()


def sequence_logprobs(
    model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Summed log p of each row's label tokens (positions not ``IGNORE_INDEX``), shape [B], fp32; with
    ``average`` the mean over those tokens instead (the sum ÷ ``response_token_counts``)."""
    summed = label_logprobs(model(input_ids), labels).sum(dim=-1)
    return summed / response_token_counts(labels).clamp(min=1) if average else summed


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor | None = None,
    reference_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    reduction: str = "mean",
    *,
    loss_type: str = "dpo",
    label_smoothing: float = 0.0,
    gamma_beta_ratio: float = 0.3,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The preference loss over pairs and its diagnostics, both reduced by ``reduction`` ("mean" or "sum").

    Log-probs (policy and reference) are the *summed* response log-probs; ``"dpo_norm"`` and ``"simpo"`` divide
    them by ``chosen_tokens`` / ``rejected_tokens`` (the response token counts, [B]). ``"simpo"`` takes no
    reference. Rewards are ``β·(log π − log πref)`` (``β·log π`` for SimPO), on the normalized log-probs where the
    loss normalizes; accuracy is the share of pairs whose chosen reward is higher; margin is chosen reward −
    rejected reward (for SimPO without γ).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    check_loss_options(loss_type, beta, label_smoothing, gamma_beta_ratio)
    references = (reference_chosen_logps, reference_rejected_logps)
    if loss_type in REFERENCE_FREE:
        if references != (None, None):
            raise ValueError(f"reference_chosen_logps: {loss_type!r} is reference-free, expected None")
        reference_chosen_logps = reference_rejected_logps = None
    elif None in references:
        raise ValueError(f"reference_chosen_logps: {loss_type!r} needs both reference log-probs")
    if loss_type in LENGTH_NORMALIZED:
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError(f"chosen_tokens: {loss_type!r} needs the response token counts of both sides")
        policy_chosen_logps = policy_chosen_logps / chosen_tokens
        policy_rejected_logps = policy_rejected_logps / rejected_tokens
        if reference_chosen_logps is not None:
            reference_chosen_logps = reference_chosen_logps / chosen_tokens
            reference_rejected_logps = reference_rejected_logps / rejected_tokens
    if loss_type in REFERENCE_FREE:
        chosen_rewards = beta * policy_chosen_logps
        rejected_rewards = beta * policy_rejected_logps
    else:
        chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
        rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    margins = chosen_rewards - rejected_rewards
    logits = margins - gamma_beta_ratio * beta if loss_type == "simpo" else margins
    losses = -F.logsigmoid(logits)
    if label_smoothing:  # only then, so that the default loss is computed exactly as before
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    reduce = torch.mean if reduction == "mean" else torch.sum
    metrics = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/accuracies": (margins > 0).float(),
        "rewards/margins": margins,
    }
    return reduce(losses), {key: reduce(value.detach()) for key, value in metrics.items()}


def collate_pairs(items: list[EncodedPair], pad_token_id: int) -> dict[str, Any]:
    """Chosen and rejected conversations padded separately, plus the reference log-probs when known."""
    batch = {}
    for side in ("chosen", "rejected"):
        collated = collate_chats([getattr(item, side) for item in items], pad_token_id)
        batch[f"{side}_input_ids"], batch[f"{side}_labels"] = collated["input_ids"], collated["labels"]
        references = [getattr(item, f"reference_{side}_logp") for item in items]
        if None not in references:
            batch[f"reference_{side}_logps"] = torch.tensor(references, dtype=torch.float32)
    return batch


@torch.no_grad()
def with_reference_logprobs(
    model: nn.Module, pairs: Sequence[EncodedPair], pad_token_id: int, batch_size: int, precision: str = "fp32"
) -> list[EncodedPair]:
    """``pairs`` with the summed response log-probs of ``model`` (the frozen reference) filled in."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completed: list[EncodedPair] = []
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start:start + batch_size])
        batch = collate_pairs(chunk, pad_token_id)
        with autocast(device, precision):
            chosen, rejected = (
                sequence_logprobs(model, batch[f"{side}_input_ids"].to(device), batch[f"{side}_labels"].to(device))
                for side in ("chosen", "rejected")
            )
        completed.extend(
            EncodedPair(pair.chosen, pair.rejected, float(c), float(r))
            for pair, c, r in zip(chunk, chosen.tolist(), rejected.tolist())
        )
    reshard(model)
    model.train(was_training)
    return completed


REFERENCE_FILE = "reference_logprobs.safetensors"


def pairs_digest(pairs: Sequence[EncodedPair]) -> str:
    """sha256 of the pairs' token ids and labels, in order: what reference log-probs were computed for."""
    digest = hashlib.sha256()
    for pair in pairs:
        for ids, labels in (pair.chosen, pair.rejected):
            digest.update(json.dumps([ids, labels], separators=(",", ":")).encode())
    return digest.hexdigest()


def write_reference_logprobs(directory: Path, pairs: Sequence[EncodedPair]) -> str:
    """The pairs' reference log-probs (fp64, in pair order) and the digest of the pairs, as safetensors; returns
    the digest."""
    tensors = {side: torch.tensor([getattr(pair, f"reference_{side}_logp") for pair in pairs], dtype=torch.float64)
               for side in ("chosen", "rejected")}
    digest = pairs_digest(pairs)
    safetensors.torch.save_file(tensors, str(directory / REFERENCE_FILE), metadata={"pairs_digest": digest})
    return digest


def read_reference_logprobs(directory: Path, pairs: Sequence[EncodedPair], where: str) -> list[EncodedPair]:
    """``pairs`` with the reference log-probs stored in ``directory``; they must have been computed for exactly
    these pairs (the same data, tokenizer, ``max_length`` and template)."""
    path = directory / REFERENCE_FILE
    with safetensors.safe_open(str(path), framework="pt") as stored:
        if stored.metadata().get("pairs_digest") != pairs_digest(pairs):
            raise ValueError(f"{where}: its log-probs were computed for other pairs than these {len(pairs)}; give "
                             f"reference_logprobs the DPO step's data, tokenizer, max_length and template")
        chosen, rejected = (stored.get_tensor(side).tolist() for side in ("chosen", "rejected"))
    return [replace(pair, reference_chosen_logp=c, reference_rejected_logp=r)
            for pair, c, r in zip(pairs, chosen, rejected)]


class DPOLoss:
    """The trainer objective for DPO batches (see ``collate_pairs``); its unit is one pair."""

    def __init__(
        self, beta: float = 0.1, loss_type: str = "dpo", label_smoothing: float = 0.0, gamma_beta_ratio: float = 0.3
    ) -> None:
        check_loss_options(loss_type, beta, label_smoothing, gamma_beta_ratio)
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.gamma_beta_ratio = gamma_beta_ratio

    def units(self, batch: dict[str, Any]) -> int:
        return batch["chosen_input_ids"].shape[0]

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen = sequence_logprobs(model, batch["chosen_input_ids"], batch["chosen_labels"])
        rejected = sequence_logprobs(model, batch["rejected_input_ids"], batch["rejected_labels"])
        references = (None, None)
        if self.loss_type not in REFERENCE_FREE:
            references = (batch["reference_chosen_logps"], batch["reference_rejected_logps"])
        tokens = {}
        if self.loss_type in LENGTH_NORMALIZED:
            tokens = {f"{side}_tokens": response_token_counts(batch[f"{side}_labels"]).clamp(min=1)
                      for side in ("chosen", "rejected")}
        return dpo_loss(chosen, rejected, *references, self.beta, reduction="sum", loss_type=self.loss_type,
                        label_smoothing=self.label_smoothing, gamma_beta_ratio=self.gamma_beta_ratio, **tokens)


@dataclass(frozen=True)
class PreferenceData(ExampleData[EncodedPair]):
    """A DPO step's training data: encoded pairs with their reference log-probs (the ``reference_logprobs``
    step's; when the pairs come without them, the model computes them before its first update,
    ``reference_batch_size`` pairs at a time; none for the reference-free ``"simpo"``); the loss
    ``loss_type`` with ``beta``, ``label_smoothing`` and (SimPO) ``gamma_beta_ratio``."""

    beta: float = 0.1
    reference_batch_size: int = 1
    loss_type: str = "dpo"
    label_smoothing: float = 0.0
    gamma_beta_ratio: float = 0.3

    def __post_init__(self) -> None:
        check_loss_options(self.loss_type, self.beta, self.label_smoothing, self.gamma_beta_ratio)

    def objective(self) -> DPOLoss:
        return DPOLoss(self.beta, self.loss_type, self.label_smoothing, self.gamma_beta_ratio)

    def batches(self, model: nn.Module, precision: str) -> ExampleBatches[EncodedPair]:
        if self.loss_type in REFERENCE_FREE or all(item.reference_chosen_logp is not None for item in self.items):
            return self.example_batches(self.items)
        return self.example_batches(
            with_reference_logprobs(model, self.items, self.pad_token_id, self.reference_batch_size, precision)
        )

    def collate(self, items: list[EncodedPair]) -> dict[str, Any]:
        return collate_pairs(items, self.pad_token_id)
