"""The dedup stage: URL, exact-document and paragraph deduplication, partitioned by key hash, exact, on an engine.

Sources are read in sorted name order and their shards in sorted order: the first occurrence of a URL, a text or
a paragraph in that global order (source, shard, line) is the one kept, across all sources.

Paragraphs are the lines of ``text.split("\n")``, stripped; blank ones are never removed. By default paragraph
dedup skips sources with "code" in their name, whose lines (``return None``, ``}``) repeat by nature. The kinds
cascade: decontamination first removes whole documents (a document with a long paragraph of an evaluation set,
see :mod:`steps.corpus.decontamination`), and a contaminated document adds nothing; then the URL; a document
removed by its URL adds neither its text nor its paragraphs, one removed as an exact copy adds no paragraphs. A
document whose every non-blank paragraph is removed is "emptied" (removed).

The work runs as jobs on an :class:`~steps.common.engine.Engine` (:mod:`steps.corpus.dedup_jobs` has them and
the work folder's layout), so it scales past one machine:

1. hash, one job per shard: read the shard once; save the 128-bit digests of its items (URLs, texts, non-blank
   paragraphs) grouped by partition (digest mod ``partitions``) with the offsets of each group, so that a
   partition's job reads only its slice of each shard; decide decontamination (every job holds the evaluation
   paragraphs' digests, a small sorted array, and looks each long paragraph up exactly with ``np.isin``);
2. one round per enabled kind, url → text → paragraph, of one job per partition: read the partition's slice of
   every shard's items, for the documents still alive, in global order; keep the first of each digest; save the
   repeats. After the url and text rounds this process marks the documents with a repeat removed, shard by
   shard (it derives this from the round's outputs alone, so a re-run redoes it the same);
3. write, one job per shard: copy the lines of the documents kept whole, serialise again those that lost
   paragraphs, and count.

Each partition decides "first occurrence kept" in global order over all the items of its keys, so the decisions
are those of one process walking the corpus in order, for any partition count; a job's memory is bounded by its
partition (24 bytes per item: digest, document, line; about three times that while it sorts). The items are exact
digests, sorted per partition, not a Bloom filter: a Bloom filter's false positives depend on which items share
it, so only exact digests make the bytes provably independent of the partition count; they make no false
positive (two distinct items collide with probability about n² / 2¹²⁹), at 16 bytes per item, and partitions
bound the memory that costs.

Every phase's jobs go through :func:`steps.corpus.shards.run_shard_jobs` with markers in the work folder: a
re-run after a crash redoes only the unfinished jobs (another partition count or config starts over). Output
shards and stats are the same bytes for any engine, worker count and partition count.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olmo_model.config import Config, ConfigError, require
from steps.common.engine import Engine, LocalEngine
from steps.common.tasks import get_task_spec
from steps.corpus.config import Selector, check_selector, not_code, selects
from steps.corpus.decontamination import DEFAULT_MIN_WORDS, task_paragraphs
from steps.corpus.dedup_jobs import (KINDS, REMOVED_BY, DedupRun, HashJob, PartitionJob, WriteJob, decide_partition,
                                     digest_set, hash_shard, item_digests, run_file, save_array, save_json,
                                     settle_fates, write_shard)
from steps.corpus.layout import DOCUMENTS_DIR, shard_stem, source_shards
from steps.corpus.shards import run_shard_jobs
from steps.corpus.stats import merge_stats, total_stats

logger = logging.getLogger(__name__)

WORK_FORMAT = 3  # of a work folder; a change starts the run over
WORK_FOLDERS = ("items", "repeats", "fates", "alive", "done")


@dataclass(frozen=True)
class DedupConfig(Config):
    WHERE = "dedup"

    url: bool = True
    exact: bool = True
    paragraph: bool = True
    paragraph_sources: Selector = None  # default: sources without "code" in the name (code lines repeat)
    decontaminate: tuple[str, ...] = ()  # tasks whose long paragraphs remove a document (none: off)
    decontamination_min_words: int = DEFAULT_MIN_WORDS

    def check(self) -> None:
        check_selector(self.paragraph_sources, "dedup.paragraph_sources")
        for name in self.decontaminate:
            try:
                get_task_spec(name)
            except ValueError as exc:
                raise ConfigError(f"dedup.decontaminate: {exc}") from None
        require(self.decontamination_min_words >= 1, "dedup.decontamination_min_words", "a positive integer",
                self.decontamination_min_words)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The enabled kinds, in cascade order."""
        return tuple(kind for kind, on in zip(KINDS, (self.url, self.exact, self.paragraph)) if on)

    def dedups_paragraphs(self, source: str) -> bool:
        return self.paragraph and selects(self.paragraph_sources, source, not_code)


def _empty_stats() -> dict[str, int]:
    return dict.fromkeys(("documents_in", "removed_contaminated", "documents_without_url", "removed_url",
                          "removed_exact", "paragraphs_removed", "documents_emptied", "documents_kept",
                          "bytes_kept"), 0)


