"""The C4 tagger (Raffel et al. 2020) and its rules.

Tagging marks every line that does not end in terminal punctuation (blank lines included) and
whether the document holds a naughty word, "lorem ipsum", "javascript" or a curly brace. Dolma
applied only the line rule: such lines are deleted from kept documents, and a document left with
no line is removed. The document-level rules are switches, off by default.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from steps.corpus.config import RuleSection, TaggerSection
from steps.corpus.spans import Attributes, Edits, document_value, line_deletions, whole_document

TERMINAL_PUNCTUATION = (".", "?", "!", '"')
# A short sample of the "List of Dirty, Naughty, Obscene, and Otherwise Bad Words" C4 used; the
# full list can be given as ``naughty_words``.
C4_NAUGHTY_WORDS_SAMPLE = ("fuck", "shit", "cunt", "bitch", "whore", "porn", "pornography", "xxx", "dildo", "blowjob")
DOCUMENT_FLAGS = ("naughty_words", "lorem_ipsum", "javascript", "curly_brace")
C4_RULES = ("c4_no_terminal_punctuation", *(f"c4_{flag}" for flag in DOCUMENT_FLAGS))
LINES = "lines_without_terminal_punctuation"


@dataclass(frozen=True)
class C4Tagging(TaggerSection):
    section = "c4"
    naughty_words: tuple[str, ...] = C4_NAUGHTY_WORDS_SAMPLE


@dataclass(frozen=True)
class C4Rules(RuleSection):
    """``remove_lines``: delete the lines without terminal punctuation; ``remove_<flag>``: remove
    documents with that flag."""

    section = "c4"
    remove_lines: bool = True
    remove_naughty_words: bool = False
    remove_lorem_ipsum: bool = False
    remove_javascript: bool = False
    remove_curly_brace: bool = False


@lru_cache(maxsize=8)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)


def _c4_attributes(text: str, tagging: C4Tagging) -> Attributes:
    lines, start = [], 0
    for line in text.split("\n"):
        if not line.rstrip().endswith(TERMINAL_PUNCTUATION):
            lines.append([start, start + len(line), 1.0])
        start += len(line) + 1
    lowered = text.lower()
    flags = {
        "naughty_words": bool(tagging.naughty_words) and bool(_word_pattern(tagging.naughty_words).search(text)),
        "lorem_ipsum": "lorem ipsum" in lowered,
        "javascript": "javascript" in lowered,
        "curly_brace": "{" in text,
    }
    return {LINES: lines, **{f"has_{flag}": whole_document(text, float(hit)) for flag, hit in flags.items()}}


def tag_c4(texts: list[str], tagging: C4Tagging) -> list[Attributes]:
    return [_c4_attributes(text, tagging) for text in texts]


def c4_flags(attributes: Attributes, rules: C4Rules, text: str) -> list[str]:
    flagged = []
    if rules.remove_lines and len(attributes[LINES]) == text.count("\n") + 1:
        flagged.append("c4_no_terminal_punctuation")  # no line would be left
    flagged += [f"c4_{flag}" for flag in DOCUMENT_FLAGS
                if getattr(rules, f"remove_{flag}") and document_value(attributes, f"has_{flag}")]
    return flagged


def c4_edits(attributes: Attributes, rules: C4Rules, text: str) -> Edits:
    if not rules.remove_lines:
        return Edits()
    return Edits(deletions=line_deletions(text, [(start, end) for start, end, _ in attributes[LINES]]))
