"""The keys of an evaluation ``config`` block, shared by the evaluate steps and the trainer's in-loop evaluation.

``tasks`` (names of ``steps.common.tasks``), ``limit`` (questions per task), ``seed`` (which questions when
limited), ``source`` ("auto", "oe_eval" or "hf" prompts), ``heldout_documents`` (how many held-out documents
bits per byte reads) and ``tokenization`` (see :func:`check_tokenization`).
"""
from __future__ import annotations

from typing import Any, get_args

from steps.evaluation.scorer import Tokenization

CONFIG_KEYS = {"tasks", "limit", "seed", "source", "heldout_documents", "tokenization"}
TOKENIZATIONS = get_args(Tokenization)


def check_tokenization(config: dict[str, Any], where: str) -> None:
    """``tokenization``: "separate" (Catwalk, OLMo: the default) or "joint" (lm-eval-harness)."""
    if config.get("tokenization", "separate") not in TOKENIZATIONS:
        raise ValueError(f"{where}.tokenization: expected one of {TOKENIZATIONS}, got {config['tokenization']!r}")