def _recorded_partitions(root: Path) -> int | None:
    """The partition count of the run recorded in the work folder ``root``, if there is one."""
    try:
        return int(json.loads(run_file(root).read_text())["partitions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _start(run: DedupRun, config: DedupConfig, shard_keys: list[str], evaluation: list[str]) -> None:
    """Make the work folder ready: kept if it holds this run (same config, partitions and shards), else cleared;
    the evaluation paragraphs' digests saved for the hash jobs."""
    identity = {"format": WORK_FORMAT, "config": json.loads(json.dumps(dataclasses.asdict(config))),
                "partitions": run.partitions, "shards": shard_keys}
    if run.identity.exists() and json.loads(run.identity.read_text()) != identity:
        logger.warning("%s holds a dedup run with other settings; starting over", run.root)
        run.identity.unlink()
    if not run.identity.exists():
        for folder in WORK_FOLDERS:
            shutil.rmtree(run.root / folder, ignore_errors=True)
        save_json(run.identity, identity)
    if config.decontaminate:
        save_array(run.evaluation, digest_set(item_digests(evaluation, "paragraph")))


def deduplicate(
    input_dir: str | Path,
    output_dir: str | Path,
    config: DedupConfig,
    work_dir: str | Path | None = None,
    engine: Engine = LocalEngine(),
    partitions: int | None = None,
) -> dict[str, Any]:
    """Deduplicate the documents directory ``input_dir`` into ``output_dir/documents/<source>/<shard>``.

    Returns ``{"sources": {source: stats}, "total": stats, "distinct_items": {kind: count},
    "decontamination": {tasks, min_words, paragraphs}}``. Stats: documents_in, removed_contaminated,
    documents_without_url (passed through URL dedup), removed_url, removed_exact, paragraphs_removed,
    documents_emptied (every paragraph a repeat) and documents_kept and bytes_kept (UTF-8 bytes of their text),
    with documents_in == removed_contaminated + removed_url + removed_exact + documents_emptied + documents_kept.
    distinct_items: per enabled kind, the distinct items among the documents that reached its round.

    The jobs run on ``engine``, in ``partitions`` partitions per round (default: those of the unfinished run in
    ``work_dir``, else one per worker of the engine); the result does not depend on either. With ``work_dir``, the work folder lives there and a re-run after a crash redoes only
    unfinished jobs; without it, in a scratch folder under ``output_dir``, removed at the end.
    """
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    shards = [(source, path, shard_stem(path, input_dir / source))
              for source, paths in source_shards(input_dir).items() for path in paths]
    output_dir.mkdir(parents=True, exist_ok=True)
    evaluation = task_paragraphs(config.decontaminate, config.decontamination_min_words)
    min_words = config.decontamination_min_words if config.decontaminate else None
    folder = nullcontext(work_dir) if work_dir else tempfile.TemporaryDirectory(dir=output_dir, prefix=".dedup-")
    with folder as root:
        if partitions is None:  # a resumed run keeps its partitions (and its work) whatever the engine's size now
            partitions = _recorded_partitions(Path(root)) or engine.workers
        run = DedupRun(Path(root), partitions, config.kinds)
        hash_jobs = [HashJob(run, source, path, stem, config.dedups_paragraphs(source), min_words)
                     for source, path, stem in shards]
        _start(run, config, [job.key for job in hash_jobs], evaluation)
        read = run_shard_jobs(hash_jobs, hash_shard, engine, run.markers("hash"), "dedup: hash")
        distinct = {}
        for kind in run.kinds:
            jobs = [PartitionJob(run, kind, partition) for partition in range(partitions)]
            decided = run_shard_jobs(jobs, decide_partition, engine, run.markers(kind), f"dedup: {kind}",
                                     unit="partitions")
            distinct[kind] = sum(stats["distinct"] for stats in decided)
            if kind in REMOVED_BY:
                settle_fates(run, kind)
        write_jobs = [WriteJob(job, index, output_dir / DOCUMENTS_DIR / job.source / f"{job.stem}.jsonl.gz")
                      for index, job in enumerate(hash_jobs)]
        written = run_shard_jobs(write_jobs, write_shard, engine, run.markers("write"), "dedup: write")
    per_source: dict[str, dict[str, int]] = {}
    for job, hashed, stats in zip(hash_jobs, read, written):
        per_source[job.source] = merge_stats(per_source.get(job.source, _empty_stats()),
                                             {**stats, "documents_without_url": hashed["documents_without_url"]})
    decontamination = {"tasks": list(config.decontaminate), "min_words": config.decontamination_min_words,
                       "paragraphs": len(evaluation)}
    return {"sources": per_source, "total": total_stats(per_source), "distinct_items": distinct,
            "decontamination": decontamination}
