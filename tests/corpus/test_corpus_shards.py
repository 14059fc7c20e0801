"""Running a stage shard by shard: stats in job order, in parallel, resumable after a crash."""
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from steps.common.engine import LocalEngine
from steps.corpus.shards import Progress, run_shard_jobs


@dataclass(frozen=True)
class LoggedJob:
    key: str
    log: str  # each run of the job appends its key here
    crash_on: str | None = None  # the key of the job that raises, simulating a crash


def log_and_measure(job: LoggedJob) -> dict:
    """Work of one job (module level: worker processes are spawned)."""
    with open(job.log, "a") as handle:
        handle.write(job.key + "\n")
    if job.key == job.crash_on:
        raise RuntimeError(f"simulated crash in {job.key}")
    return {"documents": len(job.key), "by_rule": {"rule": 10 * len(job.key)}}


KEYS = ["web/a", "web/sub/bb", "news/ccc", "news/dddd"]


def make_jobs(log: Path, crash_on=None):
    return [LoggedJob(key, str(log), crash_on) for key in KEYS]


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def expected_stats():
    return [{"documents": len(key), "by_rule": {"rule": 10 * len(key)}} for key in KEYS]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_stats_come_back_in_job_order(tmp_path, num_workers):
    assert run_shard_jobs(make_jobs(tmp_path / "log"), log_and_measure, LocalEngine(num_workers)) == expected_stats()
    assert sorted(runs(tmp_path / "log")) == sorted(KEYS)


def test_finished_jobs_leave_markers_and_are_not_run_again(tmp_path):
    log, markers = tmp_path / "log", tmp_path / "markers"
    first = run_shard_jobs(make_jobs(log), log_and_measure, LocalEngine(1), markers)
    for key, stats in zip(KEYS, first):
        assert json.loads((markers / f"{key}.json").read_text()) == stats
    assert not list(markers.rglob("*.tmp"))
    again = run_shard_jobs(make_jobs(log), log_and_measure, LocalEngine(1), markers)
    assert again == first == expected_stats()
    assert runs(log) == KEYS  # the second run ran nothing


def test_a_crashed_run_resumes_with_only_the_unfinished_jobs(tmp_path):
    log, markers = tmp_path / "log", tmp_path / "markers"
    with pytest.raises(RuntimeError, match="simulated crash in web/sub/bb"):
        run_shard_jobs(make_jobs(log, crash_on=KEYS[1]), log_and_measure, LocalEngine(1), markers)
    assert runs(log) == KEYS[:2]
    assert sorted(p.relative_to(markers).as_posix() for p in markers.rglob("*.json")) == ["web/a.json"]

    resumed = run_shard_jobs(make_jobs(log), log_and_measure, LocalEngine(1), markers)
    assert runs(log) == KEYS[:2] + KEYS[1:]  # the finished job was not run again
    uninterrupted = run_shard_jobs(make_jobs(tmp_path / "other-log"), log_and_measure, LocalEngine(1))
    assert resumed == uninterrupted == expected_stats()


def test_two_workers_resume_from_markers_too(tmp_path):
    log, markers = tmp_path / "log", tmp_path / "markers"
    run_shard_jobs(make_jobs(log)[:2], log_and_measure, LocalEngine(1), markers)
    assert run_shard_jobs(make_jobs(log), log_and_measure, LocalEngine(2), markers) == expected_stats()
    assert sorted(runs(log)) == sorted(KEYS)


def test_progress_lines_count_shards_documents_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="steps.corpus.shards")
    progress = Progress("tag", total=4, done=1, every=0)
    progress.shard_finished({"documents": 30})
    progress.shard_finished({"documents_in": 10})
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(",")[0] for line in lines] == ["tag: 2/4 shards", "tag: 3/4 shards"]
    assert all(re.fullmatch(r"tag: \d/4 shards, [\d,]+ documents/s, ETA \d\d:\d\d:\d\d", line) for line in lines)
    rounds = Progress("dedup: url", total=1, done=0, every=0)
    rounds.shard_finished({"items": 5, "distinct": 4})  # a partition's stats: no documents read
    assert caplog.records[-1].getMessage() == "dedup: url: 1/1 shards, ETA 00:00:00"
