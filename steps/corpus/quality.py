"""The Gopher quality tagger (Rae et al. 2021) and its rules, with Dolma v1.5 thresholds.

Tagging computes each document's Gopher attributes (whole-document values); the rules compare
them with the thresholds of :class:`GopherRules`, so a threshold change needs no re-tagging.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from steps.corpus.config import RuleSection
from steps.corpus.spans import Attributes, document_value

# Words are ``text.split()``; lines are the non-blank lines of ``text.split("\n")``, stripped
# (blank separator lines would otherwise count as duplicate lines). The symbol ratio counts
# occurrences of "#" and "…" per word; stop words are counted case-insensitively with surrounding
# punctuation stripped; a line ending in "…" or "..." is an ellipsis line; duplicate lines count
# every occurrence of a line that occurs more than once.

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
SYMBOLS = ("#", "\u2026")
BULLETS = ("*", "-")
ELLIPSES = ("\u2026", "...")
TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)
ALPHA = re.compile(r"[^\W\d_]")
PUNCTUATION = "!\"'()*,-./:;?[]`{}"


@dataclass(frozen=True)
class GopherRules(RuleSection):
    """Removal thresholds; ``min_x`` removes when attribute x is below it, ``max_x`` when above."""

    section = "gopher"
    min_words: int = 50
    max_words: int = 100_000
    min_median_word_length: float = 3.0
    max_median_word_length: float = 10.0
    max_symbol_to_word_ratio: float = 0.1
    min_fraction_words_with_alpha: float = 0.8
    min_stop_words: int = 2
    max_fraction_bullet_lines: float = 0.9
    max_fraction_ellipsis_lines: float = 0.3
    max_fraction_duplicate_lines: float = 0.3
    max_fraction_duplicate_line_chars: float = 0.3
    max_top_2_gram_char_fraction: float = 0.20
    max_top_3_gram_char_fraction: float = 0.18
    max_top_4_gram_char_fraction: float = 0.16
    max_dup_5_gram_char_fraction: float = 0.15
    max_dup_6_gram_char_fraction: float = 0.14
    max_dup_7_gram_char_fraction: float = 0.13
    max_dup_8_gram_char_fraction: float = 0.12
    max_dup_9_gram_char_fraction: float = 0.11
    max_dup_10_gram_char_fraction: float = 0.10


# (threshold field of GopherRules, attribute it bounds), in rule order; the rule is "gopher_<field>".
GOPHER_THRESHOLDS: tuple[tuple[str, str], ...] = (
    ("min_words", "word_count"),
    ("max_words", "word_count"),
    ("min_median_word_length", "median_word_length"),
    ("max_median_word_length", "median_word_length"),
    ("max_symbol_to_word_ratio", "symbol_to_word_ratio"),
    ("min_fraction_words_with_alpha", "fraction_words_with_alpha"),
    ("min_stop_words", "stop_word_count"),
    ("max_fraction_bullet_lines", "fraction_bullet_lines"),
    ("max_fraction_ellipsis_lines", "fraction_ellipsis_lines"),
    ("max_fraction_duplicate_lines", "fraction_duplicate_lines"),
    ("max_fraction_duplicate_line_chars", "fraction_duplicate_line_chars"),
    *((f"max_top_{n}_gram_char_fraction", f"top_{n}_gram_char_fraction") for n in TOP_NGRAM_SIZES),
    *((f"max_dup_{n}_gram_char_fraction", f"dup_{n}_gram_char_fraction") for n in DUP_NGRAM_SIZES),
)
GOPHER_RULES = tuple(f"gopher_{field}" for field, _ in GOPHER_THRESHOLDS)


def _ngram_fractions(words: list[str], ids: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """Character fractions of the most common 2..4-gram and of all repeated 5..10-grams.

    ``ids`` are the words' vocabulary ids, ``lengths`` their lengths. Characters are those of the
    words (whitespace excluded); a word covered by several repeated n-grams counts once. n-grams get
    exact integer codes: the n-gram at i is (the (n-1)-gram at i, word i+n-1). Only positions whose
    (n-1)-gram repeats can start a repeated n-gram, so each size looks at those alone.
    """
    result = {f"top_{n}_gram_char_fraction": 0.0 for n in TOP_NGRAM_SIZES}
    result.update({f"dup_{n}_gram_char_fraction": 0.0 for n in DUP_NGRAM_SIZES})
    total_chars = int(lengths.sum())
    if total_chars == 0:
        return result
    prefix = np.concatenate(([0], np.cumsum(lengths)))
    positions, codes = np.arange(len(words)), ids
    occurrences = np.bincount(ids)[ids]
    for n in range(2, max(DUP_NGRAM_SIZES) + 1):
        candidates = (occurrences > 1) & (positions <= len(words) - n)
        positions, codes = positions[candidates], codes[candidates]
        if len(positions) < 2:
            break
        _, codes, counts = np.unique(codes * len(ids) + ids[positions + n - 1], return_inverse=True, return_counts=True)
        occurrences = counts[codes]
        if n in TOP_NGRAM_SIZES:
            best = int(np.argmax(occurrences))  # the first position of a most common n-gram
            if occurrences[best] > 1:
                start = positions[best]
                result[f"top_{n}_gram_char_fraction"] = (
                    int(prefix[start + n] - prefix[start]) * int(occurrences[best]) / total_chars
                )
        if n in DUP_NGRAM_SIZES:
            starts = positions[occurrences > 1]
            cover = np.bincount(starts, minlength=len(words) + n) - np.bincount(starts + n, minlength=len(words) + n)
            covered = np.cumsum(cover[: len(words)]) > 0
            result[f"dup_{n}_gram_char_fraction"] = int(lengths[covered].sum()) / total_chars
    return result


def gopher_attributes(text: str) -> dict[str, float]:
    """The Gopher quality attributes of ``text`` (names as in :data:`GOPHER_THRESHOLDS`)."""
    words = text.split()
    word_counts = Counter(words)
    vocabulary = {word: index for index, word in enumerate(word_counts)}
    ids = np.array([vocabulary[w] for w in words], dtype=np.int64)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    word_count = max(len(words), 1)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    line_count = max(len(lines), 1)
    duplicated = [(line, n) for line, n in Counter(lines).items() if n > 1]
    line_chars = max(sum(map(len, lines)), 1)
    return {
        "word_count": len(words),
        "median_word_length": float(np.median(lengths)) if words else 0.0,
        "symbol_to_word_ratio": sum(text.count(s) for s in SYMBOLS) / word_count,
        "fraction_words_with_alpha": sum(n for w, n in word_counts.items() if ALPHA.search(w)) / word_count,
        "stop_word_count": sum(n for w, n in word_counts.items() if w.strip(PUNCTUATION).lower() in STOP_WORDS),
        "fraction_bullet_lines": sum(1 for line in lines if line.startswith(BULLETS)) / line_count,
        "fraction_ellipsis_lines": sum(1 for line in lines if line.endswith(ELLIPSES)) / line_count,
        "fraction_duplicate_lines": sum(n for _, n in duplicated) / line_count,
        "fraction_duplicate_line_chars": sum(len(line) * n for line, n in duplicated) / line_chars,
        **_ngram_fractions(words, ids, lengths),
    }


def gopher_flags(attributes: Attributes, rules: GopherRules, text: str) -> list[str]:
    """The Gopher rules that remove a document with these attributes, in rule order."""
    flagged = []
    for (field, attribute), rule in zip(GOPHER_THRESHOLDS, GOPHER_RULES):
        threshold, value = getattr(rules, field), document_value(attributes, attribute)
        if (value < threshold) if field.startswith("min_") else (value > threshold):
            flagged.append(rule)
    return flagged
