"""Several `tango run` processes on one workspace: each step is computed once, a waiting run uses the
holder's result, and a run killed with -9 while holding a step is taken over once its lease expires."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules

from integrations.workspace import OlmoWorkspace

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
TANGO = Path(sys.executable).parent / "tango"
OLMO_TANGO = Path(sys.executable).parent / "olmo-tango"

pytestmark = pytest.mark.slow
import_module_and_submodules("steps")


def start_run(workspace: Path, name: str, *extra: str, lease_s: float = 60) -> subprocess.Popen:
    environment = {**os.environ, "OLMO_TANGO_LEASE_SECONDS": str(lease_s)}
    return subprocess.Popen(
        [str(TANGO), "run", str(MICRO), "-w", str(workspace), "--name", name, *extra],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 900) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def model_hashes(workspace: Path, unique_id: str) -> dict[str, str]:
    """sha256 of the weights and token files of a result (what must equal across runs; timings may not)."""
    listing = json.loads((workspace / "results" / unique_id / "result.json").read_text())
    return {
        name: entry["sha256"]
        for name, entry in listing["files"].items()
        if name.endswith((".safetensors", ".npy", ".jsonl.gz"))
    }


def test_two_runs_started_together_compute_each_step_once(micro_workspace, tmp_path):
    workspace = tmp_path / "shared"
    first, second = start_run(workspace, "first"), start_run(workspace, "second")
    outputs = [finish(first), finish(second)]

    shared = OlmoWorkspace(str(workspace))
    computed = [shared.run_record(name)["computed"] for name in ("first", "second")]
    graph = StepGraph.from_file(MICRO)
    everything = {name: step.unique_id for name, step in graph.items()}
    assert sorted([*computed[0], *computed[1]]) == sorted(everything)  # each step once, by one of them
    assert {**computed[0], **computed[1]} == everything
    assert any("waiting for step" in output for output in outputs)  # they did overlap
    for unique_id in everything.values():
        assert model_hashes(workspace, unique_id) == model_hashes(micro_workspace, unique_id)


def test_a_killed_holder_is_taken_over_after_its_lease_expires(micro_workspace, tmp_path):
    """Copy the micro workspace without pretrain's result; kill -9 the run computing it; another finishes it."""
    graph = StepGraph.from_file(MICRO)
    pretrain = graph["pretrain"].unique_id
    workspace = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(micro_workspace), str(workspace)], check=True)
    for path in (workspace / "results" / pretrain, workspace / "work" / pretrain, workspace / "leases" / pretrain):
        subprocess.run(["rm", "-rf", str(path)], check=True)

    holder = start_run(workspace, "holder", "--step-name", "pretrain", lease_s=4)
    deadline = time.monotonic() + 300
    while not any((workspace / "leases" / pretrain).glob("*.json")):
        assert time.monotonic() < deadline and holder.poll() is None, "the first run never took the lease"
        time.sleep(0.2)
    time.sleep(1)
    holder.send_signal(signal.SIGKILL)  # its training workers die with it (PR_SET_PDEATHSIG)
    holder.wait()
    output = finish(start_run(workspace, "waiter", "--step-name", "pretrain", lease_s=4))

    assert 'waiting for step "pretrain"' in output and "held by run holder" in output
    assert 'taking over step "pretrain"' in output
    shared = OlmoWorkspace(str(workspace))
    assert shared.run_record("waiter")["computed"] == {"pretrain": pretrain}
    assert shared.run_record("holder")["computed"] == {}
    assert model_hashes(workspace, pretrain) == model_hashes(micro_workspace, pretrain)


def test_a_workspace_synced_through_s3_is_reused_where_it_lands(micro_workspace, s3_server, tango_run, tmp_path,
                                                                 monkeypatch):
    bucket, landed = s3_server.bucket() + "/micro", tmp_path / "landed"
    for source, target in ((str(micro_workspace), bucket), (bucket, str(landed))):
        subprocess.run([str(OLMO_TANGO), "workspace", "sync", source, target], cwd=ROOT, check=True,
                       capture_output=True, timeout=600)
    monkeypatch.setenv("COLUMNS", "400")  # the results table on one line per step
    started, output = tango_run(MICRO, landed)
    assert started == set()
    assert f"{landed}/results/PretrainOlmo-" in output
    assert str(micro_workspace) not in output
