"""Chat data for adaptation, in open-instruct's format.

A conversation is a list of ``{"role", "content"}`` messages (roles ``system``, ``user``,
``assistant``) rendered by default as ``<|system|>\\n{content}\\n``, ``<|user|>\\n{content}\\n`` and
``<|assistant|>\\n{content}{eos}\\n`` (the ``tulu`` template; others in ``templates``). Only assistant content and
its EOS are trained on.

Rows on disk are jsonl.gz: SFT examples ``{"id", "messages"}`` and preference pairs
``{"id", "prompt", "chosen", "rejected"}`` where ``prompt`` is the conversation so far and
``chosen``/``rejected`` are the assistant replies (lists of messages, TRL's explicit-prompt format).
``build_sft_examples`` and ``build_preference_pairs`` derive such rows from a Dolma documents
directory by asking for a document's next paragraph.
"""
from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import fsspec
from tokenizers import Tokenizer

from steps.common.documents import list_shards, read_documents

from .templates import (
    TULU,
    ChatFormatError,
    ChatTemplate,
    Message,
    Rendered,
    check_messages,
)

CONTINUE_PROMPT = "Continue the text:\n"


def render_chat(
    messages: Sequence[Message], tokenizer: Tokenizer, eos_token_id: int, max_length: int,
    *, template: ChatTemplate | None = None,
) -> Rendered:
    """``(input_ids, labels)`` of a conversation in ``template`` (tulu by default), cut to ``max_length`` tokens.

    Labels equal the input ids on assistant content and its end (EOS in tulu), ``IGNORE_INDEX`` elsewhere.
    """
    check_messages(messages, "messages")
    return (template or TULU).render(messages, tokenizer, eos_token_id, max_length)


def render_prompt(
    messages: Sequence[Message], tokenizer: Tokenizer, eos_token_id: int, *, template: ChatTemplate | None = None
) -> list[int]:
    """Token ids of a conversation followed by the template's generation prompt (``<|assistant|>\\n`` in tulu),
    for the model to continue."""
    check_messages(messages, "messages", needs_assistant=False)
    return (template or TULU).prompt(messages, tokenizer, eos_token_id)


# ---------------------------------------------------------------- rows on disk


def _check_sft_row(row: dict[str, Any], where: str) -> None:
    check_messages(row.get("messages"), f"{where}: field 'messages'")


def _check_preference_row(row: dict[str, Any], where: str) -> None:
    check_messages(row.get("prompt"), f"{where}: field 'prompt'", needs_assistant=False)
    for key in ("chosen", "rejected"):
        check_messages(row.get(key), f"{where}: field {key!r}")


def _read_rows(path: str | Path, check: Callable[[dict[str, Any], str], None]) -> list[dict[str, Any]]:
    rows = []
    with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ChatFormatError(f"{where}: expected a JSON object ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise ChatFormatError(f"{where}: expected a JSON object with a string 'id'")
            check(row, where)
            rows.append(row)
    return rows


def read_sft_examples(path: str | Path) -> list[dict[str, Any]]:
    """SFT rows ``{"id", "messages"}`` from a jsonl.gz file; a bad row is reported as file:line."""
    return _read_rows(path, _check_sft_row)


def read_preference_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Preference rows ``{"id", "prompt", "chosen", "rejected"}`` from a jsonl.gz file."""
    return _read_rows(path, _check_preference_row)


# ---------------------------------------------------------------- rows from documents


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs of ``text``, stripped; a paragraph is a line, as in Dolma (and our dedup)."""
    return [p.strip() for p in text.split("\n") if p.strip()]


def _continuations(
    documents_dir: str | Path, count: int, seed: int, min_chars: int, max_chars: int
) -> tuple[list[tuple[str, str, str, str]], Counter]:
    """The ``count`` documents with the smallest sha256(seed, source/id) among those whose first two
    paragraphs have ``min_chars``..``max_chars`` characters, as (key, id, first, second) sorted by key.

    The choice depends on the documents only, not on shard order or count, and holds ``count`` rows.
    """
    if count <= 0:
        raise ValueError(f"expected a positive number of rows, got {count}")
    shards = list_shards(documents_dir)
    if not shards:
        raise FileNotFoundError(f"{documents_dir}: no document shards (*.jsonl, *.jsonl.gz, *.jsonl.zst)")
    counts: Counter = Counter()

    def eligible() -> Iterator[tuple[str, str, str, str]]:
        for shard in shards:
            for _, doc in read_documents(shard):
                counts["documents"] += 1
                parts = paragraphs(doc["text"])
                if len(parts) < 2:
                    counts["skipped_fewer_than_two_paragraphs"] += 1
                elif min(len(parts[0]), len(parts[1])) < min_chars:
                    counts["skipped_paragraph_too_short"] += 1
                elif max(len(parts[0]), len(parts[1])) > max_chars:
                    counts["skipped_paragraph_too_long"] += 1
                else:
                    row_id = f"{doc['source']}/{doc['id']}"
                    key = hashlib.sha256(f"{seed}\0{row_id}".encode()).hexdigest()
                    yield key, row_id, parts[0], parts[1]

    selected = heapq.nsmallest(count, eligible())
    skipped = sum(n for rule, n in counts.items() if rule.startswith("skipped_"))
    counts["selected"] = len(selected)
    counts["not_selected"] = counts["documents"] - skipped - len(selected)
    return selected, counts


def _user_turn(first_paragraph: str) -> Message:
    return {"role": "user", "content": CONTINUE_PROMPT + first_paragraph}


def _assistant_turn(content: str) -> Message:
    return {"role": "assistant", "content": content}


def build_sft_examples(
    documents_dir: str | Path, max_examples: int, seed: int, min_chars: int = 20, max_chars: int = 1000
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Up to ``max_examples`` rows: the user gives a document's first paragraph, the assistant the second.

    Returns the rows and counts (documents read = skipped_* + selected + not_selected).
    """
    selected, counts = _continuations(documents_dir, max_examples, seed, min_chars, max_chars)
    rows = [
        {"id": row_id, "messages": [_user_turn(first), _assistant_turn(second)]}
        for _, row_id, first, second in selected
    ]
    return rows, dict(counts)


def build_preference_pairs(
    documents_dir: str | Path, max_pairs: int, seed: int, min_chars: int = 20, max_chars: int = 1000
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Up to ``max_pairs`` rows: chosen is the document's true second paragraph, rejected the second
    paragraph of the next selected document (in selection order) whose one differs.

    Returns the rows and counts; a selected document with no differing alternative is counted under
    ``dropped_no_distinct_rejected``.
    """
    selected, counts = _continuations(documents_dir, max_pairs, seed, min_chars, max_chars)
    rows = []
    for index, (_, row_id, first, second) in enumerate(selected):
        others = (selected[(index + offset) % len(selected)][3] for offset in range(1, len(selected)))
        rejected = next((other for other in others if other != second), None)
        if rejected is None:
            counts["dropped_no_distinct_rejected"] += 1
            continue
        rows.append({
            "id": row_id,
            "prompt": [_user_turn(first)],
            "chosen": [_assistant_turn(second)],
            "rejected": [_assistant_turn(rejected)],
        })
    return rows, dict(counts)
