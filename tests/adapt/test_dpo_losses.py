"""The DPO loss types (dpo, dpo_norm, simpo) and label smoothing, against values worked out by hand.

Expected values are computed here from the formulas with Python floats (``math``), not by the code under test.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from steps.adapt.dpo import (
    DPOLoss,
    PreferenceData,
    collate_pairs,
    dpo_loss,
    response_token_counts,
    sequence_logprobs,
)
from steps.train.objectives import IGNORE_INDEX

PAD = 1  # the small test tokenizer's pad id


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# Three pairs: summed response log-probs of the policy and the reference, and the response token counts.
POLICY_CHOSEN, POLICY_REJECTED = [-6.0, -12.0, -2.0], [-9.0, -8.0, -5.0]
REFERENCE_CHOSEN, REFERENCE_REJECTED = [-7.0, -10.0, -2.5], [-8.0, -9.0, -4.0]
CHOSEN_TOKENS, REJECTED_TOKENS = [3.0, 4.0, 1.0], [3.0, 2.0, 5.0]


def tensors(*lists):
    return [torch.tensor(values, dtype=torch.float64) for values in lists]


def test_dpo_on_summed_logprobs():
    beta = 0.5
    loss, metrics = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED), beta)
    chosen = [beta * (p - r) for p, r in zip(POLICY_CHOSEN, REFERENCE_CHOSEN)]  # [0.5, -1.0, 0.25]
    rejected = [beta * (p - r) for p, r in zip(POLICY_REJECTED, REFERENCE_REJECTED)]  # [-0.5, 0.5, -0.5]
    margins = [c - r for c, r in zip(chosen, rejected)]  # [1.0, -1.5, 0.75]
    assert loss.item() == pytest.approx(mean(softplus(-m) for m in margins), rel=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(mean(chosen))
    assert metrics["rewards/rejected"].item() == pytest.approx(mean(rejected))
    assert metrics["rewards/margins"].item() == pytest.approx(mean(margins))
    assert metrics["rewards/accuracies"].item() == pytest.approx(2 / 3)


def test_dpo_norm_divides_policy_and_reference_by_the_response_length():
    beta = 5.0  # open-instruct's default for dpo_norm
    chosen_tokens, rejected_tokens = tensors(CHOSEN_TOKENS, REJECTED_TOKENS)
    loss, metrics = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED), beta,
                             loss_type="dpo_norm", chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens)
    chosen = [beta * (p / n - r / n) for p, r, n in zip(POLICY_CHOSEN, REFERENCE_CHOSEN, CHOSEN_TOKENS)]
    rejected = [beta * (p / n - r / n) for p, r, n in zip(POLICY_REJECTED, REFERENCE_REJECTED, REJECTED_TOKENS)]
    margins = [c - r for c, r in zip(chosen, rejected)]
    assert chosen == pytest.approx([5 / 3, -2.5, 2.5]) and rejected == pytest.approx([-5 / 3, 2.5, -1.0])
    assert loss.item() == pytest.approx(mean(softplus(-m) for m in margins), rel=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(mean(chosen))
    assert metrics["rewards/rejected"].item() == pytest.approx(mean(rejected))
    assert metrics["rewards/margins"].item() == pytest.approx(mean(margins))
    assert metrics["rewards/accuracies"].item() == pytest.approx(2 / 3)
    # Not the summed loss: with every length 1 it would be.
    summed, _ = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED), beta)
    assert summed.item() != pytest.approx(loss.item())
    ones = torch.ones(3, dtype=torch.float64)
    unit, _ = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED), beta,
                       loss_type="dpo_norm", chosen_tokens=ones, rejected_tokens=ones)
    assert unit.item() == pytest.approx(summed.item(), rel=1e-12)


@pytest.mark.parametrize("gamma_beta_ratio", [0.3, 0.0, 1.2])
def test_simpo_is_reference_free_with_a_target_margin(gamma_beta_ratio):
    beta = 2.0
    chosen_tokens, rejected_tokens = tensors(CHOSEN_TOKENS, REJECTED_TOKENS)
    loss, metrics = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED), beta=beta, loss_type="simpo",
                             gamma_beta_ratio=gamma_beta_ratio, chosen_tokens=chosen_tokens,
                             rejected_tokens=rejected_tokens)
    chosen = [beta * p / n for p, n in zip(POLICY_CHOSEN, CHOSEN_TOKENS)]  # [-4, -6, -4]
    rejected = [beta * p / n for p, n in zip(POLICY_REJECTED, REJECTED_TOKENS)]  # [-6, -8, -2]
    gamma = gamma_beta_ratio * beta
    assert loss.item() == pytest.approx(mean(softplus(-(c - r - gamma)) for c, r in zip(chosen, rejected)), rel=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(-14 / 3)
    assert metrics["rewards/rejected"].item() == pytest.approx(-16 / 3)
    assert metrics["rewards/margins"].item() == pytest.approx(2 / 3)  # reward margins, without γ
    assert metrics["rewards/accuracies"].item() == pytest.approx(2 / 3)


def test_simpo_default_gamma_beta_ratio_is_0_3():
    beta = 2.0
    chosen_tokens, rejected_tokens = tensors(CHOSEN_TOKENS, REJECTED_TOKENS)
    default, _ = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED), beta=beta, loss_type="simpo",
                          chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens)
    explicit, _ = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED), beta=beta, loss_type="simpo",
                           gamma_beta_ratio=0.3, chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens)
    assert default.item() == explicit.item()


@pytest.mark.parametrize("loss_type", ["dpo", "dpo_norm", "simpo"])
def test_label_smoothing_is_the_conservative_loss(loss_type):
    beta, epsilon = 1.0, 0.2
    chosen_tokens, rejected_tokens = tensors(CHOSEN_TOKENS, REJECTED_TOKENS)
    references = [] if loss_type == "simpo" else tensors(REFERENCE_CHOSEN, REFERENCE_REJECTED)
    lengths = ([1.0] * 3, [1.0] * 3) if loss_type == "dpo" else (CHOSEN_TOKENS, REJECTED_TOKENS)
    reference_sums = ([0.0] * 3, [0.0] * 3) if loss_type == "simpo" else (REFERENCE_CHOSEN, REFERENCE_REJECTED)
    gamma = 0.3 * beta if loss_type == "simpo" else 0.0
    logits = [
        beta * ((pc - rc) / nc - (pr - rr) / nr) - gamma
        for pc, pr, rc, rr, nc, nr in zip(POLICY_CHOSEN, POLICY_REJECTED, *reference_sums, *lengths)
    ]
    expected = mean((1 - epsilon) * softplus(-z) + epsilon * softplus(z) for z in logits)
    smoothed, metrics = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED), *references, beta=beta,
                                 loss_type=loss_type, label_smoothing=epsilon, chosen_tokens=chosen_tokens,
                                 rejected_tokens=rejected_tokens)
    assert smoothed.item() == pytest.approx(expected, rel=1e-12)
    plain, plain_metrics = dpo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED), *references, beta=beta,
                                    loss_type=loss_type, chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens)
    assert plain.item() == pytest.approx(mean(softplus(-z) for z in logits), rel=1e-12)
    assert metrics == plain_metrics  # smoothing changes the loss, not the rewards


def test_label_smoothing_gradient_pushes_back_on_confident_pairs():
    # d/dz [(1−ε)·softplus(−z) + ε·softplus(z)] = −(1−ε)·σ(−z) + ε·σ(z): zero where σ(z) = 1 − ε.
    epsilon = 0.1
    z_star = math.log((1 - epsilon) / epsilon)
    policy_chosen = torch.tensor([z_star], dtype=torch.float64, requires_grad=True)
    loss, _ = dpo_loss(policy_chosen, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                       torch.zeros(1, dtype=torch.float64), beta=1.0, label_smoothing=epsilon)
    loss.backward()
    assert policy_chosen.grad.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "ipo"}, "loss_type: expected one of 'dpo', 'dpo_norm', 'simpo', got 'ipo'"),
        ({"loss_type": "sigmoid"}, "loss_type: expected one of 'dpo', 'dpo_norm', 'simpo', got 'sigmoid'"),
        ({"beta": 0.0}, "beta: expected a positive number, got 0.0"),
        ({"label_smoothing": 0.5}, "label_smoothing: expected a number in [0, 0.5), got 0.5"),
        ({"label_smoothing": -0.1}, "label_smoothing: expected a number in [0, 0.5), got -0.1"),
        ({"gamma_beta_ratio": -1.0}, "gamma_beta_ratio: expected a number >= 0, got -1.0"),
    ],
)
def test_bad_options_name_the_key(kwargs, message):
    for make in (DPOLoss, lambda **options: PreferenceData([], PAD, 4, 0, 96, **options)):
        with pytest.raises(ValueError) as raised:
            make(**kwargs)
        assert str(raised.value) == message and "\n" not in message
    ones = torch.ones(1)
    with pytest.raises(ValueError, match=message.split(":")[0]):
        dpo_loss(ones, ones, ones, ones, chosen_tokens=ones, rejected_tokens=ones, **kwargs)


def test_the_references_a_loss_type_needs():
    ones = torch.ones(2)
    with pytest.raises(ValueError, match="^reference_chosen_logps: 'dpo' needs both reference log-probs$"):
        dpo_loss(ones, ones)
    with pytest.raises(ValueError, match="^reference_chosen_logps: 'simpo' is reference-free, expected None$"):
        dpo_loss(ones, ones, ones, ones, loss_type="simpo", chosen_tokens=ones, rejected_tokens=ones)
    with pytest.raises(ValueError, match="^chosen_tokens: 'dpo_norm' needs the response token counts"):
        dpo_loss(ones, ones, ones, ones, loss_type="dpo_norm")


# ------------------------------------------------------------------ through a model and the data


def test_response_token_counts_and_averaged_logprobs(make_model, encoded_pairs):
    model = make_model()
    batch = collate_pairs(encoded_pairs, PAD)
    counts = response_token_counts(batch["chosen_labels"])
    assert counts.tolist() == [pair.chosen_tokens for pair in encoded_pairs]
    assert [pair.chosen_tokens for pair in encoded_pairs] == [
        sum(label != IGNORE_INDEX for label in labels[1:]) for _, labels in (pair.chosen for pair in encoded_pairs)
    ]
    with torch.no_grad():
        summed = sequence_logprobs(model, batch["chosen_input_ids"], batch["chosen_labels"])
        averaged = sequence_logprobs(model, batch["chosen_input_ids"], batch["chosen_labels"], average=True)
    assert averaged.tolist() == pytest.approx((summed / counts).tolist(), rel=1e-6)


def per_pair_logprobs(model, pairs):
    """Each pair's summed log-probs and response lengths, scored one sequence at a time from the full
    log-softmax (not through ``sequence_logprobs``)."""
    out = {"chosen": [], "rejected": [], "chosen_tokens": [], "rejected_tokens": []}
    for pair in pairs:
        for side in ("chosen", "rejected"):
            input_ids, labels = getattr(pair, side)
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([input_ids])).double(), dim=-1)[0]
            positions = [t for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX]
            out[side].append(sum(logprobs[t - 1, input_ids[t]].item() for t in positions))
            out[f"{side}_tokens"].append(len(positions))
    return out


@pytest.mark.parametrize("loss_type", ["dpo", "dpo_norm", "simpo"])
def test_the_objective_on_a_model_matches_a_hand_computation(make_model, encoded_pairs, loss_type):
    reference, policy = make_model(seed=0), make_model(seed=1)
    beta, epsilon = 0.7, 0.1
    data = PreferenceData(encoded_pairs, PAD, batch_size=4, seed=0, max_length=96, beta=beta,
                          reference_batch_size=3, loss_type=loss_type, label_smoothing=epsilon)
    batch = data.batches(reference, "fp32")(0)
    ours = per_pair_logprobs(policy, encoded_pairs)
    theirs = per_pair_logprobs(reference, encoded_pairs)
    # The loss is a sum over the batch's pairs, so the batch holding all four in any order is comparable.
    expected = 0.0
    for i in range(len(encoded_pairs)):
        normalize = loss_type != "dpo"
        nc = ours["chosen_tokens"][i] if normalize else 1
        nr = ours["rejected_tokens"][i] if normalize else 1
        rc, rr = (0.0, 0.0) if loss_type == "simpo" else (theirs["chosen"][i], theirs["rejected"][i])
        z = beta * ((ours["chosen"][i] - rc) / nc - (ours["rejected"][i] - rr) / nr)
        z -= 0.3 * beta if loss_type == "simpo" else 0.0
        expected += (1 - epsilon) * softplus(-z) + epsilon * softplus(z)
    loss, metrics = data.objective()(policy, batch)
    assert data.objective().units(batch) == 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert ("reference_chosen_logps" in batch) == (loss_type != "simpo")


def test_simpo_data_computes_no_reference(encoded_pairs):
    class Unrunnable(torch.nn.Module):
        def forward(self, input_ids):
            raise AssertionError("SimPO must not run a reference model")

    data = PreferenceData(encoded_pairs, PAD, batch_size=2, seed=0, max_length=96, loss_type="simpo")
    batches = data.batches(Unrunnable(), "fp32")
    batch = batches(0)
    assert set(batch) == {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "batch_hash"}
    assert all(pair.reference_chosen_logp is None for pair in batches.items)


def test_the_default_loss_is_computed_exactly_as_before(make_model, encoded_pairs):
    """The default (dpo, β 0.1, no smoothing) against the formula this module computed before loss types: the
    same loss and gradients, bit for bit."""
    data = PreferenceData(encoded_pairs, PAD, batch_size=4, seed=0, max_length=96, reference_batch_size=4)
    assert (data.beta, data.loss_type, data.label_smoothing) == (0.1, "dpo", 0.0)
    batch = data.batches(make_model(seed=0), "fp32")(0)
    policy, copy = make_model(seed=1), make_model(seed=1)

    loss, metrics = data.objective()(policy, batch)
    loss.backward()

    chosen = sequence_logprobs(copy, batch["chosen_input_ids"], batch["chosen_labels"])
    rejected = sequence_logprobs(copy, batch["rejected_input_ids"], batch["rejected_labels"])
    chosen_rewards = 0.1 * (chosen - batch["reference_chosen_logps"])
    rejected_rewards = 0.1 * (rejected - batch["reference_rejected_logps"])
    margins = chosen_rewards - rejected_rewards
    before = torch.sum(-F.logsigmoid(margins))
    before.backward()

    assert torch.equal(loss, before)
    assert torch.equal(metrics["rewards/chosen"], chosen_rewards.detach().sum())
    assert torch.equal(metrics["rewards/margins"], margins.detach().sum())
    assert torch.equal(metrics["rewards/accuracies"], (margins > 0).float().sum())
    for (name, ours), (_, theirs) in zip(policy.named_parameters(), copy.named_parameters()):
        assert torch.equal(ours.grad, theirs.grad), name
