"""The report's evaluation tables, from evaluation records.

An evaluation record is an ``evaluate`` artifact's summary whose ``tasks`` hold the full per-task metrics
of its ``metrics.json`` (``n``, the four accuracies, ``primary_metric``, ``primary``, ``primary_ci95`` and
``prompt_source``: "oe_eval" for OLMES prompts, "hf" for the paper's);
``bits_per_byte`` is over held-out documents of the model's own sources, ``bits_per_byte_by_source`` per
source, and ``bits_per_byte_by_set`` (if any) per Paloma-format set from elsewhere.
"""
from __future__ import annotations

from typing import Any, Mapping

from steps.evaluation.downstream import METRICS
from steps.report.markdown import in_stage_order, percent, percent_with_interval, table

# Zero-shot results of the released models (HF model cards, 9 core tasks), in percent.
PAPER_RESULTS = {
    "OLMo-1B": {"arc_challenge": 34.5, "arc_easy": 58.1, "boolq": 60.7, "copa": 79.0, "hellaswag": 62.5,
                "openbookqa": 46.4, "piqa": 73.7, "sciq": 88.1, "winogrande": 58.9},
    "OLMo-7B": {"arc_challenge": 48.5, "arc_easy": 65.4, "boolq": 73.4, "copa": 90.0, "hellaswag": 76.4,
                "openbookqa": 50.2, "piqa": 78.4, "sciq": 93.8, "winogrande": 67.9},
}


# Tasks whose OLMES prompts (the oe_eval requests ``source: 'auto'`` reads) differ from the paper's (Catwalk's):
# their scores are not like the paper's unless evaluated with ``source: 'hf'`` (steps/common/tasks.py).
OLMES_PROMPT_TASKS = ("boolq", "hellaswag", "openbookqa", "piqa", "sciq")
OLMES_MARK = "†"


def paper_average(model: str, tasks: list[str]) -> float:
    """The paper model's mean accuracy (%) over those of ``tasks`` it reports."""
    shown = [PAPER_RESULTS[model][task] for task in tasks if task in PAPER_RESULTS[model]]
    return sum(shown) / max(1, len(shown))


