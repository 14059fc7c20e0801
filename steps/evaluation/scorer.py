"""Log-likelihood of continuations given contexts, batched, for rank-classification evaluation.

The model is anything with ``hidden_states(input_ids) -> [B, T, d]``, ``project(hidden) -> logits``
and ``config.max_sequence_length`` / ``config.eos_token_id`` (``olmo_model.Olmo`` has them).
Logits are computed only at the positions that predict scored tokens, which skips most of the
vocabulary matmul for short continuations.

Continuations of one context are scored from one run of it: the model runs a row
``[context, continuation 1, continuation 2, ...]`` (each continuation without its last token, which is
only predicted), where each continuation sees the context and itself, at the positions it would have
alone. That takes ``hidden_states(input_ids, position_ids=..., attention_mask=...)`` as ``Olmo`` has it;
for a model without those arguments a row holds one continuation of two or more tokens (plus any number
of single-token ones, which add no input: they are all predicted from the context's last position).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F

Tokenization = Literal["separate", "joint"]
POSITIONS_PER_PROJECTION = 1024  # scored positions projected to the vocabulary at once (bounds memory)
PADDING_SEGMENT = -1
MIN_BATCH_FILL = 0.75  # a batch ends before a row shorter than this fraction of its first (longest) row


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


def takes_packed_rows(model: torch.nn.Module) -> bool:
    """Whether ``model.hidden_states`` takes ``position_ids`` and ``attention_mask`` (as ``Olmo``'s does)."""
    try:
        parameters = inspect.signature(model.hidden_states).parameters
    except (TypeError, ValueError):
        return False
    return {"position_ids", "attention_mask"} <= parameters.keys()


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under each row of logits, computed in fp32."""
    return F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class Row:
    """One input row and what it scores: ``targets[i]`` is predicted at ``scored_positions[i]`` and counts
    for request ``owners[i]``.

    ``segments``/``positions`` are None for a plain causal row; else token ``t`` is at RoPE position
    ``positions[t]`` and attends to the earlier tokens of segment 0 (the context) and of its own segment.
    """

    input_ids: list[int]
    scored_positions: list[int]
    targets: list[int]
    owners: list[int]
    segments: list[int] | None = None
    positions: list[int] | None = None


def context_row(context: Sequence[int], continuations: Sequence[tuple[int, Sequence[int]]]) -> Row:
    """The row scoring each ``(request index, continuation ids)`` after one shared ``context``."""
    input_ids, segments, positions = list(context), [0] * len(context), list(range(len(context)))
    scored_positions, targets, owners = [], [], []
    for segment, (index, continuation) in enumerate(continuations, start=1):
        predicting = len(context) - 1
        for offset, token in enumerate(continuation):
            scored_positions.append(predicting)
            targets.append(token)
            owners.append(index)
            if offset < len(continuation) - 1:
                predicting = len(input_ids)
                input_ids.append(token)
                segments.append(segment)
                positions.append(len(context) + offset)
    if sum(len(continuation) > 1 for _, continuation in continuations) <= 1:  # causal order is the same
        return Row(input_ids, scored_positions, targets, owners)
    return Row(input_ids, scored_positions, targets, owners, segments, positions)


def shared_context_rows(
    context: Sequence[int], continuations: Sequence[tuple[int, Sequence[int]]], max_length: int, packed: bool
) -> list[Row]:
    """Rows scoring ``continuations`` after ``context``, each at most ``max_length`` tokens long.

    Single-token continuations go to the first row (they add no input); the others fill the last row
    while they fit, with ``packed``, else one a row.
    """
    members: list[list[tuple[int, Sequence[int]]]] = []
    length = 0  # of the last row
    for index, continuation in continuations:
        added = len(continuation) - 1
        if members and (added == 0 or (packed and length + added <= max_length) or length == len(context)):
            members[0 if added == 0 else -1].append((index, continuation))
            length += added
        else:
            members.append([(index, continuation)])
            length = len(context) + added
    return [context_row(context, row) for row in members]


def block_mask(segments: torch.Tensor) -> torch.Tensor:
    """[B, T, T] True where query ``t`` may attend key ``s``: ``s <= t``, in segment 0 or ``t``'s own."""
    same = segments.unsqueeze(2) == segments.unsqueeze(1)
    causal = torch.ones(segments.shape[1], segments.shape[1], dtype=torch.bool, device=segments.device).tril()
    return (same | (segments == 0).unsqueeze(1)) & causal


def row_hidden_states(model: torch.nn.Module, rows: Sequence[Row], device: torch.device) -> torch.Tensor:
    """The model's hidden states of ``rows``, padded on the right to the longest, [B, T, d]."""
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, :len(row.input_ids)] = torch.as_tensor(row.input_ids)
    if all(row.segments is None for row in rows):
        return model.hidden_states(input_ids.to(device))
    segments = torch.full((len(rows), width), PADDING_SEGMENT, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        length = len(row.input_ids)
        segments[b, :length] = 0 if row.segments is None else torch.as_tensor(row.segments)
        positions[b, :length] = torch.arange(length) if row.positions is None else torch.as_tensor(row.positions)
    return model.hidden_states(
        input_ids.to(device), position_ids=positions.to(device), attention_mask=block_mask(segments).to(device)
    )


def batches(rows: Sequence[Row], batch_size: int) -> Iterator[list[Row]]:
    """``rows`` longest first, at most ``batch_size`` a batch, each padded to less than ``1 / MIN_BATCH_FILL`` of
    its length (a few long packed rows would otherwise pad a batch of short ones)."""
    batch: list[Row] = []
    for row in sorted(rows, key=lambda row: len(row.input_ids), reverse=True):
        if batch and (len(batch) == batch_size or len(row.input_ids) < MIN_BATCH_FILL * len(batch[0].input_ids)):
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


@torch.no_grad()
def score_rows(
    model: torch.nn.Module, rows: Sequence[Row], requests: int, device: str | torch.device, batch_size: int
) -> list[float]:
    """Σ log p(target) per request index in ``range(requests)``, the rows run in :func:`batches`."""
    device = torch.device(device)
    totals = torch.zeros(requests, dtype=torch.float64, device=device)
    for batch in batches(rows, batch_size):
        row_index = torch.tensor([b for b, row in enumerate(batch) for _ in row.targets], device=device)
        positions = torch.tensor([p for row in batch for p in row.scored_positions], device=device)
        hidden = row_hidden_states(model, batch, device)[row_index, positions]
        targets = torch.tensor([t for row in batch for t in row.targets], device=device)
        token_logprobs = torch.cat([
            target_logprobs(model.project(hidden_chunk), target_chunk)
            for hidden_chunk, target_chunk in zip(
                hidden.split(POSITIONS_PER_PROJECTION), targets.split(POSITIONS_PER_PROJECTION)
            )
        ])
        owners = torch.tensor([owner for row in batch for owner in row.owners], device=device)
        totals.index_add_(0, owners, token_logprobs.double())
    return totals.tolist()


def sum_target_logprobs(
    model: torch.nn.Module,
    requests: Sequence[tuple[Sequence[int], int]],
    device: str | torch.device,
    batch_size: int,
) -> list[float]:
    """For each ``(tokens, first_scored)``, Σ log p(tokens[i] | tokens[:i]) for i ≥ first_scored ≥ 1.

    Requests are run longest first in batches padded to the batch's longest input (:func:`batches`); the
    model sees ``tokens[:-1]`` and only the scored positions go through ``project``.
    """
    rows = []
    for index, (tokens, first_scored) in enumerate(requests):
        if not 1 <= first_scored < len(tokens):
            raise ValueError(f"request {index}: first scored token {first_scored} not in 1..{len(tokens) - 1}")
        rows.append(context_row(tokens[:first_scored], [(index, tokens[first_scored:])]))
    return score_rows(model, rows, len(requests), device, batch_size)


class LogLikelihoodScorer:
    """Scores (context, continuation) pairs by the summed log-probability of the continuation tokens.

    ``tokenization="separate"`` (Catwalk / OLMo) encodes context and continuation on their own and
    concatenates the ids; ``"joint"`` (lm-eval-harness) encodes ``context + continuation`` once and
    splits at the length of the encoded context, after moving the context's trailing whitespace
    into the continuation. Contexts are cut from the left to fit the model's sequence length; an
    empty context becomes the EOS token. Identical pairs are scored once, and pairs with the same
    (cut) context from one run of it (see the module's docstring). ``device`` as in
    :func:`prepare_model`; ``batch_size`` counts rows.
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
        self.packed = takes_packed_rows(self.model)

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

    def rows(self, requests: Sequence[tuple[Sequence[int], int]]) -> list[Row]:
        """The rows scoring ``requests``, those with the same context ids sharing its run."""
        by_context: dict[tuple[int, ...], list[tuple[int, Sequence[int]]]] = {}
        for index, (tokens, first) in enumerate(requests):
            by_context.setdefault(tuple(tokens[:first]), []).append((index, tokens[first:]))
        return [
            row
            for context, continuations in by_context.items()
            for row in shared_context_rows(context, continuations, self.max_length, self.packed)
        ]

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """``(Σ log p(continuation tokens | context), number of continuation tokens)`` for each pair."""
        pairs = [(context, continuation) for context, continuation in pairs]
        unique = list(dict.fromkeys(pairs))
        requests = [self.request(context, continuation) for context, continuation in unique]
        sums = score_rows(self.model, self.rows(requests), len(requests), self.device, self.batch_size)
        scores = {
            pair: (total, len(tokens) - first) for pair, total, (tokens, first) in zip(unique, sums, requests)
        }
        return [scores[pair] for pair in pairs]
