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

# Definitions (REFERENCE.md's, and where it is silent those of Dolma's gopher_v1 tagger, whose
# attributes the v1.5 thresholds were set on). Words are ``text.split()``; lines are
# ``text.split("\n")``, blank ones included. Characters are those of the words (whitespace
# excluded). The symbol ratio counts words holding "#" or "…"; a word has a letter when one of its
# characters is ``str.isalpha()``; stop words are counted as written (lower case, no punctuation);
# a bullet line starts with "*" or "-" and an ellipsis line ends with "…" (no stripping);
# duplicate lines count every occurrence of a line that occurs more than once, and their
# characters are divided by the characters of the words.

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
SYMBOLS = ("#", "\u2026")
BULLETS = ("*", "-")
ELLIPSIS = "\u2026"
TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)
# ALPHA: letters, and numeric characters other than digits (such as "½"). WORD_WITHOUT_ALPHA: a
# line (of the unique words joined by "\n": a word) with no such character.
ALPHA = re.compile(r"[^\W\d_]")
WORD_WITHOUT_ALPHA = re.compile(r"^(?:[^\w\n]|[\d_])*$", re.MULTILINE)


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


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense group codes of ``keys`` and, per key, how often its value occurs."""
    order = keys.argsort(kind="stable")
    ordered = keys[order]
    starts = np.empty(len(keys), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    groups = np.cumsum(starts) - 1
    codes = np.empty_like(groups)
    codes[order] = groups
    return codes, np.bincount(groups)[codes]


def _ngram_fractions(ids: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """Character fractions of the most common 2..4-gram and of the repeated 5..10-grams.

    ``ids`` are the words' vocabulary ids, ``lengths`` their lengths. The most common n-gram (the
    first to occur among equals, the first n-gram when none repeats) counts its characters times
    its occurrences, over the characters of all words. For 5..10-grams, the characters of every
    occurrence of a repeated n-gram over those of every n-gram (overlaps counted each time).
    n-grams get exact integer codes: the n-gram at i is (the (n-1)-gram at i, word i+n-1); only
    positions whose (n-1)-gram repeats can start a repeated n-gram, so each size looks at those alone.
    """
    n_words = len(ids)
    total_chars = max(int(lengths.sum()), 1)
    prefix = np.concatenate(([0], np.cumsum(lengths)))
    result = {f"top_{n}_gram_char_fraction": int(prefix[n]) / total_chars if n_words >= n else 0.0
              for n in TOP_NGRAM_SIZES}
    result.update({f"dup_{n}_gram_char_fraction": 0.0 for n in DUP_NGRAM_SIZES})
    if n_words < 2:
        return result
    positions, codes = np.arange(n_words), ids
    occurrences = np.bincount(ids)[ids]
    for n in range(2, max(DUP_NGRAM_SIZES) + 1):
        candidates = (occurrences > 1) & (positions <= n_words - n)
        positions, codes = positions[candidates], codes[candidates]
        if len(positions) < 2:
            break
        codes, occurrences = _group(codes * n_words + ids[positions + n - 1])
        chars = prefix[positions + n] - prefix[positions]
        if n in TOP_NGRAM_SIZES:
            best = int(np.argmax(occurrences))  # the first position of a most common n-gram
            if occurrences[best] > 1:
                result[f"top_{n}_gram_char_fraction"] = int(chars[best]) * int(occurrences[best]) / total_chars
        else:
            all_chars = int(prefix[n:].sum() - prefix[: n_words - n + 1].sum())
            result[f"dup_{n}_gram_char_fraction"] = int(chars[occurrences > 1].sum()) / all_chars
    return result


def _words_without_letter(word_counts: Counter) -> int:
    unique = "\n".join(word_counts)
    count = sum(word_counts[word] for word in WORD_WITHOUT_ALPHA.findall(unique))
    if not unique.isascii():  # words whose only [^\W\d_] characters are numeric, such as "½"
        count += sum(n for word, n in word_counts.items()
                     if not word.isascii() and ALPHA.search(word) and not any(c.isalpha() for c in word))
    return count


def _words_with_symbol(text: str, word_counts: Counter) -> int:
    if not any(symbol in text for symbol in SYMBOLS):
        return 0
    return sum(n for word, n in word_counts.items() if any(symbol in word for symbol in SYMBOLS))


def _median(lengths: np.ndarray) -> float:
    ordered = np.sort(lengths)
    return float(ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2 if len(ordered) else 0.0


def gopher_attributes(text: str) -> dict[str, float]:
    """The Gopher quality attributes of ``text`` (names as in :data:`GOPHER_THRESHOLDS`)."""
    words = text.split()
    word_counts = Counter(words)
    vocabulary = {word: index for index, word in enumerate(word_counts)}
    ids = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.int64, count=len(words))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    word_count = max(len(words), 1)
    lines = text.split("\n")
    duplicated = [(line, n) for line, n in Counter(lines).items() if n > 1]
    return {
        "word_count": len(words),
        "median_word_length": _median(lengths),
        "symbol_to_word_ratio": _words_with_symbol(text, word_counts) / word_count,
        "fraction_words_with_alpha": (len(words) - _words_without_letter(word_counts)) / word_count,
        "stop_word_count": sum(word_counts[word] for word in STOP_WORDS),
        "fraction_bullet_lines": sum(1 for line in lines if line.startswith(BULLETS)) / len(lines),
        "fraction_ellipsis_lines": sum(1 for line in lines if line.endswith(ELLIPSIS)) / len(lines),
        "fraction_duplicate_lines": sum(n for _, n in duplicated) / len(lines),
        "fraction_duplicate_line_chars": sum(len(line) * n for line, n in duplicated) / max(int(lengths.sum()), 1),
        **_ngram_fractions(ids, lengths),
    }


def gopher_flags(attributes: Attributes, rules: GopherRules, text: str) -> list[str]:
    """The Gopher rules that remove a document with these attributes, in rule order."""
    flagged = []
    for (field, attribute), rule in zip(GOPHER_THRESHOLDS, GOPHER_RULES):
        threshold, value = getattr(rules, field), document_value(attributes, attribute)
        if (value < threshold) if field.startswith("min_") else (value > threshold):
            flagged.append(rule)
    return flagged
