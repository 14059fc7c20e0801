"""Tango step: the report of a whole run, written to ``report.md`` and printed."""
from __future__ import annotations

from tango import Step

from steps.common.artifacts import Artifact
from steps.common.step import ArtifactStep
from steps.report.render import evaluation_table, render_report

REPORT_FILE = "report.md"


@Step.register("report")
class WriteReport(ArtifactStep):
    """Collects every stage's summary: corpus counts per rule, tokens, losses, evaluation tables."""

    VERSION = "001"

    def run(
        self,
        title: str,
        corpus: dict[str, Artifact],
        training: dict[str, Artifact],
        evaluations: dict[str, Artifact],
        training_batch: Artifact | None = None,
        export: Artifact | None = None,
    ) -> Artifact:
        stages = {**corpus, **training, **{f"evaluate_{k}": v for k, v in evaluations.items()}}
        if training_batch is not None:
            stages["training_batch"] = training_batch
        if export is not None:
            stages["export"] = export
        evaluation_summaries = {name: a.summary for name, a in evaluations.items()}
        report = render_report(
            title,
            {name: a.summary for name, a in corpus.items()},
            {name: a.summary for name, a in training.items()},
            evaluation_summaries,
            training_batch.summary if training_batch else None,
            export.summary if export else None,
            {name: a.fingerprint for name, a in stages.items()},
        )
        out = self.output_dir()
        (out / REPORT_FILE).write_text(report)
        print(f"\n{title}: zero-shot accuracy (%) and held-out bits per byte\n")
        print(evaluation_table(evaluation_summaries))
        print(f"\nEvery stage's numbers: {REPORT_FILE} in the result of step '{self.name}' (listed below).\n")
        return self.artifact(out, {"stages": sorted(stages)})
