"""The pretraining workers as the pretrain step launches them (elastic launcher, gloo, FSDP2), on the micro
workflow's instances: 2 workers match 1; a run killed with -9 resumes to bit-identical weights; a checkpoint
written by 2 workers resumes on 1; two "nodes" on one machine train as one job; a NaN stops the run naming
the step; every batch the ranks trained is rebuilt by ``olmo-tango batch`` with the hashes they logged."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules

from integrations.workspace import OlmoWorkspace
from olmo_model import LRSchedule, Olmo, OlmoConfig
from steps.common.execution import Execution
from steps.common.models import CONFIG_FILE, MODEL_DIR
from steps.train.checkpoint import TrainState
from steps.train.pretraining_data import PretrainingData
from steps.train.sharded_checkpoint import list_checkpoints, load_consolidated
from steps.train.trainer import TrainConfig, build_optimizer
from steps.train.worker import FINAL_CHECKPOINT_DIR, Initialization, TrainingJob
from tests.train.launching import (
    BIN, ROOT, assert_identical_weights, assert_weights_close, kill_after_checkpoints, launch, launcher_command,
    outputs, run,
)

MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
STEPS = 10

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def micro_job(micro_workspace, tmp_path_factory):
    """``micro_job(name, execution={...}, **train_overrides)``: a job training the micro workflow's model on its
    instances, on the CPU."""
    import_module_and_submodules("steps")
    pretrain = StepGraph.from_file(MICRO)["pretrain"]
    instances = OlmoWorkspace(str(micro_workspace)).step_cache[StepGraph.from_file(MICRO)["instances"]]
    root = tmp_path_factory.mktemp("jobs")

    def make(name: str, execution: dict | None = None, **overrides) -> TrainingJob:
        settings = replace(pretrain.kwargs["train"], **{"max_steps": STEPS, **overrides})
        (root / name / "artifact").mkdir(parents=True, exist_ok=True)
        return TrainingJob(
            model=pretrain.kwargs["model"], init=Initialization(seed=settings.seed),
            data=PretrainingData(instances, pretrain.kwargs["data_order"]), config=settings,
            execution=Execution(device="cpu", **(execution or {})), checkpoint_dir=str(root / name / "checkpoints"),
            output_dir=str(root / name / "artifact"), hand_off_optimizer=True,
        )

    return make


@pytest.fixture(scope="module")
def one_worker(micro_job):
    return run(micro_job("one-worker"), 1)


@pytest.fixture(scope="module")
def two_workers(micro_job):
    return run(micro_job("two-workers"), 2)


def assert_same_training(history, reference, tolerance):
    assert [m["data_step"] for m in history] == [m["data_step"] for m in reference] == list(range(STEPS))
    assert [m["batch_hash"] for m in history] == [m["batch_hash"] for m in reference]
    for ours, theirs in zip(history, reference):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=tolerance), ours["step"]
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-3), ours["step"]


def test_two_fsdp_workers_match_one_within_1e_5_over_10_steps(one_worker, two_workers):
    (history_1, weights_1), (history_2, weights_2) = one_worker, two_workers
    assert_same_training(history_2, history_1, tolerance=1e-5)
    assert history_1[-1]["loss"] < history_1[0]["loss"] - 0.1  # it trains
    assert all(len(m["rank_batch_hashes"]) == 2 and len(set(m["rank_batch_hashes"])) == 2 for m in history_2)
    assert_weights_close(weights_2, weights_1)


def test_batches_of_both_ranks_regenerate_to_their_logged_hashes(two_workers, micro_workspace):
    history, _ = two_workers
    command = [str(BIN / "olmo-tango"), "batch", str(MICRO), "-w", str(micro_workspace), "--world-size", "2",
               "--micro-batch-size", "1", "--json", "--step", *map(str, range(STEPS))]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rebuilt = [json.loads(line) for line in result.stdout.splitlines()]
    assert [b["step"] for b in rebuilt] == [m["data_step"] for m in history]
    for logged, batch in zip(history, rebuilt):
        assert batch["batch_hash"] == logged["batch_hash"]
        assert [rank["batch_hash"] for rank in batch["ranks"]] == logged["rank_batch_hashes"]


def test_kill_9_then_resume_ends_bit_identical(micro_job, two_workers, tmp_path):
    job = micro_job("killed", execution={"checkpoint_every": 2})
    survivors = kill_after_checkpoints(job, 2, checkpoints=2)  # the step-4 checkpoint exists
    assert 4 <= survivors[-1] < STEPS

    history, weights = run(job, 2)  # `tango run` again: the step starts the same job
    reference_history, reference_weights = two_workers
    assert [m["loss"] for m in history] == [m["loss"] for m in reference_history]  # restored history included
    assert_identical_weights(weights, reference_weights)


def test_a_corrupted_newest_checkpoint_resumes_from_the_previous_one_bit_identical(micro_job, two_workers):
    job = micro_job("corrupted", execution={"checkpoint_every": 2})
    run(job, 2)
    checkpoints = list_checkpoints(job.checkpoint_dir)
    assert [p.name for p in checkpoints] == [f"step-{STEPS - 2:08d}", f"step-{STEPS:08d}"]
    shard = sorted((checkpoints[-1] / "state").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-8] ^= 0xFF  # a weight's bytes, not the header: only the checksum sees it
    shard.write_bytes(bytes(data))
    for path in Path(job.output_dir).iterdir():  # the artifact is written again by the resumed run
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    result = launch(job, 2)  # `tango run` again
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "falling back" in result.stderr and f"resuming from {checkpoints[0]} at step {STEPS - 2}" in result.stderr
    history, weights = outputs(job)
    reference_history, reference_weights = two_workers
    assert [m["loss"] for m in history] == [m["loss"] for m in reference_history]
    assert_identical_weights(weights, reference_weights)


def test_checkpoint_of_two_workers_resumes_on_one(micro_job, one_worker):
    first = micro_job("resharded", execution={"checkpoint_every": 4}, max_steps=4)
    run(first, 2)
    second = replace(first, config=replace(first.config, max_steps=STEPS))
    history, weights = run(second, 1)
    reference_history, reference_weights = one_worker
    assert_same_training(history, reference_history, tolerance=1e-5)
    assert_weights_close(weights, reference_weights)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_nodes_on_one_machine_train_as_one_job(micro_job, two_workers, tmp_path):
    job = micro_job("two-nodes")
    command = launcher_command(job, 1, "2", f"localhost:{free_port()}", "two-nodes")
    nodes = [
        subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    for node in nodes:
        output, _ = node.communicate(timeout=600)
        assert node.returncode == 0, output[-4000:]
    history, weights = outputs(job)
    reference_history, reference_weights = two_workers
    assert_same_training(history, reference_history, tolerance=1e-6)
    assert_weights_close(weights, reference_weights)


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(micro_job):
    job = micro_job("diverging", execution={"checkpoint_every": 1}, schedule={"kind": "constant", "peak_lr": 1e30})
    result = launch(job, 2)
    assert result.returncode != 0
    failure = re.search(r"WorkerFailure: worker rank \d failed: NonFiniteLossError: step (\d+) .*nan_policy='stop'",
                        result.stderr)
    assert failure, result.stderr[-4000:]
    bad_step = int(failure.group(1))
    assert [int(p.name.split("-")[1]) for p in list_checkpoints(job.checkpoint_dir)][-1] == bad_step - 1


def test_one_ranks_exception_stops_the_job_promptly_naming_it(micro_job):
    """Rank 0 alone fails (a bad W&B setting: only rank 0 logs) while rank 1 trains on; the job must stop with
    rank 0's exception, not wait in a barrier that meets rank 1 inside another collective."""
    job = replace(micro_job("one-rank-fails"), wandb_run={"project": "p", "run_id": "r", "directory": "/tmp",
                                                          "config": {}, "no_such_setting": 1})
    started = time.monotonic()
    result = launch(job, 2)
    assert result.returncode != 0
    assert re.search(r"WorkerFailure: worker rank 0 failed: TypeError: .*no_such_setting", result.stderr), \
        result.stderr[-4000:]
    assert time.monotonic() - started < 240


