import pytest

from steps.evaluation.downstream import (
    UNCONDITIONAL_CONTEXT,
    continuation_chars,
    evaluate_task,
    evaluate_tasks,
    predictions,
    wilson_interval,
)
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.common.tasks import MultipleChoiceQuestion, TaskSpec, build_copa, get_task_spec


class TableScorer:
    """A scorer whose (sum log-prob, token count) per pair is given; records what it was asked."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def score(self, pairs):
        self.asked.extend(pairs)
        return [self.table[pair] for pair in pairs]


# Four choices built so that each normalization prefers a different one:
#   raw sums        -2   -4    -5    -3    -> 0
#   per token       -2   -1    -2.5  -3    -> 1   (tokens 1, 4, 2, 1)
#   per char        -2   -0.5  -0.25 -1.5  -> 2   (chars 1, 8, 20, 2: leading space not counted)
#   minus uncond    -1    6     5    17    -> 3   (uncond -1, -10, -10, -20)
CONTINUATIONS = [" a", " " + "b" * 8, " " + "c" * 20, " dd"]
CONDITIONAL = [(-2.0, 1), (-4.0, 4), (-5.0, 2), (-3.0, 1)]
UNCONDITIONAL = [(-1.0, 1), (-10.0, 4), (-10.0, 2), (-20.0, 1)]


def crafted_scorer(context="Q:"):
    table = {(context, c): s for c, s in zip(CONTINUATIONS, CONDITIONAL)}
    table.update({(UNCONDITIONAL_CONTEXT, c): s for c, s in zip(CONTINUATIONS, UNCONDITIONAL)})
    return TableScorer(table)


def question(gold, context="Q:"):
    return MultipleChoiceQuestion("crafted", str(gold), [context] * 4, CONTINUATIONS, gold)


def test_each_normalization_chooses_its_expected_answer():
    assert predictions(question(0), CONDITIONAL, UNCONDITIONAL) == {
        "acc_raw": 0, "acc_per_token": 1, "acc_per_char": 2, "acc_uncond": 3,
    }


@pytest.mark.parametrize("normalization,metric,gold", [
    ("none", "acc_raw", 0), ("per_token", "acc_per_token", 1),
    ("per_char", "acc_per_char", 2), ("unconditional", "acc_uncond", 3),
])
def test_evaluate_task_scores_the_gold_choice_under_its_normalization(normalization, metric, gold):
    scorer = crafted_scorer()
    spec = TaskSpec("crafted", normalization, "none", build_copa)
    result = evaluate_task(scorer, [question(gold), question((gold + 1) % 4)], spec)
    assert result[metric] == 0.5
    assert sum(result[m] for m in ("acc_raw", "acc_per_token", "acc_per_char", "acc_uncond")) == 1.0
    assert (result["primary_metric"], result["primary"], result["n"]) == (metric, 0.5, 2)
    assert result["primary_ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert {context for context, _ in scorer.asked} == {"Q:", UNCONDITIONAL_CONTEXT}


def test_ties_go_to_the_first_choice():
    tied = [(-1.0, 1), (-1.0, 1)]
    q = MultipleChoiceQuestion("t", "0", ["c", "c"], [" x", " y"], 1)
    assert predictions(q, tied, tied) == dict.fromkeys(("acc_raw", "acc_per_token", "acc_per_char", "acc_uncond"), 0)


def test_chars_exclude_the_leading_space():
    assert continuation_chars(" abc") == continuation_chars("abc") == 3


def test_wilson_interval_known_value():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    for n in range(1, 40):  # the interval holds the proportion exactly, rounding errors included
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0


def test_evaluate_tasks_on_olmo_micro(micro_model, olmo_tokenizer):
    scorer = LogLikelihoodScorer(micro_model, olmo_tokenizer, batch_size=8)
    result = evaluate_tasks(scorer, ["copa", "winogrande"], limit=3, seed=0)
    assert set(result["tasks"]) == {"copa", "winogrande"}
    for name, metrics in result["tasks"].items():
        assert metrics["n"] == 3 and metrics["primary_metric"] == get_task_spec(name).primary_metric
        assert all(0.0 <= metrics[m] <= 1.0 for m in ("acc_raw", "acc_per_token", "acc_per_char", "acc_uncond"))
        low, high = metrics["primary_ci95"]
        assert low <= metrics["primary"] <= high
    primaries = [metrics["primary"] for metrics in result["tasks"].values()]
    assert result["average"] == pytest.approx(sum(primaries) / 2)


def test_unknown_task_fails_before_any_scoring():
    scorer = TableScorer({})
    with pytest.raises(ValueError, match="unknown task 'nope'.*known tasks"):
        evaluate_tasks(scorer, ["copa", "nope"])
    assert scorer.asked == []
