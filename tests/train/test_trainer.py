"""The trainer and its callbacks in one process: loss, exact accumulation, LR, clipping, NaN guard, bit-identical
resume, progress lines."""
from __future__ import annotations

import math

import pytest
import torch

from olmo_model import LRSchedule
from steps.data.batches import batch_hash
from steps.train.sharded_checkpoint import list_checkpoints
from steps.train.objectives import IGNORE_INDEX, NextTokenLoss
from steps.train.callbacks import Checkpointer, ConsoleProgress, NaNGuard, NonFiniteLossError
from steps.train.trainer import Callback, TrainConfig, Trainer, TrainState

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


def fit(model, batches, cfg: TrainConfig, *callbacks: Callback, **options) -> TrainState:
    return Trainer(model, batches, cfg, callbacks=callbacks, **options).fit()


class Recorder(Callback):
    """The step the run starts from, and every step it trains."""

    def __init__(self):
        self.start, self.steps = None, []

    def on_start(self, trainer):
        self.start = trainer.state.step

    def on_step(self, trainer, metrics):
        self.steps.append(metrics["step"])


def test_loss_falls_on_a_repetitive_sequence(make_model):
    state = fit(make_model(), repetitive_batches, config())
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
        fit(model, batches, config(micro_batch_size=micro, max_steps=1))
        models.append(model)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert not torch.equal(models[0].transformer.wte.weight, make_model().transformer.wte.weight)


def test_lr_follows_the_schedule(make_model):
    schedule = {"kind": "linear", "peak_lr": 1e-3, "warmup_steps": 3, "total_steps": 8}
    state = fit(make_model(), random_batches, config(max_steps=10, schedule=schedule))
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
    state = fit(model, random_batches, cfg, optimizer=sgd)
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
        fit(make_model(), poisoned_at_data_step_2, config(max_steps=5), NaNGuard("stop"), objective=PoisonedLoss())


def test_nan_skip_policy_drops_only_that_update(make_model):
    model = make_model()
    state = fit(model, poisoned_at_data_step_2, config(max_steps=2), NaNGuard("skip"))
    after_two = [p.detach().clone() for p in model.parameters()]
    state = fit(model, poisoned_at_data_step_2, config(max_steps=3), NaNGuard("skip"), start_state=state,
                objective=PoisonedLoss())
    assert state.skipped_steps == 1 and state.history[-1]["skipped"] and state.step == 3
    assert all(torch.equal(a, b) for a, b in zip(after_two, model.parameters()))


def test_a_corrupted_newest_checkpoint_resumes_from_the_one_before(make_model, tmp_path):
    """The run starts at the checkpoint actually loaded, and every callback after the Checkpointer sees it."""
    fit(make_model(), random_batches, config(max_steps=4), Checkpointer(tmp_path, every=2))
    newest = list_checkpoints(tmp_path)[-1]
    shard = sorted((newest / "state").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-4] ^= 0xFF
    shard.write_bytes(bytes(data))
    recorder = Recorder()
    state = fit(make_model(), random_batches, config(max_steps=6), Checkpointer(tmp_path), recorder)
    assert recorder.start == 2 and recorder.steps == [3, 4, 5, 6] and state.step == 6
    assert [m["step"] for m in state.history] == [1, 2, 3, 4, 5, 6]  # the history came with the checkpoint
    fresh = Recorder()
    fit(make_model(), random_batches, config(max_steps=1), fresh)
    assert fresh.start == 0


