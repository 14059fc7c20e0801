"""Markdown building blocks of the report: tables, percentages, pipeline order of stages."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, TypeVar

# "base": the pretrained model, before its anneal; "imported": a released checkpoint (workflows/adapt-hf.jsonnet).
STAGE_ORDER = ("pretrain", "base", "imported", "anneal", "sft", "dpo")
V = TypeVar("V")


def in_stage_order(summaries: Mapping[str, V]) -> dict[str, V]:
    """Stages in pipeline order (pretrain, base or imported, anneal, sft, dpo), any others after them by name."""
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    return {name: summaries[name] for name in sorted(summaries, key=lambda n: (rank.get(n, len(rank)), n))}


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(fraction: float | None) -> str | None:
    """A fraction as a percentage with one decimal (``None`` stays empty)."""
    return None if fraction is None else f"{100 * fraction:.1f}"


def percent_with_interval(fraction: float, interval: Sequence[float] | None) -> str:
    """``"45.0 (30.2–60.1)"``: a fraction and its confidence interval, in percent."""
    if not interval:
        return percent(fraction)
    low, high = interval
    return f"{percent(fraction)} ({percent(low)}–{percent(high)})"
