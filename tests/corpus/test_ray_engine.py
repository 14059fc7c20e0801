"""The corpus and tokenize steps on a real two-node Ray cluster (integrations.ray_cluster, loopback only): the
same fingerprints and bytes as on the local engine, through a worker killed mid-task and a driver killed and
run again (tests/corpus/ray_session.py runs those inside the cluster)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tango import StepGraph

from integrations.ray_cluster import cluster_script, run_on_cluster

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
PORT = 6391  # the cluster's own network namespace: no other process can hold it
CORPUS = ("source_python_docs", "source_package_metadata", "tag", "filter", "dedup", "mix", "tokenize")
SHARD_BYTES = 8192  # some 40 source shards: every sharded stage has work for both nodes


def write_workflows(directory: Path, address: str) -> tuple[Path, Path]:
    """The micro corpus with small source shards, on the local engine and on Ray at ``address``."""
    local, ray = directory / "local.jsonnet", directory / "ray.jsonnet"
    local.write_text(f"(import '{MICRO}') + {{ params+:: {{ source_shard_bytes: {SHARD_BYTES} }} }}\n")
    ray.write_text(f"(import '{local}') + {{ params+:: {{ execution+: {{ engine: {{ ray: "
                   f"{{ address: '{address}', max_retries: 3 }} }} }} }} }}\n")
    return local, ray


def result_bytes(workspace: Path) -> dict[str, bytes]:
    """Every file of every result of a workspace, by path relative to ``results``."""
    results = workspace / "results"
    return {str(path.relative_to(results)): path.read_bytes() for path in sorted(results.rglob("*")) if path.is_file()}


def test_the_engine_is_in_no_fingerprint(tmp_path):
    local, ray = write_workflows(tmp_path, "127.0.0.1:6379")
    on_local, on_ray = StepGraph.from_file(local), StepGraph.from_file(ray)
    assert {name: on_ray[name].unique_id for name in CORPUS} == {name: on_local[name].unique_id for name in CORPUS}


def test_the_cluster_script_starts_every_node_on_loopback_and_stops_them(tmp_path):
    script = cluster_script("echo hi", tmp_path, nodes=3, port=PORT)
    assert script.count(" start --head --port 6391 ") == 1 and script.count(" start --address 127.0.0.1:6391 ") == 2
    assert script.count("--node-ip-address 127.0.0.1") == 3 and "--include-dashboard=false" in script
    assert script.index("echo hi") < script.rindex("stop --force") < script.index("exit $status")


def leftover_ray_processes() -> list[str]:
    """Command lines of this machine's processes that belong to the test's cluster."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in ps if f"127.0.0.1:{PORT}" in line or f"port={PORT}" in line]


@pytest.mark.slow
def test_corpus_steps_on_a_two_node_cluster_survive_killed_workers_and_drivers(tango_run, tmp_path):
    local, _ = write_workflows(tmp_path, f"127.0.0.1:{PORT}")
    tango_run(local, tmp_path / "local", "-s", "tokenize")
    expected = result_bytes(tmp_path / "local")
    unique_ids = {StepGraph.from_file(local)[name].unique_id for name in CORPUS}
    assert unique_ids <= {path.split("/")[0] for path in expected}
    shards = len(list((tmp_path / "local" / "results").glob("CorpusSource-*/data/documents/*/*.jsonl.gz")))
    assert shards > 10

    session = run_on_cluster([sys.executable, str(Path(__file__).with_name("ray_session.py")), str(tmp_path)],
                             port=PORT, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert session.returncode == 0, (session.stdout + session.stderr)[-4000:]
    assert not leftover_ray_processes()
    found = json.loads((tmp_path / "session.json").read_text())

    # A worker killed in the middle of a task: Ray ran the task again; same bytes, same fingerprints.
    killed = found["killed_worker"]
    assert killed["status"] == 0, killed["output"][-4000:]
    assert killed["killed_command"].startswith("ray::_on_node")
    assert f"Worker PID: {killed['killed_pid']}" in killed["output"] and "the task will be retried" in killed["output"]
    assert result_bytes(tmp_path / "killed") == expected
    output = killed["output"]
    assert re.search(rf"tag: {shards}/{shards} shards, [\d,]+ documents/s, ETA \d\d:\d\d:\d\d", output), output[-4000:]
    assert f"Ray: {shards} tasks ran on 2 nodes" in output  # tag (or filter, with quicker tasks): both nodes
    for stage in ("dedup: [a-z]+", "mix", "tokenize"):  # on Ray too (its log line follows the stage's last one)
        assert re.search(rf"{stage}: \d+/\d+ (shards|sources)[^\n]*\n[^\n]*Ray: \d+ tasks ran on", output), stage

    # The driver killed after some tag shards: the run again redoes only the others, and writes the same bytes.
    resumed = found["killed_driver"]
    assert resumed["first_status"] == -9 and resumed["status"] == 0, resumed["output"][-4000:]
    done = int(re.search(rf"tag: resuming, (\d+) of {shards} shards already done", resumed["output"])[1])
    assert 3 <= resumed["done_at_kill"] == done < shards
    assert f"Ray: {shards - done} tasks ran on" in resumed["output"]
    assert result_bytes(tmp_path / "resumed") == expected

    # A work dir the nodes cannot see stops a step before any job, naming the nodes.
    message = (re.escape(f"{tmp_path / 'private'}; put the workspace (with an object-store workspace: ")
               + re.escape("OLMO_TANGO_CACHE) on a filesystem every node mounts at the same path"))
    node = r"127\.0\.0\.1 \(\w{8}\)"
    assert re.fullmatch(rf"execution\.engine\.ray: node\(s\) {node}, {node} do not see {message}",
                        found["private_folder"]), found["private_folder"]
