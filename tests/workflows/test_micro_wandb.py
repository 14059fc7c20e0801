"""The micro workflow's W&B runs (``execution.wandb``, offline): one per training and evaluation step, in the
step's work directory, named ``olmo-micro/<step>``, grouped by workflow, with the step's fingerprint as its id
and the step's arguments (inputs by fingerprint) as its config. Read back with ``wandb leet inspect``."""
import json
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules

from integrations.workspace import OlmoWorkspace
from tests.integrations.wandb_runs import finished_run, run_directories

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
TRAINING = {"pretrain": "instances", "anneal": "pretrained", "sft": "pretrained", "dpo": "pretrained"}
EVALUATIONS = ("evaluate_base", "evaluate_anneal", "evaluate_sft", "evaluate_dpo")

pytestmark = pytest.mark.slow
import_module_and_submodules("steps")


def wandb_run(workspace: Path, unique_id: str) -> dict:
    (directory,) = run_directories(workspace / "work" / unique_id, unique_id)
    return finished_run(directory)


@pytest.mark.parametrize("name", [*TRAINING, *EVALUATIONS])
def test_a_training_or_evaluation_step_has_a_named_grouped_configured_wandb_run(micro_workspace, name):
    graph = StepGraph.from_file(MICRO)
    step = graph[name]
    run = wandb_run(micro_workspace, step.unique_id)
    assert (run["id"], run["name"], run["group"], run["project"]) == (
        step.unique_id, f"olmo-micro/{name}", "olmo-micro", "olmo-tango"
    )
    assert run["exit_code"] == 0
    config = run["config"]
    assert config["tango"] == {"step": name, "fingerprint": step.unique_id, "class": type(step).__name__,
                               "version": step.VERSION, "workflow": "olmo-micro"}
    assert config["execution"]["wandb"] == {"workflow": "olmo-micro", "project": "olmo-tango", "mode": "offline"}
    for argument, value in step.kwargs.items():  # every argument; an input by its fingerprint
        assert argument in config
        if hasattr(value, "unique_id"):
            assert config[argument] == value.unique_id
    summary = OlmoWorkspace(str(micro_workspace)).step_cache[step].summary
    if name in TRAINING:
        assert config[TRAINING[name]] == step.kwargs[TRAINING[name]].unique_id
        assert config["train"] == json.loads(json.dumps(step.kwargs["train"].to_dict()))  # every setting, defaults too
        assert [row["step"] for row in run["history"]] == list(range(1, summary["step"] + 1))
        assert run["history"][-1]["loss"] == pytest.approx(summary["loss_last"])
    else:
        assert config["model"] == step.kwargs["model"].unique_id
        assert run["history"] == []
        assert run["summary"]["average"] == pytest.approx(summary["average"])
        assert run["summary"]["bits_per_byte"] == pytest.approx(summary["bits_per_byte"])
        assert run["summary"]["tasks/boolq/primary"] == pytest.approx(summary["tasks"]["boolq"]["primary"])


def test_other_steps_have_no_wandb_run(micro_workspace):
    graph = StepGraph.from_file(MICRO)
    logged = {name for name, step in graph.items() if (micro_workspace / "work" / step.unique_id / "wandb").exists()}
    assert logged == set(TRAINING) | set(EVALUATIONS)