@pytest.mark.parametrize("options", [
    {"sharding": "none", "activation_checkpointing": True},
    {"sharding": "hybrid", "compile": True},
], ids=["replicated-recomputed", "hybrid-compiled"])
def test_sharding_recomputation_and_compilation_train_the_same_model(micro_job, two_workers, options, tmp_path):
    wandb = {"project": "olmo-tango-tests", "run_id": "options", "directory": str(tmp_path), "config": {}}
    job = replace(micro_job("options-" + "-".join(sorted(options)), execution=options), wandb_run=wandb)
    history, weights = run(job, 2)
    reference_history, reference_weights = two_workers
    assert_same_training(history, reference_history, tolerance=1e-5)
    assert_weights_close(weights, reference_weights)
    assert len(list(tmp_path.glob("wandb/offline-run-*-options"))) == 1  # W&B offline by default, in the work dir


def optimizer_steps(artifact: Path) -> set[int]:
    """The AdamW step counts an artifact hands off (loaded in this process)."""
    config = OlmoConfig.from_dict(json.loads((artifact / MODEL_DIR / CONFIG_FILE).read_text()))
    model = Olmo(config)
    optimizer = build_optimizer(model, TrainConfig.from_dict({
        "global_batch_size": 1, "micro_batch_size": 1, "max_steps": 1, "schedule": {"kind": "constant", "peak_lr": 1.0},
    }))
    load_consolidated(model, artifact / MODEL_DIR, optimizer, artifact / FINAL_CHECKPOINT_DIR)
    return {int(state["step"]) for state in optimizer.state.values()}


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
def test_anneal_continues_the_data_order_with_fresh_or_carried_optimizer_state(micro_job, two_workers, carried):
    pretrained = Path(micro_job("two-workers").output_dir)
    anneal_steps = 2
    job = replace(
        micro_job(f"anneal-{carried}", max_steps=anneal_steps, schedule=LRSchedule.anneal(1e-3, anneal_steps).to_dict()),
        init=Initialization(pretrained=str(pretrained), carry_optimizer=carried),
        start_state=TrainState(data_step=STEPS),
    )
    history, _ = run(job, 2)
    assert [m["data_step"] for m in history] == [STEPS, STEPS + 1]
    assert [m["lr"] for m in history] == pytest.approx([5e-4, 0.0])
    assert optimizer_steps(Path(job.output_dir)) == {STEPS + anneal_steps if carried else anneal_steps}
