"""Log-likelihood of continuations given contexts, batched, for rank-classification evaluation.

The model is anything with ``hidden_states(input_ids) -> [B, T, d]``, ``project(hidden) -> logits``
and ``config.max_sequence_length`` / ``config.eos_token_id`` (``olmo_model.Olmo`` has them).
Logits are computed only at the positions that predict scored tokens, which skips most of the
vocabulary matmul for short continuations.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

Tokenization = Literal["separate", "joint"]
POSITIONS_PER_PROJECTION = 1024  # scored positions projected to the vocabulary at once (bounds memory)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, from a ``tokenizers.Tokenizer`` or an HF tokenizer."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(encoded, "ids", encoded))


def prepare_model(
    model: torch.nn.Module, device: str | torch.device | None
) -> tuple[torch.nn.Module, torch.device]:
    """The model in eval mode and the device its inputs go to.

    With a ``device`` the model is moved there (in fp32 on CPU); with ``None`` it stays where and as
    it is (a model being trained, sharded or not) and its inputs go where its parameters are.
    """
    if device is None:
        return model.eval(), next(model.parameters()).device
    device = torch.device(device)
    model = model.to(device=device, dtype=torch.float32) if device.type == "cpu" else model.to(device)
    return model.eval(), device


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under each row of logits, computed in fp32."""
    return F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sum_target_logprobs(
    model: torch.nn.Module,
    requests: Sequence[tuple[Sequence[int], int]],
    device: str | torch.device,
    batch_size: int,
) -> list[float]:
    """For each ``(tokens, first_scored)``, Σ log p(tokens[i] | tokens[:i]) for i ≥ first_scored ≥ 1.

    Requests are run longest first in batches padded to the batch's longest input; the model sees
    ``tokens[:-1]`` and only the scored positions go through ``project``.
    """
    device = torch.device(device)
    order = sorted(range(len(requests)), key=lambda i: len(requests[i][0]), reverse=True)
    sums = [0.0] * len(requests)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        input_ids = torch.zeros(len(batch), len(requests[batch[0]][0]) - 1, dtype=torch.long)
        rows, positions, targets = [], [], []
        for row, index in enumerate(batch):
            tokens, first_scored = requests[index]
            if not 1 <= first_scored < len(tokens):
                raise ValueError(f"request {index}: first scored token {first_scored} not in 1..{len(tokens) - 1}")
            input_ids[row, :len(tokens) - 1] = torch.as_tensor(tokens[:-1])
            rows.extend([row] * (len(tokens) - first_scored))
            positions.extend(range(first_scored - 1, len(tokens) - 1))
            targets.extend(tokens[first_scored:])
        rows_t = torch.tensor(rows, device=device)
        hidden = model.hidden_states(input_ids.to(device))[rows_t, torch.tensor(positions, device=device)]
        targets_t = torch.tensor(targets, device=device)
        token_logprobs = torch.cat([
            target_logprobs(model.project(hidden_chunk), target_chunk)
            for hidden_chunk, target_chunk in zip(
                hidden.split(POSITIONS_PER_PROJECTION), targets_t.split(POSITIONS_PER_PROJECTION)
            )
        ])
        per_row = torch.zeros(len(batch), dtype=torch.float64, device=device)
        per_row.index_add_(0, rows_t, token_logprobs.double())
        for row_sum, index in zip(per_row.tolist(), batch):
            sums[index] = row_sum
    return sums


class LogLikelihoodScorer:
    """Scores (context, continuation) pairs by the summed log-probability of the continuation tokens.

    ``tokenization="separate"`` (Catwalk / OLMo) encodes context and continuation on their own and
    concatenates the ids; ``"joint"`` (lm-eval-harness) encodes ``context + continuation`` once and
    splits at the length of the encoded context, after moving the context's trailing whitespace
    into the continuation. Contexts are cut from the left to fit the model's sequence length; an
    empty context becomes the EOS token. Identical pairs are scored once. ``device`` as in
    :func:`prepare_model`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        device: str | torch.device | None = "cpu",
        batch_size: int = 16,
        tokenization: Tokenization = "separate",
        max_length: int | None = None,
    ):
        if tokenization not in ("separate", "joint"):
            raise ValueError(f"tokenization must be 'separate' or 'joint', got {tokenization!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.device = prepare_model(model, device)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.tokenization = tokenization
        self.max_length = max_length or model.config.max_sequence_length
        self.eos_token_id = model.config.eos_token_id

    def tokenize(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids, before truncation."""
        if self.tokenization == "joint":
            stripped = context.rstrip()
            continuation = context[len(stripped):] + continuation
            context_ids = encode(self.tokenizer, stripped)
            continuation_ids = encode(self.tokenizer, stripped + continuation)[len(context_ids):]
        else:
            context_ids = encode(self.tokenizer, context)
            continuation_ids = encode(self.tokenizer, continuation)
        return context_ids or [self.eos_token_id], continuation_ids

    def request(self, context: str, continuation: str) -> tuple[list[int], int]:
        """The token sequence to run and the index of its first continuation token."""
        context_ids, continuation_ids = self.tokenize(context, continuation)
        if not continuation_ids:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        if len(continuation_ids) > self.max_length:
            raise ValueError(
                f"continuation of {len(continuation_ids)} tokens does not fit the model's "
                f"{self.max_length}-token window: {continuation[:80]!r}..."
            )
        context_ids = context_ids[-(self.max_length + 1 - len(continuation_ids)):]
        return context_ids + continuation_ids, len(context_ids)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """``(Σ log p(continuation tokens | context), number of continuation tokens)`` for each pair."""
        pairs = [(context, continuation) for context, continuation in pairs]
        unique = list(dict.fromkeys(pairs))
        requests = [self.request(context, continuation) for context, continuation in unique]
        sums = sum_target_logprobs(self.model, requests, self.device, self.batch_size)
        scores = {
            pair: (total, len(tokens) - first) for pair, total, (tokens, first) in zip(unique, sums, requests)
        }
        return [scores[pair] for pair in pairs]
