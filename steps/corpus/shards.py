"""Running a stage shard by shard on an engine (this machine's processes or a Ray cluster), resumable after a crash.

Each job is one input shard. A job writes its output files itself (atomically); when it returns,
its stats are stored as a marker ``<markers>/<key>.json``. A re-run loads the stats of jobs with a
marker instead of running them again, so an interrupted stage only redoes unfinished shards, whichever
engine ran the others. A progress line (shards done / total, documents/s, ETA) is logged as shards finish.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

from steps.common.engine import Engine, LocalEngine
from steps.common.files import replacing
from steps.corpus.layout import shard_stem, source_shards
from steps.corpus.stats import merge_stats

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 10.0  # seconds between progress lines


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
    with replacing(path) as handle:
        handle.write(json.dumps(stats, sort_keys=True).encode())


def documents_read(stats: dict[str, Any]) -> int:
    """The documents a job read, by the stats key its stage uses."""
    return int(stats.get("documents_in", stats.get("documents", 0)))


class Progress:
    """Logs ``<label>: <done>/<total> <unit>, <documents/s> documents/s, ETA <hh:mm:ss>`` as jobs finish, at most
    every ``every`` seconds, and once at the end. The rate counts the shards of this run only, and is left out
    for jobs that read no documents (dedup's partitions)."""

    def __init__(self, label: str, total: int, done: int, every: float = PROGRESS_EVERY, unit: str = "shards"):
        self.label, self.total, self.done, self.every, self.unit = label, total, done, every, unit
        self.started = self.last = time.monotonic()
        self.finished_here = self.documents = 0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.documents / elapsed
        left = self.total - self.done
        eta = elapsed / self.finished_here * left if self.finished_here else float("nan")
        eta_text = "{:02d}:{:02d}:{:02d}".format(*_hours_minutes_seconds(eta)) if eta == eta else "?"
        documents = f", {rate:,.0f} documents/s" if self.documents else ""  # jobs that read no documents: none
        return f"{self.label}: {self.done}/{self.total} {self.unit}{documents}, ETA {eta_text}"

    def shard_finished(self, stats: dict[str, Any]) -> None:
        self.done += 1
        self.finished_here += 1
        self.documents += documents_read(stats)
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            logger.info(self.line())


def _hours_minutes_seconds(seconds: float) -> tuple[int, int, int]:
    minutes, second = divmod(round(seconds), 60)
    return minutes // 60, minutes % 60, second


def run_shard_jobs(
    jobs: Sequence[Job],
    work: Callable[[Job], dict[str, Any]],
    engine: Engine = LocalEngine(),
    markers: Path | None = None,
    label: str = "shards",
    unit: str = "shards",
) -> list[dict[str, Any]]:
    """``work(job)`` for every job on ``engine``; the stats in job order.

    With ``markers`` set, jobs finished by an earlier run are skipped and their stats reloaded.
    ``work`` must be a module-level function (it runs in other processes, maybe on other machines).
    """
    results: dict[int, dict[str, Any]] = {}
    if markers is not None:
        for index, job in enumerate(jobs):
            if _marker(markers, job).exists():
                results[index] = json.loads(_marker(markers, job).read_text())
        if results:
            logger.info("%s: resuming, %d of %d shards already done", label, len(results), len(jobs))
    pending = [index for index in range(len(jobs)) if index not in results]
    progress = Progress(label, len(jobs), len(results), unit=unit)
    for position, stats in engine.map_unordered(work, [jobs[index] for index in pending]):
        index = pending[position]
        results[index] = stats
        if markers is not None:
            _write_marker(_marker(markers, jobs[index]), stats)
        progress.shard_finished(stats)
    return [results[index] for index in range(len(jobs))]


def run_over_documents(
    documents_dir: Path,
    make_job: Callable[[str, Path, str], DocumentsJob],
    work: Callable[[DocumentsJob], dict[str, Any]],
    engine: Engine = LocalEngine(),
    markers: Path | None = None,
    label: str = "shards",
) -> dict[str, dict[str, Any]]:
    """Run ``work`` on ``make_job(source, shard, stem)`` for every shard of a documents directory;
    return ``{source: its shards' stats, added up}``."""
    jobs = [make_job(source, shard, shard_stem(shard, documents_dir / source))
            for source, shards in source_shards(documents_dir).items() for shard in shards]
    per_source: dict[str, dict[str, Any]] = {}
    for job, stats in zip(jobs, run_shard_jobs(jobs, work, engine, markers, label)):
        per_source[job.source] = merge_stats(per_source.get(job.source, {}), stats)
    return per_source
