"""``olmo-tango batch`` / ``seen``: batches rebuilt through the training_batch step equal what the trainer logged.

A small workflow (a generated corpus, a 3-step pretrain and a 2-step anneal of the micro model) runs in-process
for the fast tests; the slow test asks the micro workflow's workspace from fresh processes.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules
from integrations.workspace import OlmoWorkspace

from steps.cli import main
from steps.commands.regenerate import (
    RegenerationError,
    logged_batches,
    logged_data_steps,
    open_workspace,
    plan_from_workflow,
    plan_from_workspace,
    read_metrics,
    regenerate_batch,
    steps_seeing,
)
from steps.data.batches import batch_hash

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
OLMO_TANGO = Path(sys.executable).parent / "olmo-tango"
SEED, BATCH_SIZE, SEQ_LEN = 6198, 4, 32
PRETRAIN_STEPS, ANNEAL_STEPS = 3, 2


def tokenized_corpus_steps(corpus: Path) -> dict:
    """The steps of a workflow that tokenize the Dolma shards under ``corpus`` with OLMo's tokenizer."""
    return {
            "source": {
                "type": "corpus_source", "source": {"name": "generated", "type": "files", "paths": [str(corpus)]}
            },
            "tokenizer": {
                "type": "tokenizer",
                "tokenizer": {"name": "allenai_gpt-neox-olmo-dolma-v1_5", "eos_token_id": 50279, "pad_token_id": 1},
            },
            "tokenize": {"type": "tokenize_documents", "documents": {"type": "ref", "ref": "source"},
                         "tokenizer": {"type": "ref", "ref": "tokenizer"}},
    }


def small_workflow(corpus: Path) -> dict:
    training = {"max_grad_norm": 1.0, "seed": SEED, "precision": "fp32", "micro_batch_size": 2}
    data_order = {"seed": SEED, "global_batch_size": BATCH_SIZE}
    execution = {"device": "cpu", "world_size": 1, "log_every": 1}
    return {
        "steps": {
            **tokenized_corpus_steps(corpus),
            "instances": {"type": "build_instances", "tokens": {"type": "ref", "ref": "tokenize"}, "seq_len": SEQ_LEN},
            "pretrain": {
                "type": "pretrain", "instances": {"type": "ref", "ref": "instances"}, "data_order": data_order,
                "model": {"preset": "olmo-micro", "max_sequence_length": SEQ_LEN},
                "train": {**training, "max_steps": PRETRAIN_STEPS,
                          "schedule": {"kind": "linear", "peak_lr": 1e-3, "warmup_steps": 1, "total_steps": 3}},
                "execution": execution,
            },
            "anneal": {
                "type": "anneal", "pretrained": {"type": "ref", "ref": "pretrain"},
                "instances": {"type": "ref", "ref": "instances"}, "data_order": data_order,
                "train": {**training, "max_steps": ANNEAL_STEPS}, "execution": execution,
            },
        }
    }


def seen_steps(answer: dict) -> list[tuple[int, int]]:
    return [(seen["epoch"], seen["step"]) for seen in answer["seen"]]


@pytest.fixture(scope="module")
def trained(make_corpus, tmp_path_factory) -> tuple[Path, OlmoWorkspace]:
    """(workflow file, workspace in which its anneal, and so everything before it, is computed)."""
    root = tmp_path_factory.mktemp("regenerate")
    make_corpus(root / "corpus")
    workflow = root / "workflow.json"
    workflow.write_text(json.dumps(small_workflow(root / "corpus")))
    workspace = OlmoWorkspace(str(root / "workspace"))
    import_module_and_submodules("steps")
    StepGraph.from_file(workflow)["anneal"].result(workspace)
    return workflow, workspace


@pytest.fixture(scope="module")
def plan(trained):
    return plan_from_workflow(*trained)


def test_every_trained_batch_is_rebuilt_with_the_hash_its_run_logged(plan):
    logged = logged_batches(plan)
    assert sorted(logged) == list(range(PRETRAIN_STEPS + ANNEAL_STEPS))
    for step in range(PRETRAIN_STEPS + ANNEAL_STEPS):
        batch = regenerate_batch(plan, step)
        assert batch["batch_hash"] == batch_hash(np.asarray(batch["token_ids"]))
        assert batch["logged_batch_hash"] == batch["batch_hash"] and batch["matches"] is True
        run = "pretrain" if step < PRETRAIN_STEPS else "anneal"
        assert batch["logged_by"] == run
        assert batch["logged"][0]["step"] == (step + 1 if run == "pretrain" else step - PRETRAIN_STEPS + 1)
        assert [rank["logged_batch_hash"] for rank in batch["ranks"]] == [batch["batch_hash"]]  # one rank trained


