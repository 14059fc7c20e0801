"""Rank-classification accuracy on multiple-choice tasks, under the four normalizations.

For each choice the scorer gives Σ log p(continuation | context) and the continuation's token count;
the predicted choice is the argmax (first index on ties) of

- ``acc_raw``: the sum;
- ``acc_per_token``: the sum ÷ continuation tokens;
- ``acc_per_char``: the sum ÷ continuation characters, its leading space not counted;
- ``acc_uncond``: the sum − Σ log p(continuation | "Answer:").
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from steps.common.tasks import MultipleChoiceQuestion, Source, TaskSpec, get_task_spec, load_task
from steps.evaluation.scorer import LogLikelihoodScorer

UNCONDITIONAL_CONTEXT = "Answer:"
METRICS = ("acc_raw", "acc_per_token", "acc_per_char", "acc_uncond")
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))  # p inside despite rounding


def continuation_chars(continuation: str) -> int:
    """Characters of a continuation without its leading space (at least 1, to divide by)."""
    return max(1, len(continuation[1:] if continuation.startswith(" ") else continuation))


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def predictions(
    question: MultipleChoiceQuestion,
    conditional: Sequence[tuple[float, int]],
    unconditional: Sequence[tuple[float, int]],
) -> dict[str, int]:
    """The chosen index of one question under each normalization."""
    sums = [total for total, _ in conditional]
    return {
        "acc_raw": argmax(sums),
        "acc_per_token": argmax([total / tokens for total, tokens in conditional]),
        "acc_per_char": argmax([total / continuation_chars(c) for total, c in zip(sums, question.continuations)]),
        "acc_uncond": argmax([total - uncond for total, (uncond, _) in zip(sums, unconditional)]),
    }


def evaluate_task(
    scorer: LogLikelihoodScorer, questions: Sequence[MultipleChoiceQuestion], spec: TaskSpec
) -> dict[str, Any]:
    """Accuracy of every normalization, the task's primary one, and a 95% Wilson interval on it."""
    if not questions:
        raise ValueError(f"task {spec.name}: no questions to evaluate")
    conditional_pairs = [pair for q in questions for pair in zip(q.contexts, q.continuations)]
    unconditional_pairs = [(UNCONDITIONAL_CONTEXT, c) for q in questions for c in q.continuations]
    scores = scorer.score(conditional_pairs + unconditional_pairs)
    conditional, unconditional = scores[:len(conditional_pairs)], scores[len(conditional_pairs):]
    correct = dict.fromkeys(METRICS, 0)
    offset = 0
    for question in questions:
        choices = slice(offset, offset + len(question.continuations))
        offset = choices.stop
        for metric, chosen in predictions(question, conditional[choices], unconditional[choices]).items():
            correct[metric] += chosen == question.gold
    n = len(questions)
    primary = spec.primary_metric
    return {
        "task": spec.name,
        "n": n,
        **{metric: correct[metric] / n for metric in METRICS},
        "primary_metric": primary,
        "primary": correct[primary] / n,
        "primary_ci95": list(wilson_interval(correct[primary], n)),
    }


def load_tasks(
    task_names: Sequence[str], limit: int | None = None, seed: int = 0, source: Source = "auto"
) -> dict[str, list[MultipleChoiceQuestion]]:
    """Each task's questions by name; unknown names fail before any task is read."""
    if not task_names:
        raise ValueError("no tasks to evaluate")
    specs = [get_task_spec(name) for name in task_names]
    return {spec.name: load_task(spec.name, limit, seed, source) for spec in specs}


def evaluate_questions(
    scorer: LogLikelihoodScorer, questions: Mapping[str, Sequence[MultipleChoiceQuestion]]
) -> dict[str, Any]:
    """``{"tasks": {name: metrics}, "average": mean primary accuracy over the tasks}`` of loaded tasks."""
    results = {name: evaluate_task(scorer, task, get_task_spec(name)) for name, task in questions.items()}
    return {"tasks": results, "average": sum(r["primary"] for r in results.values()) / len(results)}


def evaluate_tasks(
    scorer: LogLikelihoodScorer,
    task_names: Sequence[str],
    limit: int | None = None,
    seed: int = 0,
    source: Source = "auto",
) -> dict[str, Any]:
    """:func:`evaluate_questions` of the tasks :func:`load_tasks` reads."""
    return evaluate_questions(scorer, load_tasks(task_names, limit, seed, source))
