"""OLMo's own in-loop downstream evaluator, ``olmo.eval.downstream`` of the installed ai2-olmo 0.6.0,
run as an independent reference for this project's rank-classification accuracies.

It is imported as installed (its imports need the test extras ``omegaconf``, ``torchmetrics`` and
``importlib_resources``; the rest of ai2-olmo's imports are already this project's dependencies),
so nothing of it is copied or shimmed. Its task classes build prompts from the same bundled HF validation sets
(``olmo.util.load_hf_dataset``), tokenize context and continuation separately with OLMo's
``Tokenizer``, and its ``ICLMetric`` turns a model's logits into per-choice log-likelihoods and
accuracy: ``acc`` (summed log-probability) and ``len_norm`` (÷ continuation characters).

Adaptations, none touching a prompt or a metric: each task dataset keeps only the validation rows
under test (selected before OLMo builds its examples); MMLU takes all 57 subjects in name order
(through its own subject selection); and every choice's domain-conditional context is "Answer:",
the unconditional context of ``acc_uncond`` in the issue, so that the reference's
domain-conditional queries give log p(continuation | "Answer:"). OLMo's own ``pmi_dc``
is not used: it is a ratio of the two log-likelihoods and its contexts differ per task.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from unittest import mock

import torch
from olmo.eval import downstream as olmo_downstream
from olmo.tokenizer import Tokenizer as OlmoTokenizer

UNCONDITIONAL_CONTEXT = "Answer:"  # the definition: log p(cont | ctx) - log p(cont | "Answer:")

# OLMo's MMLU takes the subjects whose ``_subcategories`` entry holds its ``dataset_name``; with every
# subject labelled "all", ``dataset_name="all"`` takes all 57 in name order, as this project's ``mmlu`` does.
MMLU_ALL_SUBJECTS = {subject: ["all"] for subject in sorted(olmo_downstream.MMLU._subcategories)}


# This project's task names -> OLMo's task datasets (as its ``label_to_task_map`` builds them).
REFERENCE_TASKS: dict[str, type] = {
    "arc_easy": olmo_downstream.ArcEasy,
    "arc_challenge": olmo_downstream.ArcChallenge,
    "boolq": olmo_downstream.BoolQ,
    "copa": olmo_downstream.COPA,
    "hellaswag": olmo_downstream.HellaSwag,
    "openbookqa": olmo_downstream.OpenBookQA,
    "piqa": olmo_downstream.PIQA,
    "sciq": olmo_downstream.SciQ,
    "winogrande": olmo_downstream.WinoGrande,
    "csqa": olmo_downstream.CommonsenseQA,
    "socialiqa": olmo_downstream.SocialIQa,
    "mmlu": olmo_downstream.MMLU,
}


def olmo_tokenizer(path: Path, eos_token_id: int, pad_token_id: int) -> OlmoTokenizer:
    return OlmoTokenizer.from_file(path, eos_token_id=eos_token_id, pad_token_id=pad_token_id)


def reference_dataset(task: str, tokenizer: OlmoTokenizer, rows: Sequence[int]) -> Any:
    """OLMo's dataset of ``task`` over the given validation rows, "Answer:" as domain conditional."""

    class Selected(REFERENCE_TASKS[task]):
        def prep_examples(self) -> None:
            self.dataset = self.dataset.select(list(rows))
            super().prep_examples()

        def doc_to_domain_conditional(self, doc: dict) -> str | list[str]:
            conditional = super().doc_to_domain_conditional(doc)  # a list where a task has one context per choice
            return [UNCONDITIONAL_CONTEXT] * len(conditional) if isinstance(conditional, list) else UNCONDITIONAL_CONTEXT

    if task != "mmlu":
        return Selected(tokenizer)
    with mock.patch.object(olmo_downstream.MMLU, "_subcategories", MMLU_ALL_SUBJECTS):
        return Selected(tokenizer, dataset_name="all")


@dataclass
class ReferenceResult:
    """OLMo's accuracies and per-choice values, by question (``doc_id``, in row order) and choice."""

    acc: float
    len_norm: float
    loglikelihood: dict[int, dict[int, float]]  # Σ log p(continuation | context)
    unconditional: dict[int, dict[int, float]]  # Σ log p(continuation | "Answer:")
    continuation_tokens: dict[int, dict[int, int]]
    labels: dict[int, int]

    def accuracy(self, values: Callable[[int, int], float]) -> float:
        """Accuracy of the argmax of ``values(doc_id, cont_id)``, chosen as ``ICLMetric.compute`` does."""
        correct = [
            torch.argmax(torch.tensor([values(doc, cont) for cont in sorted(choices)])).item() == self.labels[doc]
            for doc, choices in self.loglikelihood.items()
        ]
        return sum(correct) / len(correct)

    @property
    def acc_per_token(self) -> float:
        return self.accuracy(lambda d, c: self.loglikelihood[d][c] / self.continuation_tokens[d][c])

    @property
    def acc_uncond(self) -> float:
        return self.accuracy(lambda d, c: self.loglikelihood[d][c] - self.unconditional[d][c])


def per_choice(metric: Any) -> dict[int, dict[int, float]]:
    values: dict[int, dict[int, float]] = defaultdict(dict)
    for doc_id, cont_id, value in metric.loglikelihoods:
        values[int(doc_id)].setdefault(int(cont_id), value.item())
    return dict(values)


@torch.no_grad()
def run_reference(dataset: Any, logits: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 2) -> ReferenceResult:
    """Feed OLMo's batches of ``dataset`` to ``logits(input_ids)`` and collect OLMo's metrics."""
    acc, len_norm = olmo_downstream.ICLMetric("acc"), olmo_downstream.ICLMetric("len_norm")
    unconditional = olmo_downstream.ICLMetric("acc")
    for start in range(0, len(dataset), batch_size):
        batch = dataset.collate_fn([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        lm_logits = logits(batch["input_ids"])
        acc.update(batch, lm_logits)
        len_norm.update(batch, lm_logits)
        # The domain-conditional queries ("Answer:" + continuation), scored like the conditional ones.
        unconditional.update({**batch, "ctx_len": batch["dc_len"]}, logits(batch["dc_input_ids"]))
    samples = dataset.samples
    lengths: dict[int, dict[int, int]] = defaultdict(dict)
    for sample in samples:
        lengths[sample["doc_id"]][sample["cont_id"]] = sample["cont_len"]
    return ReferenceResult(
        acc=acc.compute().item(),
        len_norm=len_norm.compute().item(),
        loglikelihood=per_choice(acc),
        unconditional=per_choice(unconditional),
        continuation_tokens=dict(lengths),
        labels={sample["doc_id"]: sample["label_id"] for sample in samples},
    )
