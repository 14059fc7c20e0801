"""The shared training loop: loss, exact accumulation, LR, clipping, NaN policy, bit-identical resume."""
from __future__ import annotations

import math

import pytest
import torch

from olmo_model import LRSchedule
from steps.data.batches import batch_hash
from steps.train.sharded_checkpoint import list_checkpoints
from steps.train.objectives import IGNORE_INDEX, NextTokenLoss
from steps.train.trainer import (
    NonFiniteLossError,
    TrainConfig,
    TrainState,
    train,
)

SEQ_LEN = 24


def config(**overrides) -> TrainConfig:
    base = {
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "max_steps": 30,
        "schedule": {"kind": "constant", "peak_lr": 3e-3, "warmup_steps": 3},
        "optimizer": {"weight_decay": 0.0},
    }
    return TrainConfig.from_dict({**base, **overrides})


def repetitive_batches(step: int) -> dict:
    """Every row is the cycle 2..11 at a step-dependent phase."""
    starts = torch.arange(4).unsqueeze(1) + step
    return {"input_ids": (starts + torch.arange(SEQ_LEN)) % 10 + 2, "batch_hash": f"hash-{step}"}


def random_batches(step: int, rows: int = 4) -> torch.Tensor:
    return torch.randint(2, 128, (rows, SEQ_LEN), generator=torch.Generator().manual_seed(step))


def quiet(_: dict) -> None:
    pass


def test_loss_falls_on_a_repetitive_sequence(make_model):
    state = train(make_model(), repetitive_batches, config(), log=quiet)
    losses = [m["loss"] for m in state.history]
    assert len(losses) == 30 and state.step == 30 and state.data_step == 30
    assert losses[-1] < 0.3 * losses[0]
    assert state.tokens_seen == 30 * 4 * SEQ_LEN
    assert state.history[4]["batch_hash"] == "hash-4"


def test_gradient_accumulation_is_exact(make_model):
    """One global batch of 4 rows with uneven label masks: 4 micro-batches of 1 equal 1 micro-batch of 4."""
    labels = random_batches(0).clone()
    for row, masked in enumerate((0, 5, 12, 20)):
        labels[row, :masked] = IGNORE_INDEX

    def batches(step: int) -> dict:
        return {"input_ids": random_batches(step), "labels": labels}

    models = []
    for micro in (1, 4):
        model = make_model()
        train(model, batches, config(micro_batch_size=micro, max_steps=1), log=quiet)
        models.append(model)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert not torch.equal(models[0].transformer.wte.weight, make_model().transformer.wte.weight)


def test_lr_follows_the_schedule(make_model):
    schedule = {"kind": "linear", "peak_lr": 1e-3, "warmup_steps": 3, "total_steps": 8}
    state = train(make_model(), random_batches, config(max_steps=10, schedule=schedule), log=quiet)
    expected = LRSchedule.from_dict(schedule)
    assert [m["lr"] for m in state.history] == [expected.lr_at(step) for step in range(1, 11)]
    assert state.history[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 / 3))
    assert state.history[-1]["lr"] == pytest.approx(1e-4)


def test_clipping_caps_the_global_gradient_norm(make_model):
    """With SGD at lr 1 the update is minus the clipped gradient, so its norm is max_grad_norm."""
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg = config(max_steps=1, max_grad_norm=0.05, schedule={"kind": "constant", "peak_lr": 1.0})
    state = train(model, random_batches, cfg, optimizer=sgd, log=quiet)
    update = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert state.history[0]["grad_norm"] > 1.0
    assert update.item() == pytest.approx(0.05, rel=1e-4)


class PoisonedLoss(NextTokenLoss):
    """The language-modelling loss, made NaN for any micro-batch whose first token is 127."""

    def __call__(self, model, batch):
        loss, metrics = super().__call__(model, batch)
        return (loss * math.nan if batch["input_ids"][0, 0] == 127 else loss), metrics


def poisoned_at_data_step_2(step: int) -> torch.Tensor:
    batch = random_batches(step)
    if step == 2:
        batch[:, 0] = 127
    return batch


def test_nan_stops_naming_the_step(make_model):
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(data step 2\).*nan_policy='stop'"):
        train(make_model(), poisoned_at_data_step_2, config(max_steps=5), loss_function=PoisonedLoss(), log=quiet)


def test_nan_skip_policy_drops_only_that_update(make_model):
    model = make_model()
    state = train(model, poisoned_at_data_step_2, config(max_steps=2, nan_policy="skip"), log=quiet)
    after_two = [p.detach().clone() for p in model.parameters()]
    state = train(model, poisoned_at_data_step_2, config(max_steps=3, nan_policy="skip"),
                  start_state=state, loss_function=PoisonedLoss(), log=quiet)
    assert state.skipped_steps == 1 and state.history[-1]["skipped"] and state.step == 3
    assert all(torch.equal(a, b) for a, b in zip(after_two, model.parameters()))


