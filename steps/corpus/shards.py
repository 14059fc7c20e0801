"""Running a corpus stage shard by shard: in parallel over all cores, resumable after a crash.

Each job is one input shard. A job writes its output files itself (atomically); when it returns,
its stats are stored as a marker ``<markers>/<key>.json``. A re-run loads the stats of jobs with a
marker instead of running them again, so an interrupted stage only redoes unfinished shards.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

from steps.corpus.layout import shard_stem, source_shards
from steps.corpus.stats import merge_stats

logger = logging.getLogger(__name__)


class ShardJob(Protocol):
    @property
    def key(self) -> str:
        """A name unique among the stage's jobs, usable as a relative path (``<source>/<stem>``)."""


Job = TypeVar("Job", bound=ShardJob)


class DocumentsJob(ShardJob, Protocol):
    """A job on one shard of a documents directory (``<source>/<stem>.jsonl.gz``)."""

    source: str


def _marker(markers: Path, job: ShardJob) -> Path:
    return markers / f"{job.key}.json"


def _write_marker(path: Path, stats: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(stats, sort_keys=True))
    os.replace(partial, path)


def run_shard_jobs(
    jobs: Sequence[Job],
    work: Callable[[Job], dict[str, Any]],
    num_workers: int = 1,
    markers: Path | None = None,
) -> list[dict[str, Any]]:
    """``work(job)`` for every job, in ``num_workers`` processes; the stats in job order.

    With ``markers`` set, jobs finished by an earlier run are skipped and their stats reloaded.
    ``work`` must be a module-level function (processes are spawned, not forked).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    results: dict[int, dict[str, Any]] = {}
    if markers is not None:
        for index, job in enumerate(jobs):
            if _marker(markers, job).exists():
                results[index] = json.loads(_marker(markers, job).read_text())
        if results:
            logger.info("resuming: %d of %d shards already done", len(results), len(jobs))
    pending = [index for index in range(len(jobs)) if index not in results]

    def finished(index: int, stats: dict[str, Any]) -> None:
        results[index] = stats
        if markers is not None:
            _write_marker(_marker(markers, jobs[index]), stats)

    workers = min(num_workers, len(pending))
    if workers <= 1:
        for index in pending:
            finished(index, work(jobs[index]))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            outcomes = pool.imap(work, [jobs[index] for index in pending], chunksize=1)
            for index, stats in zip(pending, outcomes):
                finished(index, stats)
    return [results[index] for index in range(len(jobs))]


def run_over_documents(
    documents_dir: Path,
    make_job: Callable[[str, Path, str], DocumentsJob],
    work: Callable[[DocumentsJob], dict[str, Any]],
    num_workers: int = 1,
    markers: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``work`` on ``make_job(source, shard, stem)`` for every shard of a documents directory;
    return ``{source: its shards' stats, added up}``."""
    jobs = [make_job(source, shard, shard_stem(shard, documents_dir / source))
            for source, shards in source_shards(documents_dir).items() for shard in shards]
    per_source: dict[str, dict[str, Any]] = {}
    for job, stats in zip(jobs, run_shard_jobs(jobs, work, num_workers, markers)):
        per_source[job.source] = merge_stats(per_source.get(job.source, {}), stats)
    return per_source
