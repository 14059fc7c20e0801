import math

import pytest

from olmo_model import LRSchedule

OLMO_7B = LRSchedule(kind="linear", peak_lr=3e-4, warmup_steps=5000, total_steps=500_000,
                     final_lr_fraction=0.1)


def test_7b_linear_schedule_key_steps():
    assert OLMO_7B.lr_at(0) == pytest.approx(3e-5)
    assert OLMO_7B.lr_at(2500) == pytest.approx(3e-4 * (0.1 + 0.9 * 0.5))
    assert OLMO_7B.lr_at(5000) == pytest.approx(3e-4)
    assert OLMO_7B.lr_at(252_500) == pytest.approx((3e-4 + 3e-5) / 2)
    assert OLMO_7B.lr_at(500_000) == pytest.approx(3e-5)
    assert OLMO_7B.lr_at(600_000) == pytest.approx(3e-5)


def test_1b_cosine_schedule_key_steps():
    schedule = LRSchedule(kind="cosine", peak_lr=4e-4, warmup_steps=2000, total_steps=102_000)
    assert schedule.lr_at(0) == pytest.approx(4e-5)
    assert schedule.lr_at(2000) == pytest.approx(4e-4)
    assert schedule.lr_at(52_000) == pytest.approx(4e-5 + (4e-4 - 4e-5) / 2)
    quarter = 4e-5 + (4e-4 - 4e-5) * (1 + math.cos(math.pi / 4)) / 2
    assert schedule.lr_at(27_000) == pytest.approx(quarter)
    assert schedule.lr_at(102_000) == pytest.approx(4e-5)
    assert schedule.lr_at(200_000) == pytest.approx(4e-5)


def test_anneal_goes_linearly_to_zero():
    schedule = LRSchedule.anneal(2.3e-5, 1000)
    assert schedule.lr_at(0) == pytest.approx(2.3e-5)
    assert schedule.lr_at(500) == pytest.approx(1.15e-5)
    assert schedule.lr_at(1000) == 0.0
    assert schedule.lr_at(1500) == 0.0
    values = [schedule.lr_at(step) for step in range(1001)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_inverse_sqrt_decays_to_floor():
    schedule = LRSchedule(kind="inverse_sqrt", peak_lr=1e-3, warmup_steps=100)
    assert schedule.lr_at(100) == pytest.approx(1e-3)
    assert schedule.lr_at(400) == pytest.approx(5e-4)
    assert schedule.lr_at(1_000_000) == pytest.approx(1e-4)


def test_constant_after_warmup():
    schedule = LRSchedule(kind="constant", peak_lr=2e-6, warmup_steps=10, warmup_start_fraction=0.0)
    assert schedule.lr_at(0) == 0.0
    assert schedule.lr_at(5) == pytest.approx(1e-6)
    assert schedule.lr_at(10) == schedule.lr_at(10_000) == pytest.approx(2e-6)


def test_round_trip_through_dict():
    assert LRSchedule.from_dict(OLMO_7B.to_dict()) == OLMO_7B


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"kind": "linear", "peak_lr": 3e-4, "total_steps": 10, "warmup": 5},
            r"unknown key.*'warmup'",
        ),
        ({"kind": "linear", "peak_lr": 3e-4}, "total_steps: required for kind 'linear'"),
        ({"kind": "step", "peak_lr": 3e-4}, "kind: expected one of"),
        (
            {"kind": "cosine", "peak_lr": 3e-4, "warmup_steps": 10, "total_steps": 10},
            "more than warmup_steps",
        ),
        ({"kind": "constant", "peak_lr": 0.0}, "peak_lr: expected a positive number"),
        (
            {"kind": "constant", "peak_lr": 1e-3, "final_lr_fraction": 1.5},
            r"final_lr_fraction: expected a value in \[0, 1\]",
        ),
        ({"kind": "inverse_sqrt", "peak_lr": 1e-3}, "needs warmup_steps > 0"),
        ({"kind": "constant", "peak_lr": 1e-3, "warmup_steps": 1.5}, "warmup_steps: expected an integer"),
        ({"peak_lr": 1e-3}, r"missing required key.*'kind'"),
    ],
)
def test_from_dict_rejects_bad_config(data, message):
    with pytest.raises(ValueError, match=message):
        LRSchedule.from_dict(data)


def test_negative_step_is_an_error():
    with pytest.raises(ValueError, match="step must be >= 0"):
        OLMO_7B.lr_at(-1)
