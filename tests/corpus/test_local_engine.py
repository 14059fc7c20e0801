"""LocalEngine: its worker processes serve every call until closed, and a dead worker fails the call, not the next."""
import os
import signal

import pytest
from concurrent.futures.process import BrokenProcessPool

from steps.common.engine import LocalEngine


def pid_of_worker(job: int) -> int:
    return os.getpid()


def die(job: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return job


def pids(engine: LocalEngine, jobs: int = 6) -> set[int]:
    return {pid for _, pid in engine.map_unordered(pid_of_worker, list(range(jobs)))}


def test_the_workers_serve_every_call_until_closed():
    engine = LocalEngine(2)
    first = pids(engine)
    assert os.getpid() not in first and 1 <= len(first) <= 2
    assert pids(engine) <= first  # no new processes for the second call
    engine.close()
    assert not pids(engine) & first
    engine.close()


def test_one_worker_runs_jobs_in_this_process():
    assert pids(LocalEngine(1)) == {os.getpid()}


def test_a_dead_worker_fails_its_call_and_the_next_call_gets_new_workers():
    engine = LocalEngine(2)
    before = pids(engine)
    with pytest.raises(BrokenProcessPool):
        list(engine.map_unordered(die, [1, 2]))
    assert pids(engine) and not pids(engine) & before  # new workers
    engine.close()


def test_num_workers_must_be_positive():
    with pytest.raises(ValueError, match="num_workers must be >= 1, got 0"):
        LocalEngine(0)


def fail_on_odd(job: int) -> int:
    if job % 2:
        raise ValueError(f"job {job} failed")
    return os.getpid()


def test_a_failed_job_fails_its_call_and_leaves_the_workers_to_the_next():
    engine = LocalEngine(2)
    with pytest.raises(ValueError, match="job [13] failed"):
        list(engine.map_unordered(fail_on_odd, [0, 1, 2, 3, 4]))
    assert pids(engine) and engine._pool is not None  # the same pool serves the next call
    engine.close()
