"""Model directories and training checkpoints: safetensors round trips, checksums, atomic writes."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from steps.common.checksums import CHECKSUM_FILE, CheckpointError
from steps.common.models import MODEL_FILE, load_model, save_model
from steps.train.checkpoint import TrainState
from steps.train.sharded_checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    load_training_checkpoint,
    prune_checkpoints,
    save_training_checkpoint,
)
from steps.train.trainer import TrainConfig, Trainer, build_optimizer

TOKENS = torch.randint(2, 128, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("weight_tying", [True, False])
def test_model_round_trips_through_safetensors(make_model, tmp_path, weight_tying):
    model = make_model(weight_tying=weight_tying)
    save_model(model, model.config, tmp_path / "model", extra={"step": 7})
    loaded = load_model(tmp_path / "model")
    assert loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert torch.equal(model(TOKENS), loaded(TOKENS))
    assert json.loads((tmp_path / "model" / "train_state.json").read_text()) == {"step": 7}
    stored = safetensors.torch.load_file(tmp_path / "model" / MODEL_FILE)
    assert ("transformer.ff_out.weight" in stored) is (not weight_tying)  # tied output stored once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind


def test_corrupted_weights_are_refused(make_model, tmp_path):
    model = make_model()
    directory = save_model(model, model.config, tmp_path / "model")
    weights = directory / MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: sha256 does not match"):
        load_model(directory)


def test_directory_without_checksums_is_refused(make_model, tmp_path):
    model = make_model()
    directory = save_model(model, model.config, tmp_path / "model")
    (directory / CHECKSUM_FILE).unlink()
    with pytest.raises(CheckpointError, match="not a complete model directory"):
        load_model(directory)


def test_saving_over_an_existing_directory_replaces_it(make_model, tmp_path):
    first, second = make_model(seed=0), make_model(seed=1)
    save_model(first, first.config, tmp_path / "model")
    save_model(second, second.config, tmp_path / "model")
    assert torch.equal(load_model(tmp_path / "model").transformer.wte.weight, second.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_failed_save_leaves_no_partial_directory(make_model, tmp_path):
    model = make_model()
    with pytest.raises(AttributeError):
        save_model(model, None, tmp_path / "model")  # type: ignore[arg-type]  # fails mid-write
    assert list(tmp_path.iterdir()) == []
    assert list_checkpoints(tmp_path) == []


def test_training_checkpoint_restores_optimizer_and_state(make_model, tmp_path):
    config = TrainConfig.from_dict({
        "global_batch_size": 2, "micro_batch_size": 2, "max_steps": 2,
        "schedule": {"kind": "constant", "peak_lr": 1e-3},
    })
    model = make_model()
    optimizer = build_optimizer(model, config)
    state = Trainer(model, lambda step: TOKENS, config, optimizer=optimizer).fit()
    directory = save_training_checkpoint(checkpoint_path(tmp_path, state.step), model, optimizer, state)

    other = make_model(seed=3)
    other_optimizer = build_optimizer(other, config)
    loaded_state = load_training_checkpoint(directory, other, other_optimizer)
    assert loaded_state == state
    expected, got = optimizer.state_dict(), other_optimizer.state_dict()
    assert expected["param_groups"] == got["param_groups"]
    for index, values in expected["state"].items():
        for name, value in values.items():
            assert torch.equal(value, got["state"][index][name]), (index, name)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_checkpoint_listing_and_pruning(make_model, tmp_path):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (3, 10, 7):
        save_training_checkpoint(checkpoint_path(tmp_path, step), model, optimizer, TrainState(step=step))
    (tmp_path / ".step-00000011.tmp").mkdir()  # an interrupted write
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000007", "step-00000010"]
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000007", "step-00000010"]


def test_checkpoint_of_another_shape_is_refused(make_model, tmp_path):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters())
    directory = save_training_checkpoint(tmp_path / "ckpt", model, optimizer, TrainState())
    bigger = make_model(d_model=64)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_training_checkpoint(directory, bigger, torch.optim.AdamW(bigger.parameters()))


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous_one(make_model, tmp_path, caplog):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (2, 4):
        save_training_checkpoint(checkpoint_path(tmp_path, step), model, optimizer, TrainState(step=step))
    newest = checkpoint_path(tmp_path, 4)
    corrupt(next(newest.glob("state/*.safetensors")))
    other = make_model(seed=2)
    where, state = load_latest_checkpoint(tmp_path, other, torch.optim.AdamW(other.parameters()))
    assert where == checkpoint_path(tmp_path, 2) and state.step == 2
    assert "step-00000004 is unusable" in caplog.text and "sha256 does not match" in caplog.text


def test_a_checkpoint_without_its_checksums_is_skipped_and_none_usable_is_an_error(make_model, tmp_path):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters())
    directory = save_training_checkpoint(checkpoint_path(tmp_path, 3), model, optimizer, TrainState(step=3))
    (directory / CHECKSUM_FILE).unlink()  # as if the write had stopped before it finished
    with pytest.raises(CheckpointError, match="no usable checkpoint.*no checksums.sha256"):
        load_latest_checkpoint(tmp_path, model, optimizer)
    assert load_latest_checkpoint(tmp_path / "empty", model, optimizer) is None
