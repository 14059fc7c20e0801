"""Dolma attribute spans and the text edits filters make from them.

An attribute is a list of spans ``[start, end, value]`` with character offsets into a document's
text; a whole-document value spans ``[0, len(text)]``. Filters edit a kept document by deleting
spans (C4's lines, toxic sentences) and replacing others (PII masks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Span = list  # [start, end, value]
Attributes = dict[str, list[Span]]  # attribute name -> spans


def whole_document(text: str, value: Any) -> list[Span]:
    return [[0, len(text), value]]


def document_value(attributes: Attributes, name: str) -> Any:
    """The value of a whole-document attribute."""
    return attributes[name][0][2]


@dataclass
class Edits:
    """Spans of a text to delete, and spans to replace by a string (``(start, end, replacement)``)."""

    deletions: list[tuple[int, int]] = field(default_factory=list)
    replacements: list[tuple[int, int, str]] = field(default_factory=list)

    def extend(self, other: "Edits") -> None:
        self.deletions += other.deletions
        self.replacements += other.replacements

    def __bool__(self) -> bool:
        return bool(self.deletions or self.replacements)


def line_deletions(text: str, lines: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans that remove the lines ``text[start:end]`` (in order) so that the rest reads as if they never
    were, i.e. as the other lines joined by "\n": each line goes with its own newline, except those
    after the last line kept, which go with the newline before them."""
    deletions, kept_end = [], len(text)
    for start, end in reversed(lines):
        if end == kept_end:  # in the run of deleted lines that ends the text
            deletions.append((max(start - 1, 0), end))
            kept_end = start - 1
        else:
            deletions.append((start, end + 1))
    return deletions[::-1]


def apply_edits(text: str, edits: Edits) -> tuple[str, int]:
    """``text`` with ``edits`` applied, and the number of replacements made.

    Overlapping deletions merge; a replacement overlapping a deletion is dropped (its text goes).
    Replacements must not overlap each other.
    """
    if not edits:
        return text, 0
    deleted: list[list[int]] = []
    for start, end in sorted(edits.deletions):
        if deleted and start <= deleted[-1][1]:
            deleted[-1][1] = max(deleted[-1][1], end)
        else:
            deleted.append([start, end])
    pieces: list[tuple[int, int, str]] = [(s, e, "") for s, e in deleted]
    replaced = 0
    for start, end, replacement in edits.replacements:
        if not any(s < end and start < e for s, e in deleted):
            pieces.append((start, end, replacement))
            replaced += 1
    out, position = [], 0
    for start, end, replacement in sorted(pieces):
        out += [text[position:start], replacement]
        position = end
    out.append(text[position:])
    return "".join(out), replaced
