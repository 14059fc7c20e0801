"""The filter stage: tag every document (code, Gopher, C4, PII), drop the flagged ones, rewrite the rest.

For each input shard ``<input_dir>/<source>/<shard>.jsonl.gz`` this writes

- ``documents/<source>/<shard>.jsonl.gz``: the kept documents, with C4's lines without terminal
  punctuation removed and PII masked (when those taggers apply to the source);
- ``attributes/<tagger>/<source>/<shard>.jsonl.gz``: one row per *input* document, in input
  order, ``{id, source, attributes: {"<tagger>__<name>": [[start, end, value], ...]}}``, with
  spans into the input text.

Every tagger sees the input text; PII is masked in the text left after C4's line removal. A
document is removed when any rule flags it; it is counted under the first flagging rule in
:data:`RULE_ORDER`, and under every flagging rule in ``flagged_by_rule``. Bad input raises
:class:`~steps.common.documents.DocumentFormatError` naming file and line (nothing is
quarantined), so ``documents_in == documents_kept + sum(removed_by_rule)`` for every source.
Shards run in parallel; the output does not depend on ``num_workers``.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from steps.common.documents import read_documents, write_jsonl_gz
from steps.corpus.code import CODE_RULES, CodeConfig, tag_code
from steps.corpus.config import FilterSection, build
from steps.corpus.layout import DOCUMENTS_DIR, shard_stem, source_shards
from steps.corpus.pii import PII_RULES, PiiConfig, mask_pii, tag_pii
from steps.corpus.quality import C4_RULES, GOPHER_RULES, C4Config, GopherConfig, Tagging, c4_rewrite, tag_c4, tag_gopher
from steps.corpus.stats import merge_stats, total_stats

ATTRIBUTES_DIR = "attributes"
# tagger name -> (tagging function, its rules); taggers run, and rules rank, in this order.
TAGGERS: dict[str, tuple[Callable[[str, Any], Tagging], tuple[str, ...]]] = {
    "code": (tag_code, CODE_RULES),
    "gopher": (tag_gopher, GOPHER_RULES),
    "c4": (tag_c4, C4_RULES),
    "pii": (tag_pii, PII_RULES),
}
RULE_ORDER = tuple(rule for _, rules in TAGGERS.values() for rule in rules)


@dataclass(frozen=True)
class FilterConfig:
    """One section per tagger; each has ``enabled``, ``sources`` and its thresholds (Dolma defaults)."""

    gopher: GopherConfig = field(default_factory=GopherConfig)
    c4: C4Config = field(default_factory=C4Config)
    pii: PiiConfig = field(default_factory=PiiConfig)
    code: CodeConfig = field(default_factory=CodeConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FilterConfig":
        return build(cls, data, "filter")

    def taggers_for(self, source: str) -> list[str]:
        """Names of the taggers that apply to ``source``, in :data:`TAGGERS` order."""
        sections: dict[str, FilterSection] = {name: getattr(self, name) for name in TAGGERS}
        return [name for name in TAGGERS if sections[name].applies(source)]


@dataclass(frozen=True)
class ShardJob:
    source: str
    shard: str
    stem: str  # shard path below its source folder, without suffix
    output_dir: str
    config: FilterConfig


def _empty_stats(rules: list[str]) -> dict[str, Any]:
    return {
        "documents_in": 0,
        "bytes_in": 0,
        "removed_by_rule": dict.fromkeys(rules, 0),
        "flagged_by_rule": dict.fromkeys(rules, 0),
        "pii_spans_masked": 0,
        "documents_with_pii": 0,
        "documents_kept": 0,
        "bytes_kept": 0,
    }


def filter_shard(job: ShardJob) -> dict[str, Any]:
    """Filter one shard, write its kept documents and attribute files; return its stats."""
    taggers = job.config.taggers_for(job.source)
    stats = _empty_stats([rule for name in taggers for rule in TAGGERS[name][1]])
    attribute_rows: dict[str, list[dict[str, Any]]] = {name: [] for name in taggers}
    kept = []
    for _, doc in read_documents(job.shard):
        text = doc["text"]
        stats["documents_in"] += 1
        stats["bytes_in"] += len(text.encode("utf-8"))
        flagged = []
        for name in taggers:
            tag, _ = TAGGERS[name]
            tagging = tag(text, getattr(job.config, name))
            attributes = {f"{name}__{key}": spans for key, spans in tagging.attributes.items()}
            attribute_rows[name].append({"id": doc["id"], "source": doc["source"], "attributes": attributes})
            flagged += tagging.flagged
        for rule in flagged:
            stats["flagged_by_rule"][rule] += 1
        if flagged:
            stats["removed_by_rule"][flagged[0]] += 1
            continue
        if "c4" in taggers:
            text = c4_rewrite(text)
        if "pii" in taggers:
            text, masked = mask_pii(text)
            stats["pii_spans_masked"] += masked
            stats["documents_with_pii"] += masked > 0
        stats["documents_kept"] += 1
        stats["bytes_kept"] += len(text.encode("utf-8"))
        kept.append({**doc, "text": text})

    output_dir = Path(job.output_dir)
    for name, rows in attribute_rows.items():
        write_jsonl_gz(output_dir / ATTRIBUTES_DIR / name / job.source / f"{job.stem}.jsonl.gz", rows)
    if kept:
        write_jsonl_gz(output_dir / DOCUMENTS_DIR / job.source / f"{job.stem}.jsonl.gz", kept)
    return stats


def filter_documents(
    input_dir: str | Path,
    output_dir: str | Path,
    config: FilterConfig | Mapping[str, Any],
    num_workers: int = 1,
) -> dict[str, Any]:
    """Filter every shard of the documents directory ``input_dir`` into ``output_dir``.

    Returns ``{"sources": {source: stats}, "total": stats, "rule_order": [...]}`` where stats are
    documents_in, bytes_in, removed_by_rule, flagged_by_rule, pii_spans_masked and
    documents_with_pii (spans masked in, and documents with a masked span among, the kept
    documents), documents_kept and bytes_kept (UTF-8 bytes of text). Each worker holds one shard.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    config = FilterConfig.from_dict(config) if isinstance(config, Mapping) else config
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    jobs = [
        ShardJob(source, str(shard), shard_stem(shard, input_dir / source), str(output_dir), config)
        for source, shards in source_shards(input_dir).items()
        for shard in shards
    ]
    workers = min(num_workers, len(jobs))
    if workers <= 1:
        results = [filter_shard(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(filter_shard, jobs, chunksize=1)

    per_source: dict[str, dict[str, Any]] = {}
    for job, stats in zip(jobs, results):
        per_source[job.source] = merge_stats(per_source[job.source], stats) if job.source in per_source else stats
    return {"sources": per_source, "total": total_stats(per_source), "rule_order": list(RULE_ORDER)}
