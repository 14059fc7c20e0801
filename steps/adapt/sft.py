"""Supervised fine-tuning: chat examples become padded batches for the shared trainer.

The objective is the trainer's ``NextTokenLoss``, which skips ``IGNORE_INDEX`` labels, so the loss covers
assistant tokens (and their EOS) only. ``ChatData``'s two options are open-instruct's:

``packing`` (default False: one conversation a row, padded on the right)
    Rows of several conversations, at most ``max_length`` tokens each. The examples are packed once, first-fit
    in a seeded shuffled order (``batching.pack_examples``), and the rows are then the instances of the usual
    multi-epoch order: each epoch reshuffles the rows, ``batch_size`` counts rows and ``steps_for_epochs`` rows
    per epoch. That is how open-instruct's packed SFT on OLMo-core runs (its packed dataset is built once and
    its instances reshuffled every epoch; the batch size counts packed sequences), and it keeps every global
    batch a function of (examples, seed, batch size, step) alone, so resuming and any number of workers give
    the same batches. Packing anew every epoch would only change which conversations share a row, and with the
    block-diagonal attention below no conversation's logits depend on its row's other conversations.
    In a row each conversation is at positions 0, 1, ... (``position_ids``) and attends only to its own earlier
    tokens (``segment_ids``: the conversation's number in the row, -1 on the padding); its first label is
    ``IGNORE_INDEX``, so nothing is predicted across a boundary (unpacked, the first token is never predicted
    either). The trained tokens are exactly those of the unpacked conversations.
``loss_reduction`` (default "mean")
    ``"mean"``: the summed token loss divided by the label tokens of the global batch (a token mean).
    ``"sum"``: divided by the rows of the global batch instead, as open-instruct's ``--reduce_loss sum``
    (``NextTokenLoss``'s docstring says how that is derived).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

from tokenizers import Tokenizer
from torch import nn

from steps.train.objectives import IGNORE_INDEX, LOSS_REDUCTIONS, NextTokenLoss, Objective

from .batching import ExampleBatches, ExampleData, pack_examples, pad_right
from .instruct_data import RowReport
from .templates import TULU, ChatTemplate, Rendered, TemplateRowError, check_messages


def has_labels(rendered: Rendered) -> bool:
    return any(label != IGNORE_INDEX for label in rendered[1])


def encode_sft_examples(
    examples: Sequence[dict[str, Any]], tokenizer: Tokenizer, eos_token_id: int, max_length: int,
    *, template: ChatTemplate | None = None, report: RowReport | None = None,
) -> tuple[list[Rendered], dict[str, int]]:
    """Render every example in ``template`` (tulu by default), cut to ``max_length`` tokens; drop and count those
    left with no assistant token after the cut, and those whose assistant spans the template cannot derive
    (``TemplateRowError``).

    With ``report`` (from ``instruct_data.read_sft_rows``), each drop is also reported there with the row's
    ``where`` (file:line), moving it from kept to dropped.
    """
    template = template or TULU
    encoded: list[Rendered] = []
    counts: Counter = Counter(examples=len(examples))
    for example in examples:
        where = example.get("where") or f"example {example.get('id')!r}"
        check_messages(example.get("messages"), where)
        try:
            input_ids, labels = template.render(example["messages"], tokenizer, eos_token_id)
        except TemplateRowError as error:
            reason, detail = error.reason, str(error)
        else:
            rendered = input_ids[:max_length], labels[:max_length]  # as render(..., max_length) cuts
            if has_labels(rendered):
                encoded.append(rendered)
                continue
            reason, detail = "no_assistant_tokens_within_max_length", f"no assistant token within {max_length} tokens"
        counts[f"dropped_{reason}"] += 1
        if report is not None:
            report.drop(reason, where, detail, was_kept=True)
    counts["encoded"] = len(encoded)
    return encoded, dict(counts)


def collate_chats(items: list[Rendered], pad_token_id: int) -> dict[str, Any]:
    """``input_ids`` padded with ``pad_token_id`` and ``labels`` padded with ``IGNORE_INDEX``."""
    return {
        "input_ids": pad_right([input_ids for input_ids, _ in items], pad_token_id),
        "labels": pad_right([labels for _, labels in items], IGNORE_INDEX),
    }


PADDING_SEGMENT = -1  # segment id of a packed row's padding


def collate_packed_chats(rows: list[list[Rendered]], pad_token_id: int) -> dict[str, Any]:
    """Rows of several conversations each, padded on the right to the longest row: ``input_ids``, ``labels``
    (each conversation's first one ``IGNORE_INDEX``), ``position_ids`` (0, 1, ... in each conversation, 0 on the
    padding) and ``segment_ids`` (the conversation's number in its row, ``PADDING_SEGMENT`` on the padding)."""
    columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": [], "segment_ids": []}
    for row in rows:
        input_ids, labels, positions, segments = [], [], [], []
        for segment, (conversation_ids, conversation_labels) in enumerate(row):
            input_ids += conversation_ids
            labels += [IGNORE_INDEX, *conversation_labels[1:]]
            positions += range(len(conversation_ids))
            segments += [segment] * len(conversation_ids)
        for name, column in zip(columns, (input_ids, labels, positions, segments)):
            columns[name].append(column)
    padding = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "position_ids": 0, "segment_ids": PADDING_SEGMENT}
    return {name: pad_right(column, padding[name]) for name, column in columns.items()}


