"""DPO: the loss formula, sequence log-probs, frozen reference log-probs, and training through the trainer."""
from __future__ import annotations

import math

import pytest
import torch

from steps.adapt.dpo import (
    PreferenceData,
    dpo_loss,
    sequence_logprobs,
    with_reference_logprobs,
)
from steps.train.objectives import IGNORE_INDEX
from steps.train.trainer import TrainConfig, Trainer

PAD = 1  # the small test tokenizer's pad id


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -10.0, -0.5])
    loss, metrics = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["rewards/margins"].item() == 0 and metrics["rewards/accuracies"].item() == 0


def test_dpo_loss_matches_the_formula():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    reference_chosen, reference_rejected = torch.tensor([-2.0, -4.0]), torch.tensor([-2.0, -4.0])
    loss, metrics = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.5)
    margins = torch.tensor([0.5 * (1 - -1), 0.5 * (0 - 2)])  # [1, -1]
    assert loss.item() == pytest.approx(torch.log1p(torch.exp(-margins)).mean().item())
    assert metrics["rewards/margins"].item() == pytest.approx(0.0)
    assert metrics["rewards/accuracies"].item() == 0.5
    assert metrics["rewards/chosen"].item() == pytest.approx((0.5 + 0.0) / 2)
    summed, summed_metrics = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected,
                                      beta=0.5, reduction="sum")
    assert summed.item() == pytest.approx(2 * loss.item())
    assert summed_metrics["rewards/accuracies"].item() == 1.0


def test_sequence_logprobs_sum_the_label_positions(make_model):
    model = make_model()
    input_ids = torch.randint(2, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[:, :6] = IGNORE_INDEX
    labels[1, 8:] = IGNORE_INDEX
    with torch.no_grad():
        got = sequence_logprobs(model, input_ids, labels)
        logprobs = torch.log_softmax(model(input_ids), dim=-1)
    expected = [sum(logprobs[row, t - 1, input_ids[row, t]] for t in range(6, end)) for row, end in ((0, 10), (1, 8))]
    assert got.tolist() == pytest.approx([float(e) for e in expected], rel=1e-5)


def test_reference_logprobs_are_those_of_the_frozen_model(encoded_pairs, make_model):
    model = make_model()
    pairs = with_reference_logprobs(model, encoded_pairs, PAD, batch_size=3)
    assert model.training  # restored after the evaluation pass
    for pair in pairs:
        for side in ("chosen", "rejected"):
            input_ids, labels = getattr(pair, side)
            with torch.no_grad():
                alone = sequence_logprobs(model, torch.tensor([input_ids]), torch.tensor([labels])).item()
            assert getattr(pair, f"reference_{side}_logp") == pytest.approx(alone, rel=1e-5)


def test_dpo_training_starts_at_ln2_and_widens_the_margin(encoded_pairs, make_model):
    model = make_model()
    data = PreferenceData(encoded_pairs, PAD, batch_size=4, seed=0, max_length=96, beta=0.1, reference_batch_size=4)
    batches = data.batches(model, "fp32")  # the reference log-probs: the model before any update
    config = TrainConfig.from_dict({
        "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 12,
        "schedule": {"kind": "constant", "peak_lr": 3e-3},
        "optimizer": {"weight_decay": 0.0},
    })
    state = Trainer(model, batches, config, data.objective()).fit()
    first, last = state.history[0], state.history[-1]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert abs(first["rewards/margins"]) < 1e-3
    assert last["loss"] < first["loss"] - 0.1
    assert last["rewards/margins"] > 0.5 and last["rewards/accuracies"] == 1.0
    assert first["tokens"] == sum(batches(0)[f"{side}_input_ids"].numel() for side in ("chosen", "rejected"))
