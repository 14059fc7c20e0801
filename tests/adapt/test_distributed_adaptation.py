"""SFT and DPO through the launcher, as the ``sft`` and ``dpo`` steps run them (elastic launcher, gloo, FSDP2), on
the micro workflow's artifacts: 2 workers match 1 over 10 steps (SFT packed too); a run killed with -9 resumes to
bit-identical weights; every training step prints the same progress line."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
from tango import Step, StepGraph
from tango.common.util import import_module_and_submodules

from integrations.workspace import OlmoWorkspace
from steps.train.worker import TrainingJob
from tests.train.launching import (
    ROOT, assert_identical_weights, assert_weights_close, kill_after_checkpoints, launch, outputs, run,
)

MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
STEPS = 10
STAGES = ("sft", "dpo")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def step_job(micro_workspace, tmp_path_factory):
    """``step_job(stage, name, steps=STEPS, **execution)``: the job the micro workflow's training step ``stage``
    builds, trained for ``steps`` steps (an adaptation's LR schedule spread over them), without W&B, in a
    directory of its own."""
    import_module_and_submodules("steps")
    graph = StepGraph.from_file(MICRO)
    workspace = OlmoWorkspace(str(micro_workspace))
    root = tmp_path_factory.mktemp("training-jobs")

    def make(stage: str, name: str, steps: int = STEPS, **execution) -> TrainingJob:
        step = graph[stage]
        step.work_dir_for_run = root / name
        arguments = {key: workspace.step_cache[value] if isinstance(value, Step) else value
                     for key, value in step.kwargs.items()}
        job, _ = step.job(True, **arguments)
        config = (arguments["train"].train_config(num_steps=steps) if stage in STAGES
                  else replace(job.config, max_steps=steps))
        return replace(job, config=config, wandb_run=None, execution=replace(job.execution, **execution))

    return make


@pytest.fixture(scope="module")
def trained(step_job):
    """stage -> workers -> (history, weights) of the uninterrupted runs."""
    return {stage: {workers: run(step_job(stage, f"{stage}-{workers}"), workers) for workers in (1, 2)}
            for stage in STAGES}


@pytest.mark.parametrize("stage", STAGES)
def test_two_workers_match_one_within_1e_5_over_10_steps(trained, stage):
    (history_1, weights_1), (history_2, weights_2) = trained[stage][1], trained[stage][2]
    assert [m["step"] for m in history_1] == [m["step"] for m in history_2] == list(range(1, STEPS + 1))
    assert [m["batch_hash"] for m in history_2] == [m["batch_hash"] for m in history_1]
    for ours, theirs in zip(history_2, history_1):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5), ours["step"]
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-3), ours["step"]
    assert history_1[-1]["loss"] < history_1[0]["loss"]  # it trains
    assert_weights_close(weights_2, weights_1)
    if stage == "dpo":
        assert history_1[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # policy = reference at the start
        assert history_2[-1]["rewards/accuracies"] == pytest.approx(history_1[-1]["rewards/accuracies"])


def test_packed_sft_two_workers_match_one(step_job):
    """SFT with packing (the micro workflow's 16 conversations in fewer rows): the same batches, losses and
    weights on 2 workers as on 1."""
    runs = {}
    for workers in (1, 2):
        job = step_job("sft", f"sft-packed-{workers}")
        job = replace(job, data=replace(job.data, packing=True))
        assert len(job.data.rows) < len(job.data.items)  # conversations share rows
        runs[workers] = run(job, workers)
    (history_1, weights_1), (history_2, weights_2) = runs[1], runs[2]
    assert [m["batch_hash"] for m in history_2] == [m["batch_hash"] for m in history_1]
    for ours, theirs in zip(history_2, history_1):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5), ours["step"]
    assert history_1[-1]["loss"] < history_1[0]["loss"]
    assert_weights_close(weights_2, weights_1)


@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_then_resume_ends_bit_identical(step_job, trained, stage):
    job = step_job(stage, f"{stage}-killed", checkpoint_every=2)
    survivors = kill_after_checkpoints(job, 2, checkpoints=2)  # the step-4 checkpoint exists
    assert 4 <= survivors[-1] < STEPS

    result = launch(job, 2)  # `tango run` again: the step builds the same job
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"at step {survivors[-1]}" in result.stderr  # it resumed
    history, weights = outputs(job)
    reference_history, reference_weights = trained[stage][2]
    assert [m["loss"] for m in history] == [m["loss"] for m in reference_history]
    assert_identical_weights(weights, reference_weights)


PROGRESS = re.compile(r"^step +(\d+)/(\d+) \[[#.]{10}\] +\d+%  loss \d+\.\d{4}  lr \d\.\de[-+]\d\d  gnorm \d+\.\d{3}  "
                      r"[\d,]+ tok/s  mem \d+\.\d GiB(  ETA \w+)?$")


@pytest.mark.parametrize("stage", ["pretrain", *STAGES])
def test_every_training_step_prints_the_same_progress_line(step_job, stage):
    result = launch(step_job(stage, f"{stage}-progress", steps=3, log_every=1), 1)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    lines = [match.groups()[:2] for line in result.stderr.splitlines() if (match := PROGRESS.match(line))]
    assert lines == [("1", "3"), ("2", "3"), ("3", "3")], result.stderr[-3000:]
