"""Learning-rate schedules of OLMo: linear warmup from a fraction of the peak, then a decay."""

from __future__ import annotations

import dataclasses
import math

from .config import Config

KINDS = ("linear", "cosine", "inverse_sqrt", "constant")
DECAYS_TO_FLOOR_AT_TOTAL = ("linear", "cosine")


@dataclasses.dataclass(frozen=True)
class LRSchedule(Config):
    """LR as a function of the optimizer step.

    Warmup (step < W = ``warmup_steps``): ``peak·(f + (1−f)·step/W)``, f = ``warmup_start_fraction``.
    After it, with floor = α·peak (α = ``final_lr_fraction``), T = ``total_steps`` and
    p = (step−W)/(T−W):

    - linear: ``peak − (peak − floor)·p``; cosine: ``floor + (peak − floor)·(1 + cos(π·p))/2``;
      both need T and stay at the floor from T on.
    - inverse_sqrt: ``max(floor, peak·√(W/step))``; needs W > 0.
    - constant: ``peak``.
    """

    kind: str
    peak_lr: float
    warmup_steps: int = 0
    total_steps: int | None = None
    warmup_start_fraction: float = 0.1
    final_lr_fraction: float = 0.1

    def check(self) -> None:
        name = type(self).__name__
        if self.kind not in KINDS:
            raise ValueError(f"{name}.kind: expected one of {list(KINDS)}, got {self.kind!r}")
        if not self.peak_lr > 0:
            raise ValueError(f"{name}.peak_lr: expected a positive number, got {self.peak_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"{name}.warmup_steps: expected >= 0, got {self.warmup_steps}")
        for key in ("warmup_start_fraction", "final_lr_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{name}.{key}: expected a value in [0, 1], got {getattr(self, key)}")
        if self.kind in DECAYS_TO_FLOOR_AT_TOTAL and self.total_steps is None:
            raise ValueError(f"{name}.total_steps: required for kind {self.kind!r}")
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ValueError(
                f"{name}.total_steps: expected more than warmup_steps ({self.warmup_steps}), "
                f"got {self.total_steps}"
            )
        if self.kind == "inverse_sqrt" and self.warmup_steps == 0:
            raise ValueError(f"{name}.warmup_steps: kind 'inverse_sqrt' needs warmup_steps > 0")

    @classmethod
    def anneal(cls, start_lr: float, steps: int, final_lr_fraction: float = 0.0) -> LRSchedule:
        """No warmup; LR linearly from ``start_lr`` down to ``final_lr_fraction·start_lr`` (default 0)
        at ``steps``, and there from then on."""
        return cls(kind="linear", peak_lr=start_lr, warmup_steps=0, total_steps=steps,
                   final_lr_fraction=final_lr_fraction)

    @property
    def floor_lr(self) -> float:
        return self.final_lr_fraction * self.peak_lr

    def lr_at(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        peak, warmup = self.peak_lr, self.warmup_steps
        if step < warmup:
            f = self.warmup_start_fraction
            return peak * (f + (1.0 - f) * step / warmup)
        if self.kind == "constant":
            return peak
        if self.kind == "inverse_sqrt":
            return max(self.floor_lr, peak * math.sqrt(warmup / max(step, warmup)))
        assert self.total_steps is not None  # checked in __post_init__
        if step >= self.total_steps:
            return self.floor_lr
        progress = (step - warmup) / (self.total_steps - warmup)
        if self.kind == "linear":
            return peak - (peak - self.floor_lr) * progress
        return self.floor_lr + (peak - self.floor_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0
