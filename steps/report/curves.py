"""Training histories for the report's plots: the per-step records of a training artifact's ``metrics.jsonl``.

Each record has ``step``, ``loss`` and ``tokens_seen``; at in-loop evaluation steps also ``eval/...`` metrics
(``eval/heldout/bits_per_byte``, ``eval/heldout/<source>/bits_per_byte``, ``eval/<task>/accuracy``,
``eval/downstream/average``; see ``steps/train/in_loop_eval.py``). An anneal's ``tokens_seen`` continues
its pretraining's, so the stages line up on one axis.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from steps.report.markdown import in_stage_order

History = list[dict[str, Any]]
REQUIRED_KEYS = ("step", "tokens_seen", "loss")
CURVE_STAGES = ("pretrain", "anneal")  # the stages plotted over tokens seen
ACCURACY_SUFFIX = "/accuracy"
BITS_PER_BYTE_SUFFIX = "/bits_per_byte"
AVERAGE_ACCURACY = "eval/downstream/average"


def read_history(path: Path) -> History:
    """The records of a ``metrics.jsonl``; a bad line is an error naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training metrics (expected one JSON record per logged step)")
    history = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: expected a JSON object ({exc})") from None
        missing = [key for key in REQUIRED_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path}:{number}: expected a record with {', '.join(REQUIRED_KEYS)}; missing {', '.join(missing)}")
        history.append(record)
    return history


def curve_histories(histories: Mapping[str, History]) -> dict[str, History]:
    """The pretrain and anneal histories that hold records, in pipeline order."""
    return {name: h for name, h in in_stage_order(histories).items() if name in CURVE_STAGES and h}


def series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(tokens seen, values)`` of the records that hold ``key``."""
    points = [(record["tokens_seen"], record[key]) for record in history if record.get(key) is not None]
    return [t for t, _ in points], [v for _, v in points]


def eval_keys(histories: Mapping[str, History], suffix: str) -> list[str]:
    """The in-loop metric names ending in ``suffix`` that any record holds, sorted."""
    return sorted({key for h in histories.values() for r in h for key in r if key.startswith("eval/") and key.endswith(suffix)})


def stage_span(history: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]] | None) -> tuple[int, int]:
    """The tokens-seen range a stage covers: from where the stage before it ended (or its first record) to its last."""
    start = before[-1]["tokens_seen"] if before else history[0]["tokens_seen"] - history[0].get("tokens", 0)
    return start, history[-1]["tokens_seen"]
