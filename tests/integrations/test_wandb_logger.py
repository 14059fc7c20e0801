"""WandbLogger against the real wandb client, offline: what it writes is read back from the run file."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2
from wandb.sdk.internal import datastore

from integrations import wandb_logger
from integrations.wandb_logger import WandbLogger, resolve_mode

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "Pretrain-001-5mXq2Lk9"


def read_run(run_file: Path) -> dict:
    """Config, history rows (without wandb's own ``_`` keys), summary and exit code of an offline run file."""
    store = datastore.DataStore()
    store.open_for_scan(str(run_file))
    run = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            run["history"].append({key: value for key, value in row.items() if not key.startswith("_")})
        elif kind == "summary":
            run["summary"].update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.summary.update})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def finished_run(run_file: Path, timeout: float = 30.0) -> dict:
    """``read_run`` once the run's exit record is on disk: wandb's service writes the file after ``finish``
    returns (at the latest when the process exits)."""
    deadline = time.monotonic() + timeout
    while (run := read_run(run_file))["exit_code"] is None:
        assert time.monotonic() < deadline, f"{run_file} has no exit record after {timeout} s"
        time.sleep(0.05)
    return run


def run_files(directory: Path) -> list[Path]:
    """The offline run files of ``RUN_ID`` (wandb suffixes ``-1``, ``-2`` to a directory started the same second)."""
    return list(directory.glob(f"wandb/offline-run-*-{RUN_ID}*/run-{RUN_ID}.wandb"))


def step_metrics(step: int) -> dict:
    return {
        "step": step, "loss": 7.0 - step, "lr": 1e-3 * step, "tokens_seen": 4096 * step, "skipped": step == 2,
        "batch_hash": f"hash-{step}", "rank_batch_hashes": [f"r0-{step}", f"r1-{step}"],
    }


def logged_row(step: int) -> dict:
    return {"step": step, "loss": 7.0 - step, "lr": 1e-3 * step, "tokens_seen": 4096 * step, "skipped": int(step == 2)}


@pytest.fixture
def no_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)


OFFLINE_RUN = textwrap.dedent("""
    import sys
    from integrations.wandb_logger import WandbLogger
    from tests.integrations.test_wandb_logger import RUN_ID, step_metrics

    config = {"peak_lr": 4e-4, "model": {"d_model": 32}}
    with WandbLogger("olmo-tango-test", RUN_ID, config, sys.argv[1]) as logger:
        assert logger.mode == "offline", logger.mode
        for step in (1, 2, 3):
            logger.log(step_metrics(step), step=step)
""")


def test_offline_by_default_writes_numbers_and_summary_into_the_directory(tmp_path):
    """In a fresh process (wandb reads its environment once per process) with no WANDB_MODE, and a socket
    standing in for the W&B server that must never be contacted."""
    directory = tmp_path / "work" / "wandb-logs"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        environment["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-c", OFFLINE_RUN, str(directory)], cwd=ROOT, env=environment,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        with pytest.raises(BlockingIOError):
            server.accept()
    (run_file,) = run_files(directory)
    run = read_run(run_file)
    assert run["history"] == [logged_row(1), logged_row(2), logged_row(3)]
    assert run["summary"]["batch_hash"] == "hash-3"
    assert "rank_batch_hashes" not in run["summary"]
    assert run["config"]["peak_lr"] == 4e-4 and run["config"]["model"] == {"d_model": 32}
    assert run["exit_code"] == 0


def test_resumed_run_keeps_the_run_id_and_logs_the_later_steps(tmp_path, no_wandb_mode):
    for steps in ((1, 2), (3, 4)):  # a run, then its resumption in the same work directory
        with WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path) as logger:
            for step in steps:
                logger.log(step_metrics(step), step=step)
    logged_steps = sorted([row["step"] for row in finished_run(path)["history"]] for path in run_files(tmp_path))
    assert logged_steps == [[1, 2], [3, 4]]


def test_a_failing_run_is_marked_failed(tmp_path, no_wandb_mode):
    with pytest.raises(RuntimeError, match="non-finite"):
        with WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path) as logger:
            logger.log(step_metrics(1), step=1)
            raise RuntimeError("non-finite loss")
    (run_file,) = run_files(tmp_path)
    assert finished_run(run_file)["exit_code"] == 1


def test_disabled_mode_writes_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path)
    logger.log(step_metrics(1), step=1)
    logger.finish()
    assert logger.mode == "disabled"
    assert not list(tmp_path.glob("wandb/*run-*"))


def test_online_mode_asks_wandb_to_resume_the_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(wandb_logger.wandb, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("WANDB_MODE", "online")
    WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path)
    WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path, mode="offline")
    assert [(call["mode"], call["id"], call["resume"]) for call in calls] == [
        ("online", RUN_ID, "allow"), ("offline", RUN_ID, None),
    ]


@pytest.mark.parametrize(("argument", "environment", "expected"), [
    (None, None, "offline"), (None, "online", "online"), (None, "disabled", "disabled"),
    ("offline", "online", "offline"),
])
def test_mode_comes_from_the_argument_then_wandb_mode(argument, environment, expected, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    if environment is not None:
        monkeypatch.setenv("WANDB_MODE", environment)
    assert resolve_mode(argument) == expected


@pytest.mark.parametrize(("argument", "environment", "message"), [
    ("cloud", None, r"W&B mode: expected one of \['offline', 'online', 'disabled'\], got 'cloud'"),
    (None, "dryrun", r"W&B WANDB_MODE: expected one of .*, got 'dryrun'"),
])
def test_rejects_an_unknown_mode(argument, environment, message, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    if environment is not None:
        monkeypatch.setenv("WANDB_MODE", environment)
    with pytest.raises(ValueError, match=message):
        resolve_mode(argument)


def test_log_rejects_a_bad_step(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path) as logger, pytest.raises(ValueError, match="step"):
        logger.log({"loss": 1.0}, step=-1)
