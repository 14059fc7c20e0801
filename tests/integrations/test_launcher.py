"""A worker's failure reaches whoever launched the job with the worker's own exception type and text, even
when the elastic agent's error file cannot be written (a full disk) or the worker exits without a Python
exception the agent records (``sys.exit``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).with_name("failing_workers.py")


def launch(name: str, nproc: int = 1) -> dict:
    result = subprocess.run([sys.executable, str(WORKERS), name, str(nproc)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, expected", [
    ("disk_full", "worker rank 0 failed: OSError: [Errno 28] No space left on device"),
    ("save_failed", "worker rank 0 failed: RuntimeError: [enforce fail at inline_container.cc:664] . unexpected pos "
                    "5632 vs 5520"),
    ("exits", "worker rank 0 failed: SystemExit: 3"),
])
def test_the_failure_names_the_workers_exception_type_and_text(name, expected):
    failure = launch(name)
    assert failure["type"] == "WorkerFailure"
    assert failure["message"] == expected
    assert "failing_workers.py" in failure["traceback"]  # where it happened, for whoever wants it


def test_the_failing_rank_is_named_with_its_own_exception():
    failure = launch("rank_one_fails", 2)
    assert failure["message"] == "worker rank 1 failed: ValueError: rank one's own problem"


def test_a_worker_killed_by_a_signal_is_named_with_the_signal():
    failure = launch("killed")
    assert failure["message"].startswith("worker rank 0 failed: Signal 9 (SIGKILL) received by PID")
