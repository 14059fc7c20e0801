"""WandbLogger against the real wandb client, offline: what a run holds is read back from its run directory
by wandb's own command line, ``wandb leet inspect --json`` (the records of the run file, as JSON; wandb_runs.py)."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tango import Step
from tango.workspaces import LocalWorkspace

import integrations.tango_compat  # noqa: F401  (Tango fixes: the test steps run through Tango)
from integrations import wandb_logger
from integrations.wandb_logger import WandbLogger, check_settings, jsonable, resolve_mode, step_run
from tests.integrations.wandb_runs import finished_run, run_directories

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "Pretrain-001-5mXq2Lk9"


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
    with WandbLogger("olmo-tango-test", RUN_ID, config, sys.argv[1], name="micro/pretrain", group="micro") as logger:
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
    (run_directory,) = run_directories(directory, RUN_ID)
    run = finished_run(run_directory)
    assert (run["id"], run["name"], run["group"], run["project"]) == (RUN_ID, "micro/pretrain", "micro", "olmo-tango-test")
    assert run["history"] == [logged_row(1), logged_row(2), logged_row(3)]
    assert run["summary"]["batch_hash"] == "hash-3" and run["summary"]["loss"] == 4.0
    assert "rank_batch_hashes" not in run["summary"]
    assert run["config"] == {"peak_lr": 4e-4, "model": {"d_model": 32}}
    assert run["exit_code"] == 0


def test_resumed_run_keeps_the_run_id_and_logs_the_later_steps(tmp_path, no_wandb_mode):
    for steps in ((1, 2), (3, 4)):  # a run, then its resumption in the same work directory
        with WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path) as logger:
            for step in steps:
                logger.log(step_metrics(step), step=step)
    runs = [finished_run(path) for path in run_directories(tmp_path, RUN_ID)]
    assert {run["id"] for run in runs} == {RUN_ID}
    assert sorted([row["step"] for row in run["history"]] for run in runs) == [[1, 2], [3, 4]]


def test_a_failing_run_is_marked_failed(tmp_path, no_wandb_mode):
    with pytest.raises(RuntimeError, match="non-finite"):
        with WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path) as logger:
            logger.log(step_metrics(1), step=1)
            raise RuntimeError("non-finite loss")
    (run_directory,) = run_directories(tmp_path, RUN_ID)
    assert finished_run(run_directory)["exit_code"] == 1


def test_summarize_puts_nested_results_in_the_summary(tmp_path, no_wandb_mode):
    results = {"average": 0.25, "tasks": {"boolq": {"primary": 0.5, "n": 3, "prompt_source": "hf", "ci95": [0.1, 0.9]}},
               "bits_per_byte_by_set": {"wikipedia": 2.5}, "exact": True}
    with WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path) as logger:
        logger.summarize(results)
    (run_directory,) = run_directories(tmp_path, RUN_ID)
    run = finished_run(run_directory)
    assert run["history"] == []
    assert run["summary"] == {"average": 0.25, "tasks/boolq/primary": 0.5, "tasks/boolq/n": 3,
                              "tasks/boolq/prompt_source": "hf", "bits_per_byte_by_set/wikipedia": 2.5, "exact": 1}


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
    WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path, entity="ai2", group="olmo-tiny")
    WandbLogger("olmo-tango-test", RUN_ID, {}, tmp_path, mode="offline")
    assert [(call["mode"], call["id"], call["resume"], call["entity"], call["group"]) for call in calls] == [
        ("online", RUN_ID, "allow", "ai2", "olmo-tiny"), ("offline", RUN_ID, None, None, None),
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


@pytest.mark.parametrize(("settings", "message"), [
    ({}, r"wandb.project: expected a non-empty string, got None"),
    ({"project": "p", "projct": "q"}, r"wandb: unknown key\(s\) \['projct'\]; expected some of \['entity', 'mode', "),
    ({"project": "p", "mode": "cloud"}, r"W&B mode: expected one of"),
    ({"project": "p", "workflow": 3}, r"wandb.workflow: expected a non-empty string, got 3"),
    ("olmo", r"wandb: expected null or \{project: ..., ...\}, got 'olmo'"),
])
def test_a_bad_wandb_setting_is_named(settings, message):
    with pytest.raises(ValueError, match=message):
        check_settings(settings)
    check_settings(None)
    check_settings({"project": "p", "entity": "e", "mode": "offline", "workflow": "olmo-tiny"})


@Step.register("wandb_logger_test_source")
class WandbTestSource(Step):
    def run(self, value: int) -> int:
        return value


@Step.register("wandb_logger_test_train")
class WandbTestTrain(Step):
    """Logs to the W&B run ``step_run`` gives it, as the training and evaluation steps do."""

    VERSION = "007"
    SKIP_ID_ARGUMENTS = {"wandb"}

    def run(self, source: int, train: dict, wandb: dict | None = None) -> str:
        with WandbLogger(**step_run(self, wandb)) as logger:
            logger.log({"loss": float(source)}, step=1)
        return str(self.work_dir)


def test_a_steps_run_is_named_after_workflow_and_step_with_the_steps_whole_config(tmp_path, no_wandb_mode):
    source = WandbTestSource(value=3, step_name="source")
    train = WandbTestTrain(source=source, train={"lr": 0.5, "schedule": {"kind": "linear"}, "path": tmp_path},
                           wandb={"project": "olmo-tango-test", "workflow": "olmo-micro"}, step_name="pretrain")
    work_dir = Path(train.result(LocalWorkspace(tmp_path / "workspace")))
    (run_directory,) = run_directories(work_dir, train.unique_id)
    run = finished_run(run_directory)
    assert (run["id"], run["name"], run["group"]) == (train.unique_id, "olmo-micro/pretrain", "olmo-micro")
    assert run["config"] == {
        "source": source.unique_id,  # an input: its fingerprint
        "train": {"lr": 0.5, "schedule": {"kind": "linear"}, "path": str(tmp_path)},
        "wandb": {"project": "olmo-tango-test", "workflow": "olmo-micro"},
        "tango": {"step": "pretrain", "fingerprint": train.unique_id, "class": "WandbTestTrain", "version": "007",
                  "workflow": "olmo-micro"},
    }
    assert run["history"] == [{"loss": 3.0}]


def test_a_step_outside_a_workflow_is_named_after_the_step(tmp_path, no_wandb_mode):
    train = WandbTestTrain(source=1, train={}, wandb={"project": "olmo-tango-test"}, step_name="sft")
    work_dir = Path(train.result(LocalWorkspace(tmp_path / "workspace")))
    (run_directory,) = run_directories(work_dir, train.unique_id)
    run = finished_run(run_directory)
    assert (run["name"], run["group"], run["config"]["tango"]["workflow"]) == ("sft", None, None)


def test_jsonable_config_values():
    assert jsonable({"a": (1, float("nan")), 2: {3, 1}, "p": Path("/x"), "f": print}) == {
        "a": [1, "nan"], "2": [1, 3], "p": "/x", "f": repr(print),
    }