def test_a_batch_no_run_trained_has_no_logged_hash(plan):
    batch = regenerate_batch(plan, PRETRAIN_STEPS + ANNEAL_STEPS)
    assert batch["logged_batch_hash"] is None and batch["logged_by"] is None and batch["matches"] is None
    assert batch["logged"] == [] and len(batch["token_ids"]) == BATCH_SIZE


def test_regeneration_runs_the_training_batch_step_and_is_cached(plan):
    batch = regenerate_batch(plan, 1)
    assert batch["training_batch"].startswith("TrainingBatch-") and batch["instances_step"] == plan.instances.unique_id
    assert batch["training_batch"] in {info.unique_id for info in plan.workspace.search_step_info()}
    assert regenerate_batch(plan, 1) == batch


def test_the_workspace_form_asks_the_same_training_batch_step(plan, trained):
    _, workspace = trained
    fragment = plan.instances.unique_id.split("-")[-1][:10]
    alone = plan_from_workspace(workspace, fragment, SEED, BATCH_SIZE, world_size=1, micro_batch_size=2)
    assert alone.instances.unique_id == plan.instances.unique_id
    assert regenerate_batch(alone, 2) == regenerate_batch(plan, 2)  # same fingerprint, same logged runs


def test_two_ranks_split_the_same_global_batch(plan, trained):
    alone = plan_from_workspace(trained[1], plan.instances.unique_id, SEED, BATCH_SIZE, world_size=2)
    one, two = regenerate_batch(plan, 0), regenerate_batch(alone, 0)
    assert two["batch_hash"] == one["batch_hash"] == two["logged_batch_hash"]
    tokens = np.asarray(two["token_ids"])
    assert [rank["rows"] for rank in two["ranks"]] == [[0, 2], [1, 3]]
    assert [rank["micro_batches"] for rank in two["ranks"]] == [[one["instances"][0::2]], [one["instances"][1::2]]]
    assert [rank["batch_hash"] for rank in two["ranks"]] == [batch_hash(tokens[0::2]), batch_hash(tokens[1::2])]
    assert not any("logged_batch_hash" in rank for rank in two["ranks"])  # the run trained on one rank



def test_a_workflow_plan_splits_batches_over_the_world_size_of_its_pretrain_execution(trained, tmp_path):
    workflow, workspace = trained
    config = json.loads(workflow.read_text())
    config["steps"]["pretrain"]["execution"] = {**config["steps"]["pretrain"]["execution"], "world_size": 2}
    two_ranks = tmp_path / "two-ranks.json"
    two_ranks.write_text(json.dumps(config))
    assert plan_from_workflow(two_ranks, workspace).world_size == 2  # the same instances (execution is no input)
    assert plan_from_workflow(workflow, workspace).world_size == 1

def test_seen_lists_the_steps_holding_a_document_and_which_were_trained(plan):
    batch = regenerate_batch(plan, 1)
    document = batch["documents"][0]["documents"][0]["id"]
    answer = steps_seeing(plan, document)
    assert answer["epochs"] == 1  # five trained data steps lie in the first epoch
    assert (0, 1) in seen_steps(answer)
    for seen in answer["seen"]:
        held = regenerate_batch(plan, seen["step"])["documents"]
        assert any(doc["id"] == document for entry in held for doc in entry["documents"])
        trained = seen["step"] < PRETRAIN_STEPS + ANNEAL_STEPS
        assert (seen["trained_by"] is not None) == trained
    assert steps_seeing(plan, document, epochs=3)["seen"][: len(answer["seen"])] == answer["seen"]
    with pytest.raises(RegenerationError, match="'no-such-document' is not in any provenance file"):
        steps_seeing(plan, "no-such-document")