def test_resume_from_checkpoint_is_bit_identical(make_model, tmp_path):
    schedule = {"kind": "cosine", "peak_lr": 3e-3, "warmup_steps": 2, "total_steps": 8}
    full = make_model()
    full_state = fit(full, random_batches, config(max_steps=8, schedule=schedule))

    first_half = make_model()
    fit(first_half, random_batches, config(max_steps=4, schedule=schedule), Checkpointer(tmp_path, every=2))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004"]  # keeps 2

    resumed = make_model(seed=1)  # different weights: everything must come from the checkpoint
    state = fit(resumed, random_batches, config(max_steps=8, schedule=schedule), Checkpointer(tmp_path))
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
    state = fit(make_model(), batches, cfg, start_state=start)
    assert seen == [100, 101, 102] and state.data_step == 103
    assert [m["data_step"] for m in state.history] == seen
    assert state.tokens_seen == 1000 + 3 * 4 * SEQ_LEN
    assert [m["lr"] for m in state.history] == pytest.approx([2e-3 / 3, 1e-3 / 3, 0.0])
    assert start.data_step == 100  # the caller's state is not mutated


def test_every_step_is_recorded_and_a_progress_line_printed_every_few_steps(make_model, capsys):
    state = fit(make_model(), random_batches, config(max_steps=10), ConsoleProgress(every=4))
    assert [m["step"] for m in state.history] == list(range(1, 11))
    expected = {"step", "data_step", "loss", "lr", "grad_norm", "tokens", "tokens_seen", "tokens_per_second", "step_seconds"}
    assert set(state.history[0]) == expected
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("[")[0].split() for line in lines] == [["step", "4/10"], ["step", "8/10"], ["step", "10/10"]]
    assert lines[0].split("  ")[3:5] == [f"loss {state.history[3]['loss']:.4f}", f"lr {state.history[3]['lr']:.1e}"]


def test_batches_with_a_hash_log_it_and_the_hash_of_the_rows_trained_on(make_model):
    def hashed(step: int) -> dict:
        tokens = random_batches(step)
        return {"input_ids": tokens, "batch_hash": batch_hash(tokens.numpy())}

    state = fit(make_model(), hashed, config(max_steps=2))
    for metrics in state.history:
        expected = batch_hash(random_batches(metrics["data_step"]).numpy())
        assert metrics["batch_hash"] == expected and metrics["rank_batch_hashes"] == [expected]


def test_bf16_autocast_keeps_fp32_weights(make_model):
    fp32_model, bf16_model = make_model(), make_model()
    fp32 = fit(fp32_model, random_batches, config(max_steps=2))
    bf16 = fit(bf16_model, random_batches, config(max_steps=2, precision="bf16"))
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())
    for a, b in zip(fp32.history, bf16.history):
        assert a["loss"] != b["loss"] and a["loss"] == pytest.approx(b["loss"], rel=2e-2)


def test_wrong_batch_size_is_reported_with_the_step(make_model):
    with pytest.raises(ValueError, match=r"step 1 \(data step 0\): expected 4 instances, got 3"):
        fit(make_model(), lambda step: random_batches(step, rows=3), config())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"precision": "fp16"}, r"train.precision: expected one of 'fp32', 'bf16', got 'fp16'"),
        ({"micro_batch_size": 3}, r"global_batch_size \(4\) must be a multiple of micro_batch_size \(3\)"),
        ({"schedule": {"kind": "linear", "peak_lr": 1e-3}}, r"train.schedule: .*total_steps"),
        ({"optimizer": {"lr": 1e-3}},
         r"train.optimizer: unknown key\(s\) 'lr'; expected some of betas, decay_embeddings, decay_norms, eps"),
        ({"optimizer": {"betas": [0.9]}}, r"train.optimizer.betas: expected a list of 2"),
        ({"optimizer": {"betas": [0.9, 1.0]}}, r"train.optimizer.betas: expected two numbers in \[0, 1\)"),
        ({"nan_policy": "ignore"}, r"train.nan_policy: expected one of 'stop', 'skip'"),
        ({"max_steps": 0}, r"train.max_steps: expected a positive integer"),
        ({"warmup": 3}, r"train: unknown key\(s\) 'warmup'"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_config_round_trips_through_a_dict():
    cfg = config(max_grad_norm=None, nan_policy="skip")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.optimizer.betas == (0.9, 0.95)
