"""What tests/corpus/test_ray_engine.py runs inside a two-node Ray cluster (integrations.ray_cluster), in one go.

``python ray_session.py WORK``, with ``WORK/ray.jsonnet`` the micro corpus on ``execution.engine: {ray: ...}``:

1. ``WORK/killed``: ``tango run -s tokenize``, one Ray worker SIGKILLed while it runs a tag task;
2. ``WORK/resumed``: ``tango run -s tokenize`` SIGKILLed once some tag shards are done, then run again;
3. a folder no Ray node sees (a tmpfs mounted in a mount namespace of the driver's own) given to the Ray engine's
   check that every node sees a step's work dir.

Writes ``WORK/session.json``: each run's exit status and output, the killed worker's pid and command line, how
many tag shards were done when the driver died, and the check's error.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

ROOT = Path(__file__).resolve().parents[2]
TANGO = Path(sys.executable).parent / "tango"
TASK_TITLE = "ray::_on_node"  # a Ray worker's command line while it runs a task of steps.common.engine
TIMEOUT_S = 300
T = TypeVar("T")


def start(work: Path, workspace: str) -> subprocess.Popen:
    environment = {**os.environ, "OLMO_TANGO_LEASE_SECONDS": "3", "COLUMNS": "160"}
    return subprocess.Popen([str(TANGO), "run", str(work / "ray.jsonnet"), "-s", "tokenize", "-w",
                             str(work / workspace)], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def tag_markers(workspace: Path) -> list[Path]:
    return list(workspace.glob("work/TagDocuments-*/done/*/*.json"))


def busy_workers() -> dict[int, str]:
    """``{pid: command line}`` of the Ray workers of this (process) namespace running a task now."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and command.startswith(TASK_TITLE):
            found[int(proc.name)] = command
    return found


def wait_for(condition: Callable[[], T], process: subprocess.Popen, what: str) -> T:
    """The first true value of ``condition()``, polled while ``process`` runs."""
    deadline = time.monotonic() + TIMEOUT_S
    while not (value := condition()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"never saw {what}; run output:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.02)
    return value


def finish(process: subprocess.Popen) -> dict:
    output, _ = process.communicate(timeout=TIMEOUT_S)
    return {"status": process.returncode, "output": output}


def kill_a_worker(work: Path) -> dict:
    """Kill a worker in its first tag task (seconds long: it imports the taggers), as soon as tag starts."""
    run = start(work, "killed")

    def busy_in_tag() -> dict[int, str]:
        return busy_workers() if any((work / "killed").glob("work/TagDocuments-*/inputs")) else {}

    pid, command = next(iter(wait_for(busy_in_tag, run, "a busy worker during tag").items()))
    os.kill(pid, signal.SIGKILL)
    return {**finish(run), "killed_pid": pid, "killed_command": command}


def kill_the_driver(work: Path) -> dict:
    first = start(work, "resumed")
    wait_for(lambda: len(tag_markers(work / "resumed")) >= 3, first, "3 tag shards done")
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_at_kill = len(tag_markers(work / "resumed"))
    return {"first_status": first.returncode, "done_at_kill": done_at_kill, **finish(start(work, "resumed"))}


CHECK_PRIVATE = """
import os, sys
from pathlib import Path
from steps.common.engine import RayEngine
try:
    RayEngine(os.environ["RAY_ADDRESS"]).check_shared(Path(sys.argv[1]))
except RuntimeError as error:
    print(error)
"""


def check_a_private_folder(work: Path) -> str:
    """The Ray engine's check on a folder only this driver sees: its error (empty: none)."""
    private = work / "private"
    private.mkdir()
    script = f"mount -t tmpfs tmpfs {private} && {sys.executable} -c '{CHECK_PRIVATE}' {private}"
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=True).stdout.strip()


if __name__ == "__main__":
    work = Path(sys.argv[1])
    session = {"killed_worker": kill_a_worker(work), "killed_driver": kill_the_driver(work),
               "private_folder": check_a_private_folder(work)}
    (work / "session.json").write_text(json.dumps(session, indent=1))
