"""Training checkpoints hold only safetensors and JSON, and loading one never unpickles anything: the
consolidated hand-off round-trips exactly, and a pickle planted at the path of any metadata-like file (with
checksums updated, as an attacker who controls the directory would) is refused naming the file, or ignored
when nothing reads that file; it never runs."""
from __future__ import annotations

import pathlib
import pickle
import re
from pathlib import Path

import pytest
import safetensors
import torch

from steps.common.checksums import CHECKSUM_FILE, CheckpointError, file_hashes, listed_checksums, write_checksums
from steps.common.models import save_model_state
from steps.train.sharded_checkpoint import (
    OPTIMIZER_FILE,
    checkpoint_path,
    full_training_state,
    load_consolidated,
    load_latest_checkpoint,
    save_optimizer_state,
    save_training_checkpoint,
)
from steps.train.trainer import TrainConfig, Trainer, build_optimizer

TOKENS = torch.randint(2, 128, (2, 16), generator=torch.Generator().manual_seed(0))
CONFIG = TrainConfig.from_dict({
    "global_batch_size": 2, "micro_batch_size": 2, "max_steps": 2, "schedule": {"kind": "constant", "peak_lr": 1e-3},
})
SHARD = "state/shard-00001-model-00001-of-00001.safetensors"
RNG = "rng-rank00000.safetensors"


class Payload:
    """Unpickling this creates ``marker``: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def trained(make_model, seed: int = 0):
    model = make_model(seed=seed)
    optimizer = build_optimizer(model, CONFIG)
    state = Trainer(model, lambda step: TOKENS, CONFIG, optimizer=optimizer).fit()
    return model, optimizer, state


def fresh(make_model):
    model = make_model(seed=5)
    return model, build_optimizer(model, CONFIG)


def write_handoff(model, optimizer, artifact: Path) -> None:
    """What a pretrain worker's rank 0 writes: ``model/`` and ``checkpoint/``."""
    weights, optimizer_state = full_training_state(model, optimizer)
    save_model_state(weights, model.config, artifact / "model", extra={"step": CONFIG.max_steps})
    save_optimizer_state(optimizer_state, artifact / "checkpoint")


def load_handoff(artifact: Path, model, optimizer) -> None:
    load_consolidated(model, artifact / "model", optimizer, artifact / "checkpoint")


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def assert_same_optimizer_state(expected: torch.optim.Optimizer, got: torch.optim.Optimizer) -> None:
    expected_state, got_state = expected.state_dict(), got.state_dict()
    assert expected_state["param_groups"] == got_state["param_groups"]
    assert expected_state["state"].keys() == got_state["state"].keys()
    for index, values in expected_state["state"].items():
        for name, value in values.items():
            assert torch.equal(value, got_state["state"][index][name]), (index, name)


def test_resume_checkpoint_holds_only_safetensors_and_json(make_model, tmp_path):
    model, optimizer, state = trained(make_model)
    directory = save_training_checkpoint(checkpoint_path(tmp_path, state.step), model, optimizer, state)
    assert files(directory) == [CHECKSUM_FILE, "config.json", RNG, SHARD, "train_state.json"]
    assert [name for name, _ in listed_checksums(directory)] == sorted(files(directory)[1:])
    with safetensors.safe_open(str(directory / SHARD), framework="pt") as shard:
        assert "model.transformer.wte.weight" in shard.keys()
        assert "optim.state.transformer.wte.weight.exp_avg_sq" in shard.keys()


@pytest.mark.parametrize("weight_tying", [True, False])
def test_handoff_round_trips_weights_and_optimizer_state_exactly(make_model, tmp_path, weight_tying):
    model, optimizer, _ = trained(lambda seed: make_model(seed=seed, weight_tying=weight_tying))
    write_handoff(model, optimizer, tmp_path)
    assert files(tmp_path / "checkpoint") == [CHECKSUM_FILE, OPTIMIZER_FILE]

    other, other_optimizer = fresh(lambda seed: make_model(seed=seed, weight_tying=weight_tying))
    load_handoff(tmp_path, other, other_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert_same_optimizer_state(optimizer, other_optimizer)
    assert {int(s["step"]) for s in other_optimizer.state.values()} == {CONFIG.max_steps}

    weights_only, untouched = fresh(lambda seed: make_model(seed=seed, weight_tying=weight_tying))
    load_consolidated(weights_only, tmp_path / "model")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), weights_only.state_dict().values()))
    assert not untouched.state  # a fresh optimizer stays fresh


