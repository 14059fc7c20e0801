"""Made-up training histories and evaluation records, shaped as the pretrain, anneal and evaluate steps write them."""
from __future__ import annotations

import pytest

TOKENS_PER_STEP = 1000
PRETRAIN_STEPS, ANNEAL_STEPS = 20, 4


def record(step: int, loss: float, evaluation: dict | None = None) -> dict:
    return {"step": step, "loss": loss, "lr": 1e-3, "tokens": TOKENS_PER_STEP, "tokens_seen": step * TOKENS_PER_STEP,
            **(evaluation or {})}


def in_loop(accuracy: float, bpb: float) -> dict:
    return {
        "eval/heldout/bits_per_byte": bpb, "eval/heldout/perplexity": 2 ** bpb,
        "eval/heldout/docs/bits_per_byte": bpb - 0.1, "eval/heldout/code/bits_per_byte": bpb + 0.1,
        "eval/wikipedia/bits_per_byte": bpb + 1.0,
        "eval/arc_easy/accuracy": accuracy, "eval/copa/accuracy": accuracy + 0.1, "eval/downstream/average": accuracy + 0.05,
    }


@pytest.fixture
def histories() -> dict[str, list[dict]]:
    """Pretraining logged every 5 steps with in-loop evaluation at 10 and 20; the anneal continues its tokens."""
    pretrain = [record(s, 10.0 - 0.3 * s, in_loop(0.3, 3.0) if s == 10 else in_loop(0.4, 2.5) if s == 20 else None)
                for s in range(5, PRETRAIN_STEPS + 1, 5)]
    anneal = [record(PRETRAIN_STEPS + s, 3.5 - 0.1 * s, in_loop(0.45, 2.3) if s in (2, 4) else None)
              for s in range(1, ANNEAL_STEPS + 1)]
    return {"pretrain": pretrain, "anneal": anneal}


def task(primary_metric: str, n: int, raw: float, per_token: float, per_char: float, uncond: float, ci: list[float],
         prompt_source: str = "oe_eval") -> dict:
    accuracies = {"acc_raw": raw, "acc_per_token": per_token, "acc_per_char": per_char, "acc_uncond": uncond}
    return {"n": n, **accuracies, "primary_metric": primary_metric, "primary": accuracies[primary_metric], "primary_ci95": ci,
            "prompt_source": prompt_source}


@pytest.fixture
def evaluations() -> dict[str, dict]:
    """Evaluation records (summary + metrics.json tasks) of the base and SFT models, evaluated with ``source: 'auto'``
    (OLMES prompts: those of BoolQ differ from the paper's)."""
    return {
        "sft": {
            "tasks": {"arc_easy": task("acc_uncond", 40, 0.25, 0.275, 0.3, 0.325, [0.2, 0.45]),
                      "boolq": task("acc_raw", 40, 0.625, 0.6, 0.575, 0.55, [0.47, 0.76])},
            "average": 0.475, "bits_per_byte": 1.9,
            "bits_per_byte_by_source": {"code": 2.0, "docs": 1.8}, "bits_per_byte_by_set": {"wikipedia": 2.9},
        },
        "base": {
            "tasks": {"arc_easy": task("acc_uncond", 40, 0.35, 0.375, 0.4, 0.425, [0.3, 0.6]),
                      "boolq": task("acc_raw", 40, 0.5, 0.525, 0.55, 0.575, [0.35, 0.65])},
            "average": 0.4625, "bits_per_byte": 1.7,
            "bits_per_byte_by_source": {"code": 1.75, "docs": 1.65}, "bits_per_byte_by_set": {"wikipedia": 2.75},
        },
    }
