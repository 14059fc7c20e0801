"""Parity with TRL (issue 16): our DPO objective and TRL's trainers give the same loss, rewards and gradients.

The same tiny model on both sides: a random olmo-micro (``olmo_model.Olmo``) and its export through
``integrations.huggingface`` loaded into ``transformers``' ``OlmoForCausalLM`` (the same weights; their logits
agree exactly). The same preference pairs: ours encoded by ``encode_preference_pairs``; TRL's batch holds the
same token ids in the format of TRL's own collator. A second random model (another seed) is the reference, so
rewards are not zero. Ours runs through ``PreferenceData`` (reference log-probs computed before training) and
``DPOLoss`` on our model; TRL's through the trainer's ``compute_loss`` on the HF model, where TRL computes the
per-token log-probs itself (``DPOTrainer``: its fused LM head; ``CPOTrainer``: its ``get_batch_logps`` over the
logits) and the reference log-probs from a reference model it runs. Compared, in fp32: the loss (ours is a sum
over pairs, which the trainer divides by the pairs; TRL's a mean), the logged rewards, and the gradients of every
weight (ours mapped to HF names by ``to_hf_state_dict``) and their total norm.

What corresponds (TRL 1.16):

- ``dpo`` = ``DPOTrainer`` with ``loss_type=["sigmoid"]``.
- ``dpo_norm`` = ``DPOTrainer`` with ``loss_type=["sigmoid_norm"]``: each side's log-ratio divided by its
  number of completion tokens, which is our per-sequence mean of policy minus reference log-probs. The loss and
  gradients agree; TRL logs the *summed* rewards ``β·(log π − log πref)`` under this loss, open-instruct and we
  the normalized ones that enter the loss, so TRL's logged rewards are compared with ours for ``dpo``.
- ``simpo`` = ``CPOTrainer`` (``trl.experimental.cpo``) with ``loss_type="simpo"``, ``cpo_alpha=0`` (no NLL
  term) and ``simpo_gamma = gamma_beta_ratio·β``: its loss is ``−log σ(β·(avg_c − avg_r) − simpo_gamma)`` with
  conservative label smoothing, and its rewards ``β·avg``, as ours.
- Label smoothing: ``DPOTrainer``'s ``sigmoid`` takes no label smoothing in TRL 1.16 (its ``robust`` loss is a
  different, unbiased estimator), so our conservative smoothing is compared through ``CPOTrainer``'s SimPO only
  (the same ``(1−ε)·ℓ(z) + ε·ℓ(−z)`` form).
- ``ld_alpha`` (LD-DPO) and ``use_weighting`` (WPO) have no counterpart here and are not compared.
"""
from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is not installed (pip install -e '.[test]')")

import transformers  # noqa: E402  (TRL requires it)
from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: E402

from integrations.huggingface import hf_config, to_hf_state_dict  # noqa: E402
from steps.adapt.chat import build_preference_pairs  # noqa: E402
from steps.adapt.dpo import PreferenceData, encode_preference_pairs  # noqa: E402
from steps.train.objectives import IGNORE_INDEX  # noqa: E402

EOS, PAD = 0, 1  # the small test tokenizer's ids
TOLERANCE = 1e-5
# A dataset TRL's constructors require (they tokenize it); the batches compared are built from our pairs.
PLACEHOLDER_DATASET = [{"prompt": "river", "chosen": " stone", "rejected": " lantern"}]


