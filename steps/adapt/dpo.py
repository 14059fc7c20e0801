"""Direct preference optimisation on the shared trainer.

Loss per pair: ``−log σ(β·((log πθ(c) − log πθ(r)) − (log πref(c) − log πref(r))))`` with log-probs
summed over the response tokens. The reference model is the policy before DPO (the SFT model); its
log-probs are computed once, before training (``with_reference_logprobs``, in every worker with the model
it is about to train), and travel in the batches, so no second model is held in memory and none is run per
step. ``DPOLoss`` is the trainer's objective; it averages over the pairs of each global batch.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from steps.train.objectives import label_logprobs
from steps.train.parallel import reshard
from steps.train.trainer import autocast

from .batching import ExampleBatches, ExampleData
from .chat import Rendered, check_messages, render_chat
from .sft import collate_chats, has_labels


@dataclass(frozen=True)
class EncodedPair:
    """A rendered preference pair and, once computed, the reference model's summed log-probs."""

    chosen: Rendered
    rejected: Rendered
    reference_chosen_logp: float | None = None
    reference_rejected_logp: float | None = None


def encode_preference_pairs(
    pairs: Sequence[dict[str, Any]], tokenizer: Tokenizer, eos_token_id: int, max_length: int
) -> tuple[list[EncodedPair], dict[str, int]]:
    """Render prompt+chosen and prompt+rejected; drop (and count) pairs where either loses its response."""
    encoded: list[EncodedPair] = []
    counts: Counter = Counter(pairs=len(pairs))
    for pair in pairs:
        where = f"pair {pair.get('id')!r}"
        check_messages(pair.get("prompt"), f"{where}: field 'prompt'", needs_assistant=False)
        for key in ("chosen", "rejected"):
            check_messages(pair.get(key), f"{where}: field {key!r}")
        chosen, rejected = (
            render_chat(pair["prompt"] + pair[key], tokenizer, eos_token_id, max_length)
            for key in ("chosen", "rejected")
        )
        if not (has_labels(chosen) and has_labels(rejected)):
            counts["dropped_no_response_tokens_within_max_length"] += 1
            continue
        encoded.append(EncodedPair(chosen, rejected))
    counts["encoded"] = len(encoded)
    return encoded, dict(counts)


def sequence_logprobs(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log p of each row's label tokens (positions not ``IGNORE_INDEX``), shape [B], fp32."""
    return label_logprobs(model(input_ids), labels).sum(dim=-1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO loss over pairs and its diagnostics, both reduced by ``reduction`` ("mean" or "sum").

    Rewards are ``β·(log π − log πref)``; accuracy is the share of pairs whose chosen reward is higher;
    margin is chosen reward − rejected reward.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    margins = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(margins)
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


class DPOLoss:
    """The trainer objective for DPO batches (see ``collate_pairs``); its unit is one pair."""

    def __init__(self, beta: float = 0.1) -> None:
        if not beta > 0:
            raise ValueError(f"beta: expected a positive number, got {beta}")
        self.beta = beta

    def units(self, batch: dict[str, Any]) -> int:
        return batch["chosen_input_ids"].shape[0]

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen = sequence_logprobs(model, batch["chosen_input_ids"], batch["chosen_labels"])
        rejected = sequence_logprobs(model, batch["rejected_input_ids"], batch["rejected_labels"])
        return dpo_loss(chosen, rejected, batch["reference_chosen_logps"], batch["reference_rejected_logps"],
                        self.beta, reduction="sum")


@dataclass(frozen=True)
class PreferenceData(ExampleData[EncodedPair]):
    """A DPO step's training data: encoded pairs, their reference log-probs computed by the model before its
    first update (``reference_batch_size`` pairs at a time); the DPO loss with ``beta``."""

    beta: float = 0.1
    reference_batch_size: int = 1

    def objective(self) -> DPOLoss:
        return DPOLoss(self.beta)

    def batches(self, model: nn.Module, precision: str) -> ExampleBatches[EncodedPair]:
        return self.example_batches(
            with_reference_logprobs(model, self.items, self.pad_token_id, self.reference_batch_size, precision)
        )

    def collate(self, items: list[EncodedPair]) -> dict[str, Any]:
        return collate_pairs(items, self.pad_token_id)