@dataclass(frozen=True)
class ChatData(ExampleData[Rendered]):
    """An SFT step's training data: rendered chats; next-token loss on the assistant tokens.

    ``packing`` and ``loss_reduction`` as in the module's docstring; without packing an instance is a
    conversation, with it a packed row (``rows``).
    """

    packing: bool = field(default=False, kw_only=True)
    loss_reduction: str = field(default="mean", kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.packing, bool):
            raise ValueError(f"packing: expected true or false, got {self.packing!r}")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction: expected one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}")

    @cached_property
    def rows(self) -> list[tuple[int, ...]]:
        """The packed rows: indices into ``items``, at most ``max_length`` tokens a row (a longer item is cut)."""
        lengths = [min(len(input_ids), self.max_length) for input_ids, _ in self.items]
        return pack_examples(lengths, self.max_length, self.seed)

    def packing_summary(self) -> dict[str, Any]:
        """Rows, conversations, items cut to ``max_length`` when packed, and the rows' mean fill of ``max_length``."""
        tokens = sum(min(len(input_ids), self.max_length) for input_ids, _ in self.items)
        return {
            "rows": len(self.rows),
            "conversations": len(self.items),
            "truncated_to_max_length": sum(len(input_ids) > self.max_length for input_ids, _ in self.items),
            "fill": tokens / (len(self.rows) * self.max_length),
        }

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps that cover ``epochs`` passes over the instances (conversations, or packed rows)."""
        if not self.packing:
            return super().steps_for_epochs(epochs)
        return math.ceil(epochs * len(self.rows) / self.batch_size)

    def objective(self) -> Objective:
        return NextTokenLoss(self.loss_reduction)

    def batches(self, model: nn.Module, precision: str) -> ExampleBatches[Any]:
        if not self.packing:
            return self.example_batches(self.items)
        return ExampleBatches(self.rows, self.batch_size, self.seed, self.collate_rows)

    def collate(self, items: list[Rendered]) -> dict[str, Any]:
        return collate_chats(items, self.pad_token_id)

    def collate_rows(self, rows: list[tuple[int, ...]]) -> dict[str, Any]:
        """A global batch of packed rows (each item cut to ``max_length``)."""
        cut = self.max_length
        return collate_packed_chats(
            [[(self.items[i][0][:cut], self.items[i][1][:cut]) for i in row] for row in rows], self.pad_token_id
        )