def test_questions_that_cannot_be_answered_say_why(trained, tmp_path):
    workflow, workspace = trained
    empty = OlmoWorkspace(str(tmp_path / "empty"))
    with pytest.raises(RegenerationError, match=r"step 'instances' \(BuildInstances-.*run `tango run .*workflow.json"):
        plan_from_workflow(workflow, empty)
    with pytest.raises(RegenerationError, match="no such workflow file"):
        plan_from_workflow(tmp_path / "missing.jsonnet", workspace)
    with pytest.raises(RegenerationError, match="micro-batch size 3 does not divide a rank's 4 instances"):
        plan_from_workflow(workflow, workspace, micro_batch_size=3)
    with pytest.raises(RegenerationError, match="world size 3 does not divide the global batch size 4"):
        plan_from_workflow(workflow, workspace, world_size=3)
    with pytest.raises(RegenerationError, match=r"no computed build_instances step matches 'nope'; computed ones: \["):
        plan_from_workspace(workspace, "nope", SEED, BATCH_SIZE)
    with pytest.raises(RegenerationError, match="no such directory"):
        open_workspace(str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()


def test_metrics_rows_give_their_data_step():
    rows = [
        {"step": 1, "batch_hash": "a"},
        {"step": 2, "loss": 1.0},  # no batch hash: not a data-order batch
        {"step": 3, "batch_hash": "c", "data_step": 40},
    ]
    assert [(k, row["batch_hash"]) for k, row in logged_data_steps(rows)] == [(0, "a"), (40, "c")]
    assert [k for k, _ in logged_data_steps(rows, continued_from=12)] == [12, 40]  # an anneal's rows


def test_a_bad_metrics_line_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "batch_hash": "a"}\n{"step": 2,\n')
    with pytest.raises(RegenerationError, match=r"metrics.jsonl:2: expected a JSON object with an integer 'step'"):
        read_metrics(path)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["batch", "--step", "1"], "without WORKFLOW, --instances, --seed, --batch-size are needed"),
        (["batch", "w.jsonnet", "--seed", "1", "--step", "1"], "give either WORKFLOW or --instances"),
        (["batch", "w.jsonnet", "--step", "-1"], "--step: expected an integer >= 0, got '-1'"),
        (["batch", "w.jsonnet", "--step", "1", "--world-size", "0"], "--world-size: expected an integer >= 1"),
        (["seen", "w.jsonnet"], "the following arguments are required: --document"),
        (["batch", "w.jsonnet", "--step", "1", "--json", "--output", "x.json"], "not allowed with argument"),
    ],
)
def test_command_line_argument_errors(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_command_line_answers(trained, tmp_path, capsys):
    workflow, workspace = trained
    common = [str(workflow), "-w", workspace.url]
    assert main(["batch", *common, "--step", "0", "4", "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(a["step"], a["logged_by"], a["matches"]) for a in answers] == [(0, "pretrain", True), (4, "anneal", True)]

    assert main(["batch", *common, "--step", "1", "--output", str(tmp_path / "batch.json")]) == 0
    summary = capsys.readouterr().out
    saved = json.loads((tmp_path / "batch.json").read_text())
    assert f"logged hash  {saved['batch_hash']} by pretrain step 2: matches" in summary
    assert saved["documents"][0]["documents"][0]["id"] in summary

    assert main(["seen", *common, "--document", "no-such-document"]) == 1
    assert "olmo-tango seen: error: document 'no-such-document'" in capsys.readouterr().err


def test_global_indices_export_olmo_layout_whose_slices_are_the_batches(plan, trained, tmp_path, capsys):
    workflow, workspace = trained
    target = tmp_path / "global_indices.npy"
    assert main(["global-indices", str(workflow), "-w", workspace.url, "--epoch", "0", "--to", str(target)]) == 0
    assert f"wrote {target}: epoch 0" in capsys.readouterr().out
    indices = np.fromfile(target, dtype="<u4")
    assert np.array_equal(np.sort(indices), np.arange(len(indices)))
    size = plan.batch_size
    for step in range(2):
        assert indices[step * size : (step + 1) * size].tolist() == regenerate_batch(plan, step)["instances"]


@pytest.mark.slow
def test_micro_workflow_batches_regenerate_in_a_fresh_process_to_their_logged_hashes(micro_workspace):
    """The issue's acceptance test: train (the micro workflow), then rebuild every trained batch through the
    training_batch step in a fresh process, for world size 1 and 2."""
    import_module_and_submodules("steps")
    graph = StepGraph.from_file(MICRO)
    cache = OlmoWorkspace(str(micro_workspace)).step_cache
    pretrained, trained = cache[graph["pretrain"]].summary["data_step"], cache[graph["anneal"]].summary["data_step"]
    steps = [str(k) for k in range(trained)]

    def olmo_tango(*arguments: str) -> list[dict]:
        result = subprocess.run(
            [str(OLMO_TANGO), *arguments, "-w", str(micro_workspace), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return [json.loads(line) for line in result.stdout.splitlines()]

    answers = olmo_tango("batch", str(MICRO), "--step", *steps)
    assert [a["step"] for a in answers] == list(range(trained))
    for a in answers:
        assert a["batch_hash"] == a["logged_batch_hash"] and a["matches"] is True
        assert a["logged_by"] == ("pretrain" if a["step"] < pretrained else "anneal")
    for a in olmo_tango("batch", str(MICRO), "--world-size", "2", "--micro-batch-size", "1", "--step", *steps):
        assert a["batch_hash"] == answers[a["step"]]["batch_hash"] == a["logged_batch_hash"]
        assert len(a["ranks"]) == 2

    instances = answers[0]["instances_step"]
    alone = olmo_tango("batch", "--instances", instances, "--seed", "6198", "--batch-size", "4", "--step", "0")
    assert alone[0]["batch_hash"] == answers[0]["batch_hash"] and alone[0]["matches"] is True

    last = answers[-1]
    document = last["documents"][0]["documents"][0]["id"]
    [seen] = olmo_tango("seen", str(MICRO), "--document", document)
    assert (last["epoch"], last["step"]) in seen_steps(seen)
    assert next(s for s in seen["seen"] if s["step"] == last["step"])["trained_by"]["by"] == "anneal"
