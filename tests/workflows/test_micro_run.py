"""End to end through the `tango` command: the micro workflow runs, re-runs from the cache, and an
ablation recomputes exactly the overridden step and its descendants. The workflow's first run is the
session fixture ``micro_workspace`` (tests/conftest.py), shared with other end-to-end tests."""
import json
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.util import import_module_and_submodules
from integrations.workspace import OlmoWorkspace

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"

pytestmark = pytest.mark.slow
import_module_and_submodules("steps")


def descendants(graph: StepGraph, name: str) -> set[str]:
    found = {name}
    changed = True
    while changed:
        changed = False
        for step_name, step in graph.items():
            if step_name not in found and any(dep.name in found for dep in step.dependencies):
                found.add(step_name)
                changed = True
    return found


def test_every_stage_ran_and_reported(micro_workspace):
    graph = StepGraph.from_file(MICRO)
    cache = OlmoWorkspace(str(micro_workspace)).step_cache
    report = cache[graph["report"]]
    text = (report.path / "report.md").read_text()
    for section in ("## Evaluation", "## Corpus", "### filter", "### dedup", "### mix", "## Tokens", "## Training"):
        assert section in text
    for stage in ("pretrain", "anneal", "sft", "dpo"):
        assert f"| {stage} |" in text
    pretrain = cache[graph["pretrain"]].summary
    assert pretrain["step"] == 12 and pretrain["loss_last"] < pretrain["loss_first"] - 0.5
    anneal = cache[graph["anneal"]].summary
    assert anneal["lr_last"] == 0.0 and anneal["continued_from_data_step"] == 12
    filtered = cache[graph["filter"]].summary["total"]
    assert filtered["documents_in"] == filtered["documents_kept"] + sum(filtered["removed_by_rule"].values())
    hf = cache[graph["export"]].path
    assert json.loads((hf / "config.json").read_text())["model_type"] == "olmo"


def test_second_run_comes_from_the_cache(micro_workspace, tango_run):
    started, output = tango_run(MICRO, micro_workspace)
    assert started == set()
    assert "Found output for step" in output


def test_ablation_recomputes_only_the_overridden_step_and_descendants(micro_workspace, tango_run, tmp_path):
    ablation = tmp_path / "no-paragraph-dedup.jsonnet"
    ablation.write_text(f"(import '{MICRO}') + {{ steps+: {{ dedup+: {{ config+: {{ paragraph: false }} }} }} }}")
    graph = StepGraph.from_file(ablation)
    expected = descendants(graph, "dedup")
    assert {"mix", "tokenize", "pretrain", "report"} <= expected
    assert not expected & {"filter", "tokenizer"} and not any(n.startswith("source_") for n in expected)

    cache = OlmoWorkspace(str(micro_workspace)).step_cache
    assert {name for name, step in graph.items() if step not in cache} == expected
    started, _ = tango_run(ablation, micro_workspace)
    assert started == expected