def test_handoff_of_another_shape_or_without_checksums_is_refused(make_model, tmp_path):
    model, optimizer, _ = trained(make_model)
    write_handoff(model, optimizer, tmp_path)
    bigger = make_model(d_model=64)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_handoff(tmp_path, bigger, build_optimizer(bigger, CONFIG))
    (tmp_path / "checkpoint" / CHECKSUM_FILE).unlink()
    with pytest.raises(CheckpointError, match="checkpoint: no checksums.sha256"):
        load_handoff(tmp_path, *fresh(make_model))


def plant_pickle(root: Path, name: str, marker: Path) -> Path:
    """Write a pickle that creates ``marker`` at ``root / name`` and update the checksums of the directory
    that lists it (unless it is that listing itself); returns the planted path."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(marker)))
    listing = next(d for d in [path.parent, *path.parents] if (d / CHECKSUM_FILE).exists())
    if path.name != CHECKSUM_FILE:
        names = {n for n, _ in listed_checksums(listing)} | {str(path.relative_to(listing))}
        write_checksums(listing, file_hashes(listing, sorted(names)))
    return path


def test_the_planted_payload_runs_when_unpickled(tmp_path):
    pickle.loads(pickle.dumps(Payload(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()  # so the tests below would notice if anything unpickled it


def assert_refused_or_ignored(load, planted: Path, refused: bool, marker: Path) -> None:
    if refused:
        with pytest.raises(CheckpointError, match=re.escape(str(planted))):
            load()
    else:
        load()
    assert not marker.exists()


RESUME_FILES = {  # file in a resume checkpoint: whether loading refuses it (else nothing reads it)
    ".metadata": False,  # DCP's default (pickled) metadata: never looked for
    "state/.metadata": False,
    "state/model.safetensors.index.json": False,
    "config.json": False,
    "train_state.json": True,
    SHARD: True,
    RNG: True,
    CHECKSUM_FILE: True,
}


@pytest.mark.parametrize("name", RESUME_FILES)
def test_a_pickle_planted_in_a_resume_checkpoint_never_runs(make_model, tmp_path, name):
    model, optimizer, state = trained(make_model)
    directory = save_training_checkpoint(checkpoint_path(tmp_path / "ckpts", state.step), model, optimizer, state)
    marker = tmp_path / "marker"
    planted = plant_pickle(directory, name, marker)
    other, other_optimizer = fresh(make_model)
    assert_refused_or_ignored(lambda: load_latest_checkpoint(tmp_path / "ckpts", other, other_optimizer),
                              planted, RESUME_FILES[name], marker)
    if not RESUME_FILES[name]:
        assert_same_optimizer_state(optimizer, other_optimizer)


HANDOFF_FILES = {  # file in a pretrain artifact: whether loading the hand-off refuses it
    "checkpoint/.metadata": False,
    "checkpoint/model.safetensors.index.json": False,
    "model/.metadata": False,
    "model/config.json": False,
    "model/train_state.json": False,
    f"checkpoint/{OPTIMIZER_FILE}": True,
    "model/model.safetensors": True,
    f"checkpoint/{CHECKSUM_FILE}": True,
    f"model/{CHECKSUM_FILE}": True,
}


@pytest.mark.parametrize("name", HANDOFF_FILES)
def test_a_pickle_planted_in_a_handoff_never_runs(make_model, tmp_path, name):
    model, optimizer, _ = trained(make_model)
    artifact = tmp_path / "artifact"
    write_handoff(model, optimizer, artifact)
    marker = tmp_path / "marker"
    planted = plant_pickle(artifact, name, marker)
    other, other_optimizer = fresh(make_model)
    assert_refused_or_ignored(lambda: load_handoff(artifact, other, other_optimizer), planted, HANDOFF_FILES[name],
                              marker)
    if not HANDOFF_FILES[name]:
        assert_same_optimizer_state(optimizer, other_optimizer)
