"""Evaluation inside the training loop: held-out bits per byte and downstream accuracy every N steps.

The trainer calls an :class:`InLoopEvaluator` every ``every`` optimizer steps, on every rank, with the
model it trains. The evaluator runs the ``evaluate`` step's code (``steps/evaluation``) on that model
where and as it is (device, precision, FSDP2 shards untouched), in eval mode under ``torch.no_grad``,
and puts it back in the mode it was in. Each rank scores the same requests in the same order, so under
FSDP2 every rank makes the same forward calls with the same shapes and gets the same metrics; rank 0
logs them (the work is repeated, not split, across ranks). Scoring draws no random numbers: the RNG
state training uses is left as it was.

Metrics (names follow the ``evaluate`` step's summary):

- ``eval/heldout/bits_per_byte``, ``eval/heldout/perplexity``: over the held-out documents;
- ``eval/heldout/<source>/bits_per_byte``: per source of those documents;
- ``eval/<task>/accuracy``: the task's primary accuracy (its ``primary`` in ``evaluate``);
- ``eval/downstream/average``: the mean of those accuracies (``average`` in ``evaluate``).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import register_fsdp_forward_method
from torch.nn.parallel import DistributedDataParallel

from steps.data.tokenizer import load_tokenizer
from steps.evaluation.config import InLoopEvalConfig
from steps.evaluation.downstream import evaluate_questions, load_tasks
from steps.evaluation.perplexity import bits_per_byte, read_heldout
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.train.parallel import reshard

SCORING_METHODS = ("hidden_states", "project")  # what the scorer calls instead of forward


class InLoopEvaluator:
    """Held-out documents and task questions read once; ``evaluator(model)`` scores them with the model.

    ``tokenizer`` is a tokenizer JSON file (path or fsspec URL) or a loaded tokenizer; ``heldout`` a
    documents directory (the ``mix`` artifact's held-out split, ``<mix>/heldout``).
    """

    def __init__(self, tokenizer: str | Path | Any, heldout: str | Path, config: InLoopEvalConfig):
        self.every = config.every
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self.documents = list(itertools.islice(read_heldout(heldout), config.heldout_documents))
        if not any(doc.get("text") for doc in self.documents):
            raise ValueError(f"{heldout}: the held-out documents hold no text to evaluate on")
        self.tokenization = config.tokenization
        self.questions = (
            load_tasks(config.tasks, config.limit, config.seed, config.source) if config.tasks else {}
        )

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """The metrics of ``model`` (FSDP2-sharded, DDP-wrapped or plain), left in the mode it was in."""
        if isinstance(model, DistributedDataParallel):  # scoring needs the model's own methods
            model = model.module
        for method in SCORING_METHODS:
            if method not in vars(model):  # once per model: FSDP2 then gathers parameters around the method
                register_fsdp_forward_method(model, method)  # (a no-op on a model without FSDP2)
        was_training = model.training
        try:
            with torch.no_grad():
                return self.evaluate(model)
        finally:
            reshard(model)  # FSDP2 leaves the root's parameters gathered after a forward
            model.train(was_training)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The metrics, computed with ``model`` as it is (the caller sets eval mode and no_grad)."""
        heldout = bits_per_byte(model, self.tokenizer, self.documents, device=None)
        metrics = {
            "eval/heldout/bits_per_byte": heldout["overall"]["bits_per_byte"],
            "eval/heldout/perplexity": heldout["overall"]["perplexity"],
            **{
                f"eval/heldout/{source}/bits_per_byte": totals["bits_per_byte"]
                for source, totals in heldout["sources"].items()
            },
        }
        if self.questions:
            downstream = evaluate_questions(
                LogLikelihoodScorer(model, self.tokenizer, device=None, tokenization=self.tokenization), self.questions
            )
            metrics.update({f"eval/{name}/accuracy": task["primary"] for name, task in downstream["tasks"].items()})
            metrics["eval/downstream/average"] = downstream["average"]
        return metrics
