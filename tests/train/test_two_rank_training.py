"""Two ranks train on the micro workflow's instances (torchrun, gloo); every batch they trained is rebuilt in a
fresh ``olmo-tango`` process: the global hash and each rank's hash equal what the trainer logged, and the
global batches (and losses) are those of the one-process run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules
from tango.workspaces import LocalWorkspace

from steps.train.steps import METRICS_FILE

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
BIN = Path(sys.executable).parent
STEPS = 4

pytestmark = pytest.mark.slow


def train_two_ranks(workspace: Path, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """The two-rank run's metrics, and those the micro workflow's one-process pretrain logged."""
    import_module_and_submodules("steps")
    graph = StepGraph.from_file(MICRO)
    cache = LocalWorkspace(workspace).step_cache
    instances, pretrain = cache[graph["instances"]], graph["pretrain"]
    spec = {
        "instances": {"path": str(instances.path), "manifest": instances.manifest},
        "model": pretrain.kwargs["model"],
        "data_order": pretrain.kwargs["data_order"],
        "train": {**pretrain.kwargs["train"], "max_steps": STEPS},
        "metrics": str(tmp_path / "metrics.jsonl"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    launch = [str(BIN / "python"), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              str(Path(__file__).with_name("two_rank_training.py")), str(tmp_path / "spec.json")]
    result = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return read_metrics(tmp_path / "metrics.jsonl"), read_metrics(cache[pretrain].path / METRICS_FILE)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_rank_batches_regenerate_to_their_logged_hashes(micro_workspace, tmp_path):
    two_ranks, one_process = train_two_ranks(micro_workspace, tmp_path)
    assert [m["data_step"] for m in two_ranks] == list(range(STEPS))

    command = [str(BIN / "olmo-tango"), "batch", str(MICRO), "-w", str(micro_workspace), "--world-size", "2",
               "--micro-batch-size", "1", "--json", "--step", *map(str, range(STEPS))]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rebuilt = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rebuilt) == len(two_ranks) == STEPS and len(one_process) >= STEPS

    for logged, batch, alone in zip(two_ranks, rebuilt, one_process):
        assert batch["step"] == logged["data_step"] == alone["data_step"]
        assert batch["batch_hash"] == logged["batch_hash"] == alone["batch_hash"]  # the global batch ignores W
        assert [rank["batch_hash"] for rank in batch["ranks"]] == logged["rank_batch_hashes"]
        assert len(set(logged["rank_batch_hashes"])) == 2
        assert logged["loss"] == pytest.approx(alone["loss"], abs=1e-4)  # gradients averaged over the ranks
