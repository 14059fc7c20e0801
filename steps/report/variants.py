"""The side-by-side table of an ablation's variants: training and evaluation numbers per variant.

A variant is ``{"training": {stage: training summary}, "evaluations": {stage: evaluation record}}``
(records as in :mod:`steps.report.evaluation_tables`); the first variant is the one the others are
compared with.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

from steps.report.evaluation_tables import task_names, unrelated_sets
from steps.report.markdown import in_stage_order, table

Variant = Mapping[str, Mapping[str, Mapping[str, Any]]]
Row = tuple[str, list[float | None], Callable[[float], str]]


def loss(value: float) -> str:
    return f"{value:.4f}"


def count(value: float) -> str:
    return f"{value:,.0f}"


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def stages(variants: Mapping[str, Variant], part: str) -> list[str]:
    return list(in_stage_order({stage: None for v in variants.values() for stage in v.get(part, {})}))


def rows(variants: Mapping[str, Variant]) -> Iterator[Row]:
    """``(label, one value per variant, format)`` for every number any variant has."""

    def values(part: str, stage: str, get: Callable[[Mapping[str, Any]], float | None]) -> list[float | None]:
        return [get(v[part][stage]) if stage in v.get(part, {}) else None for v in variants.values()]

    for stage in stages(variants, "training"):
        yield f"{stage}: last loss", values("training", stage, lambda s: s.get("loss_last")), loss
        yield f"{stage}: tokens seen", values("training", stage, lambda s: s.get("tokens_seen")), count
    for stage in stages(variants, "evaluations"):
        records = {name: v["evaluations"][stage] for name, v in variants.items() if stage in v.get("evaluations", {})}
        for task in task_names(records):
            yield (f"{stage} model: {task} (%)",
                   values("evaluations", stage, lambda r, t=task: r["tasks"][t]["primary"] if t in r["tasks"] else None), percent)
        yield f"{stage} model: average (%)", values("evaluations", stage, lambda r: r["average"]), percent
        yield f"{stage} model: bits per byte, own held-out", values("evaluations", stage, lambda r: r["bits_per_byte"]), loss
        for name in unrelated_sets(records):
            yield (f"{stage} model: bits per byte, {name}",
                   values("evaluations", stage, lambda r, n=name: r.get("bits_per_byte_by_set", {}).get(n)), loss)


def difference(value: float | None, baseline: float | None, fmt: Callable[[float], str]) -> str | None:
    if value is None or baseline is None:
        return None
    text = fmt(value - baseline)
    return text if text.startswith("-") else "+" + text


def variants_table(variants: Mapping[str, Variant]) -> str:
    """One column per variant, then each later variant's difference from the first."""
    names: Sequence[str] = list(variants)
    first, others = names[0], names[1:]
    body = []
    for label, row_values, fmt in rows(variants):
        shown = [None if v is None else fmt(v) for v in row_values]
        body.append([label, *shown, *(difference(v, row_values[0], fmt) for v in row_values[1:])])
    return table(["", *names, *(f"{name} − {first}" for name in others)], body)


def variants_section(variants: Mapping[str, Variant]) -> str:
    first = next(iter(variants))
    return "\n".join(["## Variants", "", f"Each variant beside `{first}`, and its difference from it.", "",
                      variants_table(variants)])
