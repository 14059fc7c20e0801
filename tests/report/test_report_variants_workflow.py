"""workflows/lib/variants.libsonnet: olmo-tiny's ablations in one graph beside it, each shared step computed once,
the report reading every variant's training and evaluation steps."""
from __future__ import annotations

from pathlib import Path

from tango import StepGraph
from tango.common.params import Params
from tango.common.util import import_module_and_submodules

import_module_and_submodules("steps")
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def descends_from(step, ancestor) -> bool:
    return step is ancestor or any(descends_from(dependency, ancestor) for dependency in step.dependencies)


def test_side_by_side_puts_each_ablation_beside_olmo_tiny_and_shares_unchanged_steps():
    graph = StepGraph.from_file(WORKFLOWS / "ablations" / "side-by-side.jsonnet")
    baseline = {name: graph[name] for name in Params.from_file(WORKFLOWS / "olmo-tiny.jsonnet")["steps"]}
    cosine = {name: graph[f"cosine_schedule_{name}"] for name in baseline if f"cosine_schedule_{name}" in graph}
    assert set(baseline) - set(cosine) == {"report", "export", "training_batch"}
    for name, step in cosine.items():  # the ablation changes pretrain and what follows it; the rest is computed once
        changed = descends_from(step, cosine["pretrain"])
        assert (step.unique_id != baseline[name].unique_id) == changed, name
    assert cosine["pretrain"].kwargs["train"].schedule.kind == "cosine"
    assert graph["pretrain"].kwargs["train"].schedule.kind == "linear"

    report = graph["report"].kwargs
    variants = report["variants"]
    assert report["baseline"] == "olmo-tiny"
    assert set(variants) == {"olmo-tiny", "cosine-schedule", "no-paragraph-dedup", "own-tokenizer", "relaxed-gopher"}
    assert {stage: step.name for stage, step in variants["olmo-tiny"]["training"].items()} == {
        "pretrain": "pretrain", "anneal": "anneal", "sft": "sft", "dpo": "dpo"}
    assert {stage: step.name for stage, step in variants["cosine-schedule"]["evaluations"].items()} == {
        "base": "cosine_schedule_evaluate_base", "anneal": "cosine_schedule_evaluate_anneal",
        "sft": "cosine_schedule_evaluate_sft", "dpo": "cosine_schedule_evaluate_dpo"}
    assert graph["own_tokenizer_pretrain"].kwargs["instances"].name == "own_tokenizer_instances"
