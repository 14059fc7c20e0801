"""The filter stage: apply the taggers' rules to their attributes; drop, edit and count documents.

For each shard ``<documents>/<source>/<stem>.jsonl.gz`` this reads the attribute files the tag
stage wrote for it (row-aligned, ids checked) and writes ``documents/<source>/<stem>.jsonl.gz``:
the kept documents, edited (C4's lines and toxic sentences deleted, PII masked). A document is
removed when any rule flags it; it is counted under the first flagging rule in
:data:`~steps.corpus.taggers.RULE_ORDER`, and under every flagging rule in ``flagged_by_rule``.
So for every source ``documents_in == documents_kept + sum(removed_by_rule)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from steps.common.documents import read_documents, write_jsonl_gz
from steps.corpus.layout import DOCUMENTS_DIR
from steps.common.engine import Engine, LocalEngine
from steps.corpus.shards import run_over_documents
from steps.corpus.spans import Attributes, Edits, apply_edits
from steps.corpus.stats import total_stats
from steps.corpus.tag import attribute_shard, read_attribute_rows
from steps.corpus.taggers import EMPTIED_RULE, RULE_ORDER, TAGGERS, FilterConfig

class AttributeMismatchError(ValueError):
    """An attribute file does not line up with its documents shard."""


@dataclass(frozen=True)
class FilterJob:
    source: str
    shard: str
    stem: str
    attributes_dir: str
    output_dir: str
    config: FilterConfig

    @property
    def key(self) -> str:
        return f"{self.source}/{self.stem}"

    def tagged_by(self) -> list[str]:
        """The taggers that tagged this shard's source and whose rules are enabled; each must have
        tagged this shard."""
        taggers = []
        for name in TAGGERS:
            path = attribute_shard(Path(self.attributes_dir), name, self.source, self.stem)
            if getattr(self.config, name).enabled and path.parent.is_dir():
                if not path.exists():
                    raise AttributeMismatchError(f"{self.shard}: the {name} tagger tagged source {self.source!r} "
                                                 f"but not this shard ({path} is missing); re-run the tag step")
                taggers.append(name)
        return taggers


def _empty_stats(rules: list[str]) -> dict[str, Any]:
    return {
        "documents_in": 0, "bytes_in": 0,
        "removed_by_rule": dict.fromkeys(rules, 0), "flagged_by_rule": dict.fromkeys(rules, 0),
        "c4_lines_removed": 0, "toxic_sentences_removed": 0, "pii_spans_masked": 0, "documents_with_pii": 0,
        "documents_kept": 0, "bytes_kept": 0,
    }


def _aligned(job: FilterJob, taggers: list[str]) -> Iterator[tuple[dict, dict[str, Attributes]]]:
    """Each document of the shard with its attributes from every tagger (prefix stripped)."""
    paths = {name: attribute_shard(Path(job.attributes_dir), name, job.source, job.stem) for name in taggers}
    readers = {name: read_attribute_rows(path) for name, path in paths.items()}
    for location, doc in read_documents(job.shard):
        attributes = {}
        for name, rows in readers.items():
            row = next(rows, None)
            if row is None or row["id"] != doc["id"]:
                raise AttributeMismatchError(
                    f"{location.path}:{location.line}: document {doc['id']!r} has no matching row in the "
                    f"{name} attributes (found {None if row is None else row['id']!r}); re-run the tag step")
            prefix = f"{name}__"
            attributes[name] = {key[len(prefix):]: spans for key, spans in row["attributes"].items()}
        yield doc, attributes
    for name, rows in readers.items():
        extra = next(rows, None)
        if extra is not None:
            raise AttributeMismatchError(f"{paths[name]}: row {extra['id']!r} has no document in {job.shard}; "
                                         "re-run the tag step")


def filter_shard(job: FilterJob) -> dict[str, Any]:
    """Filter one shard, write its kept documents; return its stats."""
    taggers = job.tagged_by()
    stats = _empty_stats([rule for rule in RULE_ORDER if rule == EMPTIED_RULE
                          or any(rule in TAGGERS[name].rule_names for name in taggers)])
    output = Path(job.output_dir) / DOCUMENTS_DIR / job.source / f"{job.stem}.jsonl.gz"
    output.unlink(missing_ok=True)  # left by an interrupted run

    def kept() -> Iterator[dict[str, Any]]:
        for doc, attributes in _aligned(job, taggers):
            text = _filtered_text(doc["text"], attributes, job.config, stats)
            if text is not None:
                yield {**doc, "text": text}

    if write_jsonl_gz(output, kept()) == 0:
        output.unlink()
    return stats


def _filtered_text(
    text: str, attributes: dict[str, Attributes], config: FilterConfig, stats: dict[str, Any]
) -> str | None:
    """The document's text after the rules' edits, or None when a rule removes it (counted in ``stats``)."""
    stats["documents_in"] += 1
    stats["bytes_in"] += len(text.encode("utf-8"))
    flagged = [rule for name, attrs in attributes.items()
               for rule in TAGGERS[name].flags(attrs, getattr(config, name), text)]
    for rule in flagged:
        stats["flagged_by_rule"][rule] += 1
    if flagged:
        stats["removed_by_rule"][min(flagged, key=RULE_ORDER.index)] += 1
        return None
    edits = Edits()
    for name, attrs in attributes.items():
        tagger = TAGGERS[name]
        if tagger.edits is not None:
            tagger_edits = tagger.edits(attrs, getattr(config, name), text)
            edits.extend(tagger_edits)
            if tagger.deletions_stat is not None:
                stats[tagger.deletions_stat] += len(tagger_edits.deletions)
    text, masked = apply_edits(text, edits)
    stats["pii_spans_masked"] += masked
    stats["documents_with_pii"] += masked > 0
    if not text.strip():
        stats["removed_by_rule"][EMPTIED_RULE] += 1
        return None
    stats["documents_kept"] += 1
    stats["bytes_kept"] += len(text.encode("utf-8"))
    return text


def filter_documents(
    documents_dir: str | Path,
    attributes_dir: str | Path,
    output_dir: str | Path,
    config: FilterConfig,
    engine: Engine = LocalEngine(),
    markers: Path | None = None,
) -> dict[str, Any]:
    """Filter every shard of ``documents_dir`` by the attributes in ``attributes_dir`` into ``output_dir``.

    Returns ``{"sources": {source: stats}, "total": stats, "rule_order": [...]}``; stats are
    documents_in, bytes_in, removed_by_rule, flagged_by_rule, c4_lines_removed,
    toxic_sentences_removed, pii_spans_masked, documents_with_pii (among kept documents),
    documents_kept and bytes_kept (UTF-8 bytes of text).
    """

    def job(source: str, shard: Path, stem: str) -> FilterJob:
        return FilterJob(source, str(shard), stem, str(attributes_dir), str(output_dir), config)

    per_source = run_over_documents(Path(documents_dir), job, filter_shard, engine, markers, "filter")
    return {"sources": per_source, "total": total_stats(per_source), "rule_order": list(RULE_ORDER)}
