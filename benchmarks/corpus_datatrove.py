"""datatrove's side of the corpus benchmark, run in ``benchmarks/.venv-datatrove`` by ``corpus.py``.

``python benchmarks/corpus_datatrove.py <mode> <documents_dir> <output_dir> '<json options>'`` prints
one JSON line:

- ``filter``: a ``LocalPipelineExecutor`` (tasks = workers = option ``workers``) running ``JsonlReader``
  over the Dolma shards, ``GopherQualityFilter``, ``GopherRepetitionFilter``, ``C4QualityFilter``,
  ``PIIFormatter`` and a ``JsonlWriter`` of the kept documents, each step with its defaults (English);
  prints the documents read and kept, and per step its seconds (all tasks) and the documents it dropped,
  by reason;
- ``startup``: the same imports and pipeline objects, not run (the fixed cost of a run);
- ``decisions`` (not timed): the two Gopher filters alone, each with an exclusion writer; prints
  ``{"gopher": {id: reason or null}}``, the reason of the filter that dropped each document.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

SHARDS = "*/*.jsonl.gz"  # <source>/<source>-<k>.jsonl.gz, as corpus_input.py writes them
FILTER_STEPS = ("read", "gopher_quality", "gopher_repetition", "c4_quality", "pii", "write")  # filter_pipeline's


def executor(steps: list, output_dir: Path, workers: int) -> Any:
    """A ``LocalPipelineExecutor`` of ``steps``: ``workers`` tasks, as many at once, logs in ``output_dir``. Its
    workers are spawned (its default, forkserver, forks them from a server process no one waits for, so their CPU
    seconds would escape the benchmark's count; our side spawns its workers too)."""
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(steps, tasks=workers, workers=workers, logging_dir=str(output_dir / "logs"),
                                 skip_completed=False, start_method="spawn")


def gopher_steps(documents_dir: Path, excluded: Path | None) -> list:
    """The reader and the two Gopher filters, with exclusion writers under ``excluded`` when given."""
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    def exclusions(name: str) -> Any:
        return JsonlWriter(str(excluded / name)) if excluded else None

    return [JsonlReader(str(documents_dir), glob_pattern=SHARDS),
            GopherQualityFilter(exclusion_writer=exclusions("quality")),
            GopherRepetitionFilter(exclusion_writer=exclusions("repetition"))]


def filter_pipeline(documents_dir: Path, output_dir: Path, workers: int) -> Any:
    from datatrove.pipeline.filters import C4QualityFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.writers import JsonlWriter

    steps = [*gopher_steps(documents_dir, None), C4QualityFilter(), PIIFormatter(),
             JsonlWriter(str(output_dir / "kept"))]
    return executor(steps, output_dir, workers)


def total(metric: dict[str, Any] | float) -> float:
    """The total of one of datatrove's metrics (saved as a bare number when it was only ever 1)."""
    return metric["total"] if isinstance(metric, dict) else metric


def step_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """One step's figures from datatrove's stats: seconds (summed over tasks) and its document counts."""
    return {"seconds": total(stats["time_stats"]),
            **{name: total(value) for name, value in stats["stats"].items()
               if name in ("total", "forwarded", "dropped", "documents") or name.startswith("dropped_")}}


def run_filter(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    stats = json.loads(filter_pipeline(documents_dir, output_dir, options["workers"]).run().to_json())
    steps = {name: step_stats(entry) for name, entry in zip(FILTER_STEPS, stats, strict=True)}
    reader, writer = stats[0]["stats"], stats[-1]["stats"]
    return {"documents_in": total(reader.get("documents", 0)), "documents_kept": total(writer.get("total", 0)),
            "steps": steps}


def startup(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    filter_pipeline(documents_dir, output_dir, 1)
    return {}


def rows(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.rglob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            yield from map(json.loads, handle)


def decisions(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    excluded = output_dir / "excluded"
    executor(gopher_steps(documents_dir, excluded), output_dir, options["workers"]).run()
    reasons = {row["id"]: row["metadata"]["filter_reason"] for row in rows(excluded)}
    return {"gopher": {row["id"]: reasons.get(row["id"]) for row in rows(documents_dir)}}


MODES: dict[str, Callable[[Path, Path, dict[str, Any]], dict[str, Any]]] = {
    "filter": run_filter, "startup": startup, "decisions": decisions,
}

if __name__ == "__main__":
    mode, documents, output, options = sys.argv[1:]
    print(json.dumps(MODES[mode](Path(documents), Path(output), json.loads(options))))