def task_names(evaluations: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted({task for record in evaluations.values() for task in record["tasks"]})


def olmes_prompted(evaluations: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{task: the models scored on it with OLMES prompts}`` for the tasks where those differ from the paper's.

    A record without ``prompt_source`` (evaluated before it was recorded) counts as OLMES-prompted: that is
    what the default ``source: 'auto'`` reads whenever the oe_eval requests are installed.
    """
    prompted = {
        task: [model for model, record in evaluations.items()
               if task in record["tasks"] and record["tasks"][task].get("prompt_source", "oe_eval") != "hf"]
        for task in OLMES_PROMPT_TASKS
    }
    return {task: models for task, models in prompted.items() if models}


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def prompt_note(evaluations: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The sentence under the task table about the tasks marked there, or None when no task is."""
    prompted = olmes_prompted(evaluations)
    if not prompted:
        return None
    by_everyone = all(models == list(evaluations) for models in prompted.values())
    tasks = _listing([task if by_everyone else f"{task} ({', '.join(models)})" for task, models in prompted.items()])
    return (f"{OLMES_MARK} Our scores on {tasks} use OLMES prompts (OLMo's evaluation harness, the oe_eval "
            f"requests that `source: 'auto'` reads), while the paper's {_listing(list(PAPER_RESULTS))} numbers "
            "beside them used Catwalk's prompts, so those rows do not compare like with like "
            "(`source: 'hf'` scores with the paper's prompts).")


def evaluation_table(evaluations: Mapping[str, Mapping[str, Any]]) -> str:
    """Primary accuracy per task (percent, 95% interval) for each evaluated model, the paper's models beside them.

    Tasks some model was scored on with OLMES prompts where those differ from the paper's carry
    :data:`OLMES_MARK`, explained in one sentence under the table."""
    evaluations = in_stage_order(evaluations)
    tasks = task_names(evaluations)
    prompted = olmes_prompted(evaluations)
    metric = {task: next(r["tasks"][task]["primary_metric"] for r in evaluations.values() if task in r["tasks"]) for task in tasks}
    rows = []
    for task in tasks:
        ours = [
            percent_with_interval(r["tasks"][task]["primary"], r["tasks"][task].get("primary_ci95")) if task in r["tasks"] else None
            for r in evaluations.values()
        ]
        label = f"{task} {OLMES_MARK}" if task in prompted else task
        rows.append([label, metric[task], *ours, *(PAPER_RESULTS[m].get(task) for m in PAPER_RESULTS)])
    paper = [f"{paper_average(model, tasks):.1f}" for model in PAPER_RESULTS]
    rows.append(["**average**", "", *(percent(r["average"]) for r in evaluations.values()), *paper])
    rows.append(["bits per byte (own held-out)", "", *(r["bits_per_byte"] for r in evaluations.values()), None, None])
    note = prompt_note(evaluations)
    return table(["task", "metric", *evaluations, *PAPER_RESULTS], rows) + (f"\n\n{note}" if note else "")


def metrics_table(record: Mapping[str, Any]) -> str:
    """One model's accuracy (%) on each task under every normalization, its primary one marked with ``*``."""
    rows = []
    for task, m in sorted(record["tasks"].items()):
        accuracies = [f"{percent(m[k])}*" if k == m["primary_metric"] else percent(m.get(k)) for k in METRICS]
        rows.append([task, m["n"], *accuracies, percent_with_interval(m["primary"], m.get("primary_ci95"))])
    return table(["task", "questions", *METRICS, "primary (95% CI)"], rows)


def unrelated_sets(evaluations: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted({name for record in evaluations.values() for name in record.get("bits_per_byte_by_set", {})})


def heldout_table(evaluations: Mapping[str, Mapping[str, Any]]) -> str:
    """Bits per byte of each model on its own held-out documents (all, per source) and on each unrelated set."""
    evaluations = in_stage_order(evaluations)
    sources = sorted({s for record in evaluations.values() for s in record.get("bits_per_byte_by_source", {})})
    rows = [["own held-out, all sources", *(r["bits_per_byte"] for r in evaluations.values())]]
    rows += [[f"own held-out: {s}", *(r.get("bits_per_byte_by_source", {}).get(s) for r in evaluations.values())] for s in sources]
    rows += [[f"unrelated: {name}", *(r.get("bits_per_byte_by_set", {}).get(name) for r in evaluations.values())]
             for name in unrelated_sets(evaluations)]
    return table(["documents", *evaluations], rows)


def own_versus_unrelated(model: str, record: Mapping[str, Any]) -> list[str]:
    """One sentence per unrelated set: is the model's bits per byte lower on its own sources or on that set?"""
    own = record["bits_per_byte"]
    sentences = []
    for name, other in sorted(record.get("bits_per_byte_by_set", {}).items()):
        if own < other:
            verdict = "lower on its own sources"
        elif other < own:
            verdict = f"lower on {name} than on its own sources"
        else:
            verdict = "the same on both"
        sentences.append(f"{model}: {own:.4g} bits per byte on held-out documents of its own sources, "
                         f"{other:.4g} on {name}: {verdict}.")
    return sentences


def heldout_section(evaluations: Mapping[str, Mapping[str, Any]]) -> str:
    """The held-out table and, model by model, which of own sources and unrelated sets it predicts better."""
    parts = ["### Held-out bits per byte: own sources vs unrelated sets", "", heldout_table(evaluations), ""]
    sentences = [s for model, record in in_stage_order(evaluations).items() for s in own_versus_unrelated(model, record)]
    parts += [f"- {s}" for s in sentences] or ["No unrelated set was evaluated: the table holds the own sources only."]
    return "\n".join(parts)


def downstream_section(evaluations: Mapping[str, Mapping[str, Any]]) -> str:
    """Every evaluated model's accuracy under each normalization, model by model."""
    parts = ["### Accuracy under every normalization (%, * = the paper's choice for the task)"]
    for model, record in in_stage_order(evaluations).items():
        parts += ["", f"#### {model}", "", metrics_table(record)]
    return "\n".join(parts)
