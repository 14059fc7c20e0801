"""Tango step: the report of a whole run, written to ``report.md`` beside its PNG plots, and printed."""
from __future__ import annotations

import json
from typing import Any

from tango import Step

from olmo_model.config import require
from steps.common.artifacts import Artifact
from steps.common.step import ArtifactStep
from steps.evaluation.steps import METRICS_FILE as EVALUATION_METRICS
from steps.report.curves import CURVE_STAGES, read_history
from steps.report.evaluation_tables import evaluation_table
from steps.report.plots import write_plots
from steps.report.render import render_report
from steps.train.worker import METRICS_FILE as TRAINING_METRICS

REPORT_FILE = "report.md"
VARIANT_PARTS = {"training", "evaluations"}


def evaluation_record(evaluation: Artifact) -> dict[str, Any]:
    """An ``evaluate`` artifact's summary with every task's full metrics from its ``metrics.json``."""
    path = evaluation.path / EVALUATION_METRICS
    try:
        tasks = json.loads(path.read_text())["downstream"]["tasks"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: expected the evaluate step's metrics with downstream.tasks ({exc!r})") from None
    return {**evaluation.summary, "tasks": tasks}


def compared_first(variants: dict[str, Any], baseline: str) -> list[str]:
    """The variants' names, the one the others are compared with first, then the others by name."""
    return [baseline, *sorted(set(variants) - {baseline})]


def variant_numbers(variant: dict[str, dict[str, Artifact]]) -> dict[str, dict[str, dict[str, Any]]]:
    """A variant's training summaries and evaluation records by stage."""
    return {
        "training": {stage: a.summary for stage, a in variant.get("training", {}).items()},
        "evaluations": {stage: evaluation_record(a) for stage, a in variant.get("evaluations", {}).items()},
    }


@Step.register("report")
class WriteReport(ArtifactStep):
    """Collects every stage's numbers: corpus counts per rule, tokens, losses, evaluation tables, plots,
    and for an ablation a side-by-side table of ``variants`` (``{name: {"training": {stage: step},
    "evaluations": {stage: step}}}``), each beside the variant named ``baseline``."""

    VERSION = "003"

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        variants, baseline = kwargs.get("variants"), kwargs.get("baseline")
        if variants is None:
            if baseline is not None:
                raise ValueError("report.baseline: names one of the variants, but there are none")
            return
        if not isinstance(variants, dict) or len(variants) < 2:
            raise ValueError(f"report.variants: expected at least two named variants, got {variants!r}")
        if baseline not in variants:
            raise ValueError(f"report.baseline: expected the name of the variant compared with, one of {sorted(variants)}; "
                             f"got {baseline!r}")
        for name, variant in variants.items():
            # Variants hold steps, which Tango resolves inside plain dicts, so they are checked here, not typed.
            require(isinstance(variant, dict) and set(variant) <= VARIANT_PARTS, f"report.variants.{name}",
                    f"a dict with some of {sorted(VARIANT_PARTS)}", variant if not isinstance(variant, dict) else
                    sorted(variant))

    def run(
        self,
        title: str,
        corpus: dict[str, Artifact],
        training: dict[str, Artifact],
        evaluations: dict[str, Artifact],
        training_batch: Artifact | None = None,
        export: Artifact | None = None,
        variants: dict[str, dict[str, dict[str, Artifact]]] | None = None,
        baseline: str | None = None,
    ) -> Artifact:
        stages = {**corpus, **training, **{f"evaluate_{k}": v for k, v in evaluations.items()}}
        if training_batch is not None:
            stages["training_batch"] = training_batch
        if export is not None:
            stages["export"] = export
        for name, variant in (variants or {}).items():
            for part, by_stage in variant.items():
                stages.update({f"{name}/{part}/{stage}": a for stage, a in by_stage.items()})
        records = {name: evaluation_record(a) for name, a in evaluations.items()}
        histories = {name: read_history(a.path / TRAINING_METRICS) for name, a in training.items() if name in CURVE_STAGES}
        out = self.output_dir()
        plots = write_plots(out, histories, records)
        report = render_report(
            title,
            {name: a.summary for name, a in corpus.items()},
            {name: a.summary for name, a in training.items()},
            records,
            training_batch.summary if training_batch else None,
            export.summary if export else None,
            {name: a.fingerprint for name, a in stages.items()},
            plots,
            {name: variant_numbers(variants[name]) for name in compared_first(variants, baseline)} if variants else None,
        )
        (out / REPORT_FILE).write_text(report)
        print(f"\n{title}: zero-shot accuracy (%, 95% interval) and held-out bits per byte\n")
        print(evaluation_table(records))
        print(f"\nEvery stage's numbers: {REPORT_FILE} and its plots ({', '.join(plots)}) in the result of "
              f"step '{self.name}' (listed below).\n")
        return self.artifact(out, {"stages": sorted(stages), "plots": sorted(plots)})
