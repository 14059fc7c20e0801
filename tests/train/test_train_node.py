"""Multi-node training the way a cluster runs it, as two "nodes" on one machine: the first runs
``tango run`` on a workflow whose pretrain asks for 2 nodes, the second ``olmo-tango train-node``; they
meet at the rendezvous endpoint and train one model, which matches the one-node run of the same workflow.
The only place the nodes share is a workspace in the loopback S3 server: each has its own local cache."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules
from integrations.workspace import OlmoWorkspace

from steps.train.worker import METRICS_FILE

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
BIN = Path(sys.executable).parent
STEPS = 3

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_tango_run_and_train_node_train_one_model_on_two_nodes(micro_workspace, s3_server, tmp_path):
    workflow = tmp_path / "two-nodes.jsonnet"
    workflow.write_text(
        f"(import '{MICRO}') + {{ steps+: {{ pretrain+: {{ train+: {{ max_steps: {STEPS} }},"
        f" execution+: {{ world_size: 2, nnodes: 2, rdzv_endpoint: 'localhost:{free_port()}' }} }} }} }}\n"
    )
    bucket = s3_server.bucket() + "/workspace"
    sync = [str(BIN / "olmo-tango"), "workspace", "sync", str(micro_workspace), bucket, "--workflow", str(MICRO)]
    subprocess.run(sync, cwd=ROOT, check=True, capture_output=True, timeout=600)
    node = [{**os.environ, "OLMO_TANGO_CACHE": str(tmp_path / f"node{i}-cache")} for i in range(2)]
    first = subprocess.Popen(
        [str(BIN / "tango"), "run", str(workflow), "-w", bucket, "--step-name", "pretrain"],
        cwd=ROOT, env=node[0], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    second = subprocess.run(
        [str(BIN / "olmo-tango"), "train-node", str(workflow), "--step", "pretrain", "-w", bucket],
        cwd=ROOT, env=node[1], capture_output=True, text=True, timeout=600,
    )
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-4000:]
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert not (tmp_path / "node1-cache" / "results" / StepGraph.from_file(workflow)["pretrain"].unique_id).exists()

    import_module_and_submodules("steps")
    cache = OlmoWorkspace(bucket).step_cache
    two_nodes = read_metrics(cache[StepGraph.from_file(workflow)["pretrain"]].path / METRICS_FILE)
    alone = OlmoWorkspace(str(micro_workspace)).step_cache[StepGraph.from_file(MICRO)["pretrain"]]
    one_node = read_metrics(alone.path / METRICS_FILE)[:STEPS]
    assert [m["data_step"] for m in two_nodes] == list(range(STEPS))
    assert all(len(set(m["rank_batch_hashes"])) == 2 for m in two_nodes)  # one rank per node
    for ours, alone in zip(two_nodes, one_node, strict=True):
        assert ours["batch_hash"] == alone["batch_hash"]
        assert ours["loss"] == pytest.approx(alone["loss"], abs=1e-5)


def test_train_node_refuses_a_one_node_step(micro_workspace):
    result = subprocess.run(
        [str(BIN / "olmo-tango"), "train-node", str(MICRO), "--step", "pretrain", "-w", str(micro_workspace)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    assert "runs on one node (execution.nnodes = 1)" in result.stderr


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