def hf_model(model) -> transformers.OlmoForCausalLM:
    """``model``'s weights in ``transformers``' ``OlmoForCausalLM``, fp32."""
    config = model.config
    options = {k: v for k, v in hf_config(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
    exported = transformers.OlmoForCausalLM(transformers.OlmoConfig(**options))
    exported.load_state_dict(to_hf_state_dict(model.state_dict(), config))
    return exported.float()


def hf_tokenizer(small_tokenizer) -> transformers.PreTrainedTokenizerFast:
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=small_tokenizer, eos_token="<|endoftext|>", pad_token="<|padding|>"
    )


@pytest.fixture
def pairs(documents_dir, small_tokenizer):
    rows, _ = build_preference_pairs(documents_dir, max_pairs=4, seed=0)
    encoded, counts = encode_preference_pairs(rows, small_tokenizer, EOS, max_length=96)
    assert counts["encoded"] == 4
    return encoded


def ours_and_batch(make_model, pairs, **options):
    """Our side: the loss (per pair), the metrics (per pair) and the gradients by HF name, on the first global
    batch; and that batch's pairs in order."""
    reference, policy = make_model(seed=0), make_model(seed=1)
    data = PreferenceData(pairs, PAD, batch_size=4, seed=0, max_length=96, reference_batch_size=3, **options)
    batches = data.batches(reference, "fp32")
    batch = batches(0)
    objective = data.objective()
    units = objective.units(batch)
    loss, metrics = objective(policy, batch)
    (loss / units).backward()
    gradients = to_hf_state_dict({name: p.grad for name, p in policy.named_parameters()}, policy.config)
    ordered = [batches.items[i] for i in batches.indices(0)]
    return (loss.item() / units, {k: v.item() / units for k, v in metrics.items()}, gradients,
            ordered, reference, policy)


def trl_preference_batch(ordered) -> dict[str, torch.Tensor]:
    """TRL's DPO batch for the same pairs, in the format of its ``DataCollatorForPreference``: the chosen rows,
    then the rejected rows, right-padded together, with ``attention_mask`` and ``completion_mask``. The collator
    itself takes a completion that runs to the end of the sequence; ours ends at EOS with the template's last
    newline unlabelled, so ``completion_mask`` is built here from our labels (what TRL scores is exactly that)."""
    rows = [pair.chosen for pair in ordered] + [pair.rejected for pair in ordered]
    longest = max(len(ids) for ids, _ in rows)
    pad = [[0] * (longest - len(ids)) for ids, _ in rows]
    return {
        "input_ids": torch.tensor([ids + [PAD] * len(p) for (ids, _), p in zip(rows, pad)]),
        "attention_mask": torch.tensor([[1] * len(ids) + p for (ids, _), p in zip(rows, pad)]),
        "completion_mask": torch.tensor([[int(label != IGNORE_INDEX) for label in labels] + p
                                         for (_, labels), p in zip(rows, pad)]),
    }


def trl_cpo_batch(ordered) -> dict[str, torch.Tensor]:
    """CPO's batch format for the same pairs: per side input ids, attention mask and labels, right-padded."""
    batch = {}
    for side in ("chosen", "rejected"):
        rows = [getattr(pair, side) for pair in ordered]
        longest = max(len(ids) for ids, _ in rows)
        batch[f"{side}_input_ids"] = torch.tensor([ids + [PAD] * (longest - len(ids)) for ids, _ in rows])
        batch[f"{side}_attention_mask"] = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in rows])
        batch[f"{side}_labels"] = torch.tensor(
            [labels + [IGNORE_INDEX] * (longest - len(labels)) for _, labels in rows]
        )
    return batch


def assert_same_gradients(ours: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    theirs = dict(model.named_parameters())
    # Tied output matrix: HF lists the embedding once, and to_hf_state_dict repeats it as lm_head.weight.
    assert set(ours) == set(theirs) | {"lm_head.weight"}
    ours = {name: gradient for name, gradient in ours.items() if name != "lm_head.weight"}
    for name, gradient in ours.items():
        torch.testing.assert_close(theirs[name].grad, gradient, rtol=TOLERANCE, atol=TOLERANCE,
                                   msg=lambda message, name=name: f"{name}: {message}")
    our_norm = torch.sqrt(sum(g.double().pow(2).sum() for g in ours.values()))
    their_norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters()))
    assert our_norm.item() > 0
    assert their_norm.item() == pytest.approx(our_norm.item(), rel=TOLERANCE)


