"""The report step's inputs: training metrics and evaluation metrics read with errors that name the file,
``variants`` checked before anything runs, and the micro workflow's report with its plots."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tango import StepGraph
from integrations.workspace import OlmoWorkspace

from steps.common.artifacts import Artifact
from steps.report.curves import read_history
from steps.report.steps import WriteReport, compared_first, evaluation_record

MICRO = Path(__file__).resolve().parents[2] / "workflows" / "olmo-micro.jsonnet"


def test_training_metrics_are_read_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "tokens_seen": 8, "loss": 9.5}\n\n{"step": 2, "tokens_seen": 16, "loss": 9.0}\n')
    assert [r["loss"] for r in read_history(path)] == [9.5, 9.0]
    path.write_text('{"step": 1, "tokens_seen": 8, "loss": 9.5}\n{"step": 2, "loss"\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: expected a JSON object"):
        read_history(path)
    path.write_text('{"step": 1, "loss": 9.5}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: .* missing tokens_seen"):
        read_history(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no training metrics"):
        read_history(tmp_path / "missing.jsonl")


def test_an_evaluation_record_takes_every_tasks_metrics_from_metrics_json(tmp_path):
    summary = {"average": 0.5, "bits_per_byte": 1.5, "tasks": {"copa": {"primary": 0.5}}}
    full = {"copa": {"n": 10, "acc_raw": 0.5, "acc_per_token": 0.6, "acc_per_char": 0.4, "acc_uncond": 0.3,
                     "primary_metric": "acc_raw", "primary": 0.5, "primary_ci95": [0.2, 0.8]}}
    (tmp_path / "metrics.json").write_text(json.dumps({"downstream": {"tasks": full, "average": 0.5}}))
    record = evaluation_record(Artifact(tmp_path, {"summary": summary}))
    assert record == {**summary, "tasks": full}
    (tmp_path / "metrics.json").write_text(json.dumps({"perplexity": {}}))
    with pytest.raises(ValueError, match=r"metrics.json: expected the evaluate step's metrics with downstream.tasks"):
        evaluation_record(Artifact(tmp_path, {"summary": summary}))


@pytest.mark.parametrize("variants, baseline, message", [
    ({"only": {"training": {}}}, "only", "at least two named variants"),
    ({"a": {"training": {}}, "b": {"evaluation": {}}}, "a", r"report.variants.b: expected a dict with some of \['evaluations', 'training'\], got \['evaluation'\]"),
    ({"a": {"training": {}}, "b": ["evaluations"]}, "a", "report.variants.b: expected a dict"),
    ({"a": {"training": {}}, "b": {"training": {}}}, "c", r"report.baseline: .* one of \['a', 'b'\]; got 'c'"),
    (None, "a", "report.baseline: names one of the variants, but there are none"),
])
def test_bad_variants_are_named_before_anything_runs(variants, baseline, message):
    with pytest.raises(ValueError, match=message):
        WriteReport.validate({"variants": variants, "baseline": baseline})


def test_the_baseline_comes_first_then_the_other_variants_by_name():
    assert compared_first({"b": {}, "z": {}, "a": {}}, "z") == ["z", "a", "b"]


@pytest.mark.slow
def test_the_micro_workflows_report_links_its_plots(micro_workspace):
    report = OlmoWorkspace(str(micro_workspace)).step_cache[StepGraph.from_file(MICRO)["report"]]
    assert {"loss_curve.png", "downstream_by_model.png"} <= set(report.summary["plots"])
    text = (report.path / "report.md").read_text()
    for name in report.summary["plots"]:
        assert f"]({name})" in text and (report.path / name).read_bytes().startswith(b"\x89PNG")
    assert "### Held-out bits per byte: own sources vs unrelated sets" in text
    assert set(report.manifest["files"]) == {"report.md", *report.summary["plots"]}
