"""Decontamination: the paragraphs of evaluation sets that pretraining documents must not contain.

As in OLMo's data pipeline, every paragraph of at least ``min_words`` words (13 by default) of the
evaluation sets is looked for; a pretraining document with any such paragraph is removed whole by the
dedup stage, and counted. The dedup's hash jobs hold the evaluation paragraphs' 128-bit digests, a
sorted array replicated to every job (the sets are small), and look each long paragraph of a document
up exactly (``np.isin``): unlike a Bloom filter, no document is ever removed for a paragraph the sets
do not hold. A paragraph is a line of ``text.split("\\n")``, stripped, on both sides. The evaluation
sets are the downstream tasks' questions (every context and continuation of every choice) from the
bundled data.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from steps.common.tasks import load_task

DEFAULT_MIN_WORDS = 13


def is_long(paragraph: str, min_words: int) -> bool:
    """Whether a paragraph has at least ``min_words`` whitespace-separated words."""
    return len(paragraph.split()) >= min_words


def long_paragraphs(text: str, min_words: int) -> list[str]:
    """The stripped lines of ``text`` with at least ``min_words`` words."""
    return [line for line in (raw.strip() for raw in text.split("\n")) if is_long(line, min_words)]


def task_paragraphs(task_names: Sequence[str], min_words: int = DEFAULT_MIN_WORDS) -> list[str]:
    """Every distinct long paragraph of the tasks' questions, in task and question order."""
    texts: Iterable[str] = (
        text
        for name in task_names
        for question in load_task(name)
        for text in (*question.contexts, *question.continuations)
    )
    return list(dict.fromkeys(p for text in texts for p in long_paragraphs(text, min_words)))