def test_on_start_receives_the_state_of_the_checkpoint_actually_loaded(make_model, tmp_path):
    """A corrupted newest checkpoint is skipped: the run starts (and says it starts) at the one before."""
    train(make_model(), random_batches, config(max_steps=4, checkpoint_every=2), log=quiet, checkpoint_dir=tmp_path)
    newest = list_checkpoints(tmp_path)[-1]
    shard = sorted((newest / "state").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-4] ^= 0xFF
    shard.write_bytes(bytes(data))
    starts, logged = [], []
    state = train(make_model(), random_batches, config(max_steps=6), log=lambda m: logged.append(m["step"]),
                  checkpoint_dir=tmp_path, on_start=lambda s: starts.append(s.step))
    assert starts == [2] and logged == [3, 4, 5, 6] and state.step == 6
    fresh = []
    train(make_model(), random_batches, config(max_steps=1), log=quiet, on_start=lambda s: fresh.append(s.step))
    assert fresh == [0]


def test_resume_from_checkpoint_is_bit_identical(make_model, tmp_path):
    schedule = {"kind": "cosine", "peak_lr": 3e-3, "warmup_steps": 2, "total_steps": 8}
    full = make_model()
    full_state = train(full, random_batches, config(max_steps=8, schedule=schedule), log=quiet)

    first_half = make_model()
    train(first_half, random_batches, config(max_steps=4, schedule=schedule, checkpoint_every=2),
          log=quiet, checkpoint_dir=tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004"]  # keeps 2

    resumed = make_model(seed=1)  # different weights: everything must come from the checkpoint
    state = train(resumed, random_batches, config(max_steps=8, schedule=schedule), log=quiet,
                  checkpoint_dir=tmp_path)
    assert state.step == 8 and state.data_step == 8
    assert [m["loss"] for m in state.history] == [m["loss"] for m in full_state.history]
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_anneal_starts_mid_order(make_model):
    seen = []

    def batches(step: int) -> torch.Tensor:
        seen.append(step)
        return random_batches(step)

    start = TrainState(data_step=100, tokens_seen=1000)
    cfg = config(max_steps=3, schedule=LRSchedule.anneal(1e-3, 3).to_dict())
    state = train(make_model(), batches, cfg, start_state=start, log=quiet)
    assert seen == [100, 101, 102] and state.data_step == 103
    assert [m["data_step"] for m in state.history] == seen
    assert state.tokens_seen == 1000 + 3 * 4 * SEQ_LEN
    assert [m["lr"] for m in state.history] == pytest.approx([2e-3 / 3, 1e-3 / 3, 0.0])
    assert start.data_step == 100  # the caller's state is not mutated


def test_metrics_are_logged_every_log_every_steps_and_at_the_end(make_model):
    logged = []
    state = train(make_model(), random_batches, config(max_steps=10, log_every=4), log=logged.append)
    assert [m["step"] for m in logged] == [4, 8, 10]
    assert logged == state.history
    expected = {"step", "data_step", "loss", "lr", "grad_norm", "tokens", "tokens_seen", "tokens_per_second", "step_seconds"}
    assert set(logged[0]) == expected


def test_batches_with_a_hash_log_it_and_the_hash_of_the_rows_trained_on(make_model):
    def hashed(step: int) -> dict:
        tokens = random_batches(step)
        return {"input_ids": tokens, "batch_hash": batch_hash(tokens.numpy())}

    state = train(make_model(), hashed, config(max_steps=2), log=quiet)
    for metrics in state.history:
        expected = batch_hash(random_batches(metrics["data_step"]).numpy())
        assert metrics["batch_hash"] == expected and metrics["rank_batch_hashes"] == [expected]


def test_bf16_autocast_keeps_fp32_weights(make_model):
    fp32_model, bf16_model = make_model(), make_model()
    fp32 = train(fp32_model, random_batches, config(max_steps=2), log=quiet)
    bf16 = train(bf16_model, random_batches, config(max_steps=2, precision="bf16"), log=quiet)
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())
    for a, b in zip(fp32.history, bf16.history):
        assert a["loss"] != b["loss"] and a["loss"] == pytest.approx(b["loss"], rel=2e-2)


def test_wrong_batch_size_is_reported_with_the_step(make_model):
    with pytest.raises(ValueError, match=r"step 1 \(data step 0\): expected 4 instances, got 3"):
        train(make_model(), lambda step: random_batches(step, rows=3), config(), log=quiet)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"precision": "fp16"}, r"TrainConfig.precision: expected one of \['fp32', 'bf16'\]"),
        ({"micro_batch_size": 3}, r"global_batch_size \(4\) must be a multiple of micro_batch_size \(3\)"),
        ({"schedule": {"kind": "linear", "peak_lr": 1e-3}}, r"TrainConfig.schedule: .*total_steps"),
        ({"optimizer": {"lr": 1e-3}}, r"TrainConfig.optimizer: .*unknown key\(s\) \['lr'\]"),
        ({"optimizer": {"betas": [0.9]}}, r"OptimizerConfig.betas"),
        ({"nan_policy": "ignore"}, r"TrainConfig.nan_policy"),
        ({"max_steps": 0}, r"TrainConfig.max_steps: expected a positive integer"),
        ({"warmup": 3}, r"unknown key\(s\) \['warmup'\]"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_config_round_trips_through_a_dict():
    cfg = config(max_grad_norm=None, checkpoint_every=5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.optimizer.betas == (0.9, 0.95)
