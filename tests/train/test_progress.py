import io

import pytest

from steps.train.progress import TrainingProgress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(progress: TrainingProgress, clock: FakeClock, steps, seconds_per_step, **metrics) -> None:
    """Call ``update`` after each of ``steps``; the first takes 100 s (warm-up), the others ``seconds_per_step``."""
    for index, step in enumerate(steps):
        clock.now += 100.0 if index == 0 else seconds_per_step
        progress.update({"step": step, **metrics})


FULL = {
    "loss": 6.12341, "lr": 2.5e-3, "grad_norm": 0.8123, "tokens_per_second": 1234.4, "mfu": 0.4123,
    "max_memory_allocated_gib": 3.14, "tokens_seen": 49152, "batch_hash": "ab12",
}


def test_full_line_with_eta_from_the_steps_after_the_first():
    stream, clock = io.StringIO(), FakeClock()
    progress = TrainingProgress(100, every=20, stream=stream, clock=clock)
    run(progress, clock, range(1, 41), 2.0, **FULL)
    lines = stream.getvalue().splitlines()
    # mean of steps 2..40 is 2 s (the 100 s first step is left out); 60 steps left: 2m00s.
    assert lines == [
        "step  20/100 [##........]  20%  loss 6.1234  lr 2.5e-03  gnorm 0.812  1,234 tok/s  MFU 41.2%  mem 3.1 GiB"
        "  ETA 2m40s",
        "step  40/100 [####......]  40%  loss 6.1234  lr 2.5e-03  gnorm 0.812  1,234 tok/s  MFU 41.2%  mem 3.1 GiB"
        "  ETA 2m00s",
    ]


def test_prints_every_n_steps_and_the_last_one():
    stream, clock = io.StringIO(), FakeClock()
    progress = TrainingProgress(25, every=10, stream=stream, clock=clock)
    run(progress, clock, range(1, 26), 1.0, loss=2.0)
    assert [line.split("]")[0] for line in stream.getvalue().splitlines()] == [
        "step 10/25 [####......", "step 20/25 [########..", "step 25/25 [##########",
    ]
    assert stream.getvalue().splitlines()[-1].endswith("100%  loss 2.0000  ETA 0s")


def test_optional_fields_only_when_present():
    stream, clock = io.StringIO(), FakeClock()
    progress = TrainingProgress(3, stream=stream, clock=clock)
    run(progress, clock, [1], 1.0, loss=3.5, peak_rss_gib=0.52, mfu=None)
    assert stream.getvalue() == "step 1/3 [###.......]  33%  loss 3.5000  mem 0.5 GiB\n"  # no ETA after one step


def test_resumed_run_estimates_the_remaining_steps_only():
    stream, clock = io.StringIO(), FakeClock()
    progress = TrainingProgress(100, start_step=60, every=10, stream=stream, clock=clock)
    run(progress, clock, range(61, 71), 2.0)
    assert stream.getvalue() == "step  70/100 [#######...]  70%  ETA 1m00s\n"


def test_terminal_redraws_in_place_and_ends_the_line_at_the_last_step():
    stream, clock = Terminal(), FakeClock()
    progress = TrainingProgress(2, stream=stream, clock=clock)
    run(progress, clock, [1], 1.0)
    assert stream.getvalue() == "\rstep 1/2 [#####.....]  50%\x1b[K"
    run(progress, clock, [2], 1.0)
    assert stream.getvalue().endswith("\rstep 2/2 [##########] 100%  ETA 0s\x1b[K\n")
    assert stream.getvalue().count("\n") == 1


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.4, "0s"), (45, "45s"), (72, "1m12s"), (3600, "1h00m"), (7380, "2h03m"), (273600, "3d04h"),
])
def test_format_duration(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("metrics", [{}, {"step": 0}, {"step": 11}, {"step": 2.0}])
def test_update_rejects_a_step_out_of_range(metrics):
    progress = TrainingProgress(10, stream=io.StringIO())
    with pytest.raises(ValueError, match=r"expected metrics\['step'\], an integer in \[1, 10\]"):
        progress.update(metrics)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"total_steps": 0}, "total_steps: expected a positive integer"),
    ({"total_steps": 10, "every": 0}, "every: expected a positive integer"),
    ({"total_steps": 10, "start_step": 11}, r"start_step: expected an integer in \[0, 10\]"),
])
def test_rejects_bad_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        TrainingProgress(stream=io.StringIO(), **arguments)
