"""Offline W&B runs read back through wandb's own command line: ``wandb leet inspect --json`` prints the records of
a run's file (``run-<id>.wandb``) as JSON, one a line (wandb >= 0.31)."""
import json
import subprocess
import sys
import time
from pathlib import Path


def inspect(run_directory: Path) -> list[dict]:
    """The records of an offline run, as ``wandb leet inspect --json`` prints them (one JSON object a line)."""
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_directory)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def read_run(run_directory: Path) -> dict:
    """Id, name, group, project, config, history rows (without wandb's own ``_`` keys), summary and exit code
    of an offline run; ``exit_code`` is None until the run's exit record is written."""
    run = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for record in inspect(run_directory):
        kind = record["type"]
        if kind == "run":
            facts = record["run"]
            run.update(id=facts.get("run_id"), name=facts.get("display_name"), group=facts.get("run_group"),
                       project=facts.get("project"))
            run["config"].update(facts.get("config", {}).get("update", {}))
        elif kind == "config":
            run["config"].update(record["config"].get("update", {}))
        elif kind == "history":
            run["history"].append({k: v for k, v in record["history"]["item"].items() if not k.startswith("_")})
        elif kind == "summary":
            run["summary"].update(record["summary"].get("update", {}))
        elif kind == "exit":
            run["exit_code"] = record["exit"].get("exit_code", 0)
    run["config"].pop("_wandb", None)
    run["summary"] = {k: v for k, v in run["summary"].items() if not k.startswith("_")}
    return run


def finished_run(run_directory: Path, timeout: float = 60.0) -> dict:
    """``read_run`` once the run's exit record is on disk: wandb's service writes it after ``finish``
    returns (at the latest when the process exits)."""
    deadline = time.monotonic() + timeout
    while (run := read_run(run_directory))["exit_code"] is None:
        assert time.monotonic() < deadline, f"{run_directory} has no exit record after {timeout} s"
        time.sleep(0.2)
    return run


def run_directories(directory: Path, run_id: str) -> list[Path]:
    """The offline run directories of ``run_id`` (wandb suffixes ``-1``, ``-2`` to one started the same second)."""
    return sorted(directory.glob(f"wandb/offline-run-*-{run_id}*"))
