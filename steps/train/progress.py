"""A one-line console progress report for training: bar, loss, LR, grad norm, throughput, MFU, memory, ETA.

``step  40/100 [####......]  40%  loss 6.1234  lr 2.5e-03  gnorm 0.812  1,234 tok/s  MFU 41.2%  mem 3.1 GiB  ETA 1m12s``
"""
from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Callable, TextIO

from .throughput import MAX_ALLOCATED_KEY, PEAK_RSS_KEY

BAR_WIDTH = 10


def format_duration(seconds: float) -> str:
    """``45s``, ``1m12s``, ``2h03m``, ``3d04h``."""
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _metric_fields(metrics: Mapping[str, Any]) -> list[str]:
    """The fields present in ``metrics``, formatted, in display order."""
    formats = (
        ("loss", lambda v: f"loss {v:.4f}"),
        ("lr", lambda v: f"lr {v:.1e}"),
        ("grad_norm", lambda v: f"gnorm {v:.3f}"),
        ("tokens_per_second", lambda v: f"{v:,.0f} tok/s"),
        ("mfu", lambda v: f"MFU {100 * v:.1f}%"),
        (MAX_ALLOCATED_KEY, lambda v: f"mem {v:.1f} GiB"),
        (PEAK_RSS_KEY, lambda v: f"mem {v:.1f} GiB"),
    )
    return [show(metrics[key]) for key, show in formats if metrics.get(key) is not None]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"TrainingProgress.{name}: expected a positive integer, got {value!r}")
    return value


class TrainingProgress:
    """Prints a progress line every ``every`` steps and at ``total_steps``; call ``update`` after every step.

    ``update(metrics)`` takes the step's metrics (``step`` required; ``loss``, ``lr``, ``grad_norm``,
    ``tokens_per_second``, ``mfu`` as a fraction, and ``max_memory_allocated_gib`` or ``peak_rss_gib``
    shown when present). The ETA is the mean step time since the first step this reporter saw
    (that step, which carries warm-up and compilation, is excluded) times the steps left, so a run
    resumed at ``start_step`` estimates its remaining steps only. On a terminal the line is redrawn
    in place; on any other stream (Tango logs, CI) each report is a line of its own.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        every: int = 1,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_steps = _positive_int("total_steps", total_steps)
        self.every = _positive_int("every", every)
        if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step <= total_steps:
            raise ValueError(
                f"TrainingProgress.start_step: expected an integer in [0, {total_steps}], got {start_step!r}"
            )
        self.start_step = start_step
        self.stream = sys.stderr if stream is None else stream
        self.redraw = self.stream.isatty()
        self.clock = clock
        self._first: tuple[int, float] | None = None  # (step, time) when the first step seen ended

    def update(self, metrics: Mapping[str, Any]) -> None:
        step = metrics.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not self.start_step < step <= self.total_steps:
            raise ValueError(
                f"TrainingProgress.update: expected metrics['step'], an integer in "
                f"[{self.start_step + 1}, {self.total_steps}], got {step!r}"
            )
        now = self.clock()
        if self._first is None:
            self._first = (step, now)
        last = step == self.total_steps
        if step % self.every and not last:
            return
        line = self.line(step, metrics, self._eta(step, now))
        if self.redraw:
            self.stream.write(f"\r{line}\x1b[K" + ("\n" if last else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, step: int, metrics: Mapping[str, Any], eta_seconds: float | None) -> str:
        """The report of ``step``: bar, percentage, the fields present in ``metrics``, ETA when known."""
        fraction = step / self.total_steps
        filled = int(BAR_WIDTH * fraction)
        width = len(str(self.total_steps))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        head = f"step {step:>{width}}/{self.total_steps} [{bar}] {int(100 * fraction):3d}%"
        fields = _metric_fields(metrics)
        if eta_seconds is not None:
            fields.append(f"ETA {format_duration(eta_seconds)}")
        return "  ".join([head, *fields])

    def _eta(self, step: int, now: float) -> float | None:
        first_step, first_time = self._first
        if step == first_step:
            return None
        return (now - first_time) / (step - first_step) * (self.total_steps - step)
