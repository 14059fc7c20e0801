"""Per-source stage statistics: nested dicts of counts that add up across shards and sources."""
from __future__ import annotations

from typing import Any, Mapping


def merge_stats(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Add two stats dicts key by key (nested dicts recursively; keys of either side kept)."""
    merged = dict(a)
    for key, value in b.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, Mapping):
            merged[key] = merge_stats(merged[key], value)
        else:
            merged[key] = merged[key] + value
    return merged


def total_stats(per_source: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of the per-source stats."""
    total: dict[str, Any] = {}
    for stats in per_source.values():
        total = merge_stats(total, stats)
    return total
