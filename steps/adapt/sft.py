"""Supervised fine-tuning: chat examples become padded batches for the shared trainer.

The objective is the trainer's ``NextTokenLoss``, which skips ``IGNORE_INDEX`` labels, so the loss covers
assistant tokens (and their EOS) only, averaged over the assistant tokens of the whole global batch.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from tokenizers import Tokenizer
from torch import nn

from steps.train.objectives import IGNORE_INDEX, NextTokenLoss, Objective

from .batching import ExampleBatches, ExampleData, pad_right
from .instruct_data import RowReport
from .templates import TULU, ChatTemplate, Rendered, TemplateRowError, check_messages


def has_labels(rendered: Rendered) -> bool:
    return any(label != IGNORE_INDEX for label in rendered[1])


def encode_sft_examples(
    examples: Sequence[dict[str, Any]], tokenizer: Tokenizer, eos_token_id: int, max_length: int,
    *, template: ChatTemplate | None = None, report: RowReport | None = None,
) -> tuple[list[Rendered], dict[str, int]]:
    """Render every example in ``template`` (tulu by default); drop and count those left with no assistant token
    after truncation, and those whose assistant spans the template cannot derive (``TemplateRowError``).

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
            rendered = template.render(example["messages"], tokenizer, eos_token_id, max_length)
        except TemplateRowError as error:
            reason, detail = error.reason, str(error)
        else:
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


class ChatData(ExampleData[Rendered]):
    """An SFT step's training data: rendered chats; next-token loss on the assistant tokens."""

    def objective(self) -> Objective:
        return NextTokenLoss()

    def batches(self, model: nn.Module, precision: str) -> ExampleBatches[Rendered]:
        return self.example_batches(self.items)

    def collate(self, items: list[Rendered]) -> dict[str, Any]:
        return collate_chats(items, self.pad_token_id)
