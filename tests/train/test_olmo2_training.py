"""OLMo 2's training options in the trainer: the z-loss (``train.z_loss_multiplier``: in the loss the gradients
follow, logged as ``z_loss`` beside ``ce_loss``; refused for DPO) and the weight-decay groups of
``train.optimizer`` (``decay_embeddings``, ``decay_norms``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from olmo_model.config import ConfigError
from olmo_model.loss import IGNORE_INDEX
from steps.adapt.dpo import DPOLoss
from steps.train.objectives import NextTokenLoss, next_token_targets, segment_attention_mask, with_z_loss
from steps.train.trainer import OptimizerConfig, TrainConfig, Trainer, build_optimizer

from .conftest import VOCAB, micro_model

SEQ_LEN = 16


def config(**overrides) -> TrainConfig:
    base = {"global_batch_size": 4, "micro_batch_size": 2, "max_steps": 3,
            "schedule": {"kind": "constant", "peak_lr": 1e-3}}
    return TrainConfig.from_dict({**base, **overrides})


def batches(step: int) -> dict:
    ids = torch.randint(2, VOCAB, (4, SEQ_LEN), generator=torch.Generator().manual_seed(step))
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels}


def olmo2_model(seed: int = 0):
    return micro_model(seed, norm="rmsnorm", block="reordered_norm", qk_norm=True, init="normal",
                       weight_tying=False)


def reference_losses(model, batch: dict, multiplier: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross entropy and z-loss over the label tokens, from the full logits."""
    logits = model(batch["input_ids"]).reshape(-1, VOCAB)
    targets = next_token_targets(batch["labels"]).reshape(-1)
    kept = targets != IGNORE_INDEX
    return F.cross_entropy(logits, targets, reduction="sum"), multiplier * (logits.logsumexp(-1).square() * kept).sum()


def test_next_token_loss_adds_the_z_loss_and_reports_both_parts():
    model, batch = olmo2_model(), batches(0)
    loss, metrics = NextTokenLoss(z_loss_multiplier=1e-3)(model, batch)
    ce, z = reference_losses(model, batch, 1e-3)
    torch.testing.assert_close(loss, ce + z, rtol=1e-6, atol=0)
    torch.testing.assert_close(metrics["z_loss"], z.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(metrics["ce_loss"], ce.detach(), rtol=1e-6, atol=0)
    plain, none = NextTokenLoss()(model, batch)
    assert none == {} and torch.equal(plain, NextTokenLoss().with_z_loss(0.0)(model, batch)[0])


def test_packed_rows_take_the_z_loss_too():
    model, batch = olmo2_model(), batches(1)
    segments = (torch.arange(SEQ_LEN) >= 6).long().expand(4, SEQ_LEN)
    positions = torch.where(segments == 0, torch.arange(SEQ_LEN), torch.arange(SEQ_LEN) - 6)
    packed = {**batch, "segment_ids": segments, "position_ids": positions}
    loss, metrics = NextTokenLoss(z_loss_multiplier=1e-3)(model, packed)
    logits = model(batch["input_ids"], position_ids=positions, attention_mask=segment_attention_mask(segments))
    targets = next_token_targets(batch["labels"]).reshape(-1)
    flat = logits.reshape(-1, VOCAB)
    z = 1e-3 * (flat.logsumexp(-1).square() * (targets != IGNORE_INDEX)).sum()
    torch.testing.assert_close(metrics["z_loss"], z.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(loss, F.cross_entropy(flat, targets, reduction="sum") + z, rtol=1e-6, atol=0)


def test_the_trainer_follows_the_z_loss_and_logs_it_per_label_token():
    multiplier = 1e-2
    state = Trainer(olmo2_model(), batches, config(z_loss_multiplier=multiplier)).fit()
    first = state.history[0]
    assert first["loss"] == pytest.approx(first["ce_loss"] + first["z_loss"], rel=1e-6)
    reference = olmo2_model()
    ce, z = reference_losses(reference, batches(0), multiplier)
    tokens = int((next_token_targets(batches(0)["labels"]) != IGNORE_INDEX).sum())
    assert first["z_loss"] == pytest.approx(z.item() / tokens, rel=1e-5)
    assert first["ce_loss"] == pytest.approx(ce.item() / tokens, rel=1e-5)

    # the same step without z-loss: other gradients, so other weights after it; and no z-loss metrics
    plain = Trainer(olmo2_model(), batches, config(max_steps=1)).fit()
    assert "z_loss" not in plain.history[0] and "ce_loss" not in plain.history[0]
    assert plain.history[0]["loss"] == pytest.approx(first["ce_loss"], rel=1e-6)
    with_z = Trainer(olmo2_model(), batches, config(max_steps=1, z_loss_multiplier=multiplier))
    with_z.fit()
    without = Trainer(olmo2_model(), batches, config(max_steps=1))
    without.fit()
    assert not torch.equal(with_z.model.transformer.wte.weight, without.model.transformer.wte.weight)


def test_z_loss_is_refused_for_an_objective_without_one():
    with pytest.raises(ConfigError, match="train.z_loss_multiplier: the objective DPOLoss has no z-loss"):
        with_z_loss(DPOLoss(), 1e-5)
    assert isinstance(with_z_loss(DPOLoss(), None), DPOLoss)
    with pytest.raises(ConfigError, match="train.z_loss_multiplier: expected a number >= 0 or null"):
        config(z_loss_multiplier=-1e-5)
    assert config().z_loss_multiplier is None and config(z_loss_multiplier=1e-5).z_loss_multiplier == 1e-5


def test_optimizer_config_carries_the_decay_options_to_the_groups():
    default = config()
    assert (default.optimizer.decay_embeddings, default.optimizer.decay_norms) == (False, False)
    model = olmo2_model()
    olmo2 = config(optimizer={"decay_norms": True})
    assert olmo2.optimizer == OptimizerConfig(decay_norms=True)
    groups = {g["weight_decay"]: set(g["param_names"]) for g in build_optimizer(model, olmo2).param_groups}
    assert groups[0.0] == {"transformer.wte.weight"}
    assert {name for name in groups[0.1] if "norm" in name or "ln_f" in name} == {
        name for name, _ in model.named_parameters() if "norm" in name or "ln_f" in name
    }
    everything = config(optimizer={"decay_norms": True, "decay_embeddings": True})
    assert [g["weight_decay"] for g in build_optimizer(model, everything).param_groups] == [0.1]
    with pytest.raises(ConfigError, match="decay_norms: expected a bool"):
        config(optimizer={"decay_norms": "yes"})
