"""The evaluation ``config`` block, shared by the evaluate steps and the trainer's in-loop evaluation."""
from __future__ import annotations

from dataclasses import dataclass

from olmo_model.config import Config, ConfigError, require
from steps.common.tasks import Source, get_task_spec
from steps.evaluation.scorer import Tokenization


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig(Config):
    """What an evaluation scores: ``tasks`` (names of ``steps.common.tasks``; may be empty: held-out text only),
    ``limit`` questions per task (null: all), chosen by ``seed``; ``source`` of the prompts ("auto": OLMES's
    where bundled, "oe_eval", or "hf": the paper's); ``heldout_documents``: how many held-out documents bits per
    byte reads (null: all); ``tokenization``: "separate" (Catwalk, OLMo) or "joint" (lm-eval-harness)."""

    tasks: tuple[str, ...]
    limit: int | None = None
    seed: int = 0
    source: Source = "auto"
    heldout_documents: int | None = None
    tokenization: Tokenization = "separate"

    WHERE = "config"

    def check(self) -> None:
        for key in ("limit", "heldout_documents"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"{self.WHERE}.{key}", "a positive integer or null", value)
        require(len(set(self.tasks)) == len(self.tasks), f"{self.WHERE}.tasks", "each task once", list(self.tasks))
        for name in self.tasks:
            try:
                get_task_spec(name)
            except ValueError as exc:
                raise ConfigError(f"{self.WHERE}.tasks: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class InLoopEvalConfig(EvaluationConfig):
    """A training step's ``in_loop_eval`` block: an evaluation every ``every`` steps."""

    every: int

    WHERE = "in_loop_eval"

    def check(self) -> None:
        super().check()
        require(self.every >= 1, "in_loop_eval.every", "a positive integer", self.every)