def dpo_trainer(policy, reference, small_tokenizer, tmp_path, beta, loss_type) -> DPOTrainer:
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], report_to="none", use_cpu=True,
        bf16=False, disable_dropout=True, save_strategy="no", per_device_train_batch_size=4,
    )
    trainer = DPOTrainer(model=hf_model(policy), ref_model=hf_model(reference), args=args,
                         processing_class=hf_tokenizer(small_tokenizer),
                         train_dataset=Dataset.from_list(PLACEHOLDER_DATASET))
    trainer.model.train()
    return trainer


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_dpo_equals_trl_sigmoid(make_model, small_tokenizer, pairs, tmp_path, beta):
    loss, metrics, gradients, ordered, reference, policy = ours_and_batch(make_model, pairs, beta=beta)
    trainer = dpo_trainer(policy, reference, small_tokenizer, tmp_path, beta, "sigmoid")
    their_loss = trainer.compute_loss(trainer.model, trl_preference_batch(ordered))
    their_loss.backward()
    logged = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    assert their_loss.item() == pytest.approx(loss, abs=TOLERANCE)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert logged[key] == pytest.approx(metrics[key], abs=TOLERANCE), key
    assert abs(metrics["rewards/margins"]) > 1e-3  # policy and reference differ
    assert_same_gradients(gradients, trainer.model)


def test_dpo_norm_equals_trl_sigmoid_norm(make_model, small_tokenizer, pairs, tmp_path):
    beta = 5.0  # open-instruct's default for dpo_norm
    loss, metrics, gradients, ordered, reference, policy = ours_and_batch(make_model, pairs, beta=beta,
                                                                          loss_type="dpo_norm")
    trainer = dpo_trainer(policy, reference, small_tokenizer, tmp_path, beta, "sigmoid_norm")
    their_loss = trainer.compute_loss(trainer.model, trl_preference_batch(ordered))
    their_loss.backward()
    assert their_loss.item() == pytest.approx(loss, abs=TOLERANCE)
    assert_same_gradients(gradients, trainer.model)
    # TRL logs the summed rewards under sigmoid_norm: those of our "dpo" with the same β on the same batch.
    summed = ours_and_batch(make_model, pairs, beta=beta)[1]
    logged = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert logged[key] == pytest.approx(summed[key], abs=TOLERANCE * beta), key


@pytest.mark.parametrize(("gamma_beta_ratio", "label_smoothing"), [(0.3, 0.0), (0.5, 0.1)])
def test_simpo_equals_trl_cpo_simpo(make_model, small_tokenizer, pairs, tmp_path, gamma_beta_ratio,
                                    label_smoothing):
    beta = 2.0
    loss, metrics, gradients, ordered, _, policy = ours_and_batch(
        make_model, pairs, beta=beta, loss_type="simpo", gamma_beta_ratio=gamma_beta_ratio,
        label_smoothing=label_smoothing,
    )
    args = CPOConfig(
        output_dir=str(tmp_path / "cpo"), beta=beta, loss_type="simpo", cpo_alpha=0.0,
        simpo_gamma=gamma_beta_ratio * beta, label_smoothing=label_smoothing, max_length=96, report_to="none",
        use_cpu=True, bf16=False, disable_dropout=True, save_strategy="no", remove_unused_columns=False,
    )
    trainer = CPOTrainer(model=hf_model(policy), args=args, processing_class=hf_tokenizer(small_tokenizer),
                         train_dataset=Dataset.from_list(PLACEHOLDER_DATASET))
    trainer.model.train()
    their_loss = trainer.compute_loss(trainer.model, trl_cpo_batch(ordered))
    their_loss.backward()
    logged = {key: values[-1] for key, values in trainer._stored_metrics["train"].items()}
    assert their_loss.item() == pytest.approx(loss, abs=TOLERANCE)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert logged[key] == pytest.approx(metrics[key], abs=TOLERANCE), key
    assert_same_gradients(gradients, trainer.model)
