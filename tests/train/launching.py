"""Launching a ``TrainingJob`` as a training step does, from a fresh launcher process (``launch_job.py``), and
watching processes, for the tests of distributed training (pretraining and adaptation alike)."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

from steps.common.models import MODEL_DIR, MODEL_FILE
from steps.train.sharded_checkpoint import list_checkpoints
from steps.train.worker import METRICS_FILE, TrainingJob

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAUNCH_JOB = Path(__file__).with_name("launch_job.py")


def launcher_command(job: TrainingJob, workers: int, *node: str) -> list[str]:
    """The command that launches ``job`` on ``workers`` processes (``node``: NNODES RDZV_ENDPOINT RUN_ID)."""
    job_file = Path(job.output_dir).parent / "job.pkl"
    job_file.write_bytes(pickle.dumps(job))
    return [str(BIN / "python"), str(LAUNCH_JOB), str(job_file), str(workers), *node]


def launch(job: TrainingJob, workers: int) -> subprocess.CompletedProcess:
    """Launch ``job`` on ``workers`` processes from a fresh launcher process, as a training step does."""
    return subprocess.run(launcher_command(job, workers), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)


def outputs(job: TrainingJob) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The per-step metrics and consolidated weights a finished job wrote."""
    out = Path(job.output_dir)
    history = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    return history, safetensors.torch.load_file(out / MODEL_DIR / MODEL_FILE)


def run(job: TrainingJob, workers: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Train ``job`` on ``workers`` processes; its logged metrics and consolidated weights."""
    result = launch(job, workers)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return outputs(job)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, frontier = set(), [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.add(child)
            frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill_after_checkpoints(job: TrainingJob, workers: int, checkpoints: int) -> list[int]:
    """Launch ``job`` on ``workers`` processes, ``kill -9`` the launcher once ``checkpoints`` checkpoints exist,
    wait for its workers to die with it, and return the steps of the checkpoints left."""
    launcher = subprocess.Popen(launcher_command(job, workers), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for(lambda: len(list_checkpoints(job.checkpoint_dir)) >= checkpoints, 300, f"{checkpoints} checkpoints")
    children = descendants(launcher.pid)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    wait_for(lambda: not any(alive(pid) for pid in children), 30, "the orphaned workers to die")
    return [int(path.name.split("-")[1]) for path in list_checkpoints(job.checkpoint_dir)]


def assert_weights_close(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Equal up to the reduction order of the gradients: AdamW's normalised steps turn gradient differences
    of ~1e-7 into weight differences of up to ~lr * 1e-2, far below the weights' own scale (~0.1)."""
    assert weights.keys() == reference.keys()
    for name, tensor in weights.items():
        difference = float((tensor - reference[name]).abs().max())
        assert difference < 1e-4, (name, difference)


def assert_identical_weights(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == reference.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference[name]), name
