"""Our side of the adaptation benchmark: one SFT or DPO run through the launcher, as the ``sft`` and ``dpo`` steps
run it, in its own process.

``python benchmarks/adapt_ours.py '<json options>'`` builds the ``TrainingJob`` the step would build (our
``Olmo`` loaded from a model artifact, ``ChatData`` or ``PreferenceData`` over the benchmark's encoded examples,
the trainer's config, ``Execution(device="cpu")``), starts one worker for it with ``integrations.launcher``'s
``launch_workers`` in the training workers' environment (``steps.train.runtime``), exactly as
``TrainingStep.launch`` does (elastic launcher, gloo process group, FSDP2 over the one rank,
``steps.train.worker.run_training_job``), and prints one JSON line: every step's loss, the wall and CPU seconds
between the ends of consecutive steps, the trainer's own step seconds, the reference pass's seconds (DPO) and the
worker's peak memory.

Two things are added to the job to measure it, neither of which changes what it computes:

- ``StepClock`` is the job's in-loop "evaluator" (``TrainingJob.in_loop_eval``, called by the
  ``InLoopEvaluation`` callback after every step): it returns the worker's clock (wall and CPU) and peak RSS as
  metrics, which ``metrics.jsonl`` keeps. So a step's time runs from one step's clock to the next: the batch,
  the update and every callback of the step in between.
- ``TimedPreferenceData`` is ``PreferenceData`` whose ``batches`` (the reference log-probs of every pair, computed
  by the worker's model before training) writes how long it took to ``timing_file``.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the job is pickled into the worker by reference to ``benchmarks.adapt_ours``

import torch  # noqa: E402

from integrations.launcher import Rendezvous, launch_workers  # noqa: E402
from olmo_model import LRSchedule, OlmoConfig  # noqa: E402
from steps.adapt.dpo import EncodedPair, PreferenceData  # noqa: E402
from steps.adapt.sft import ChatData  # noqa: E402
from steps.common.execution import Execution  # noqa: E402
from steps.train.runtime import worker_environment  # noqa: E402
from steps.train.trainer import OptimizerConfig, TrainConfig  # noqa: E402
from steps.train.worker import METRICS_FILE, Initialization, TrainingJob, run_training_job  # noqa: E402

class StepClock:
    """An in-loop "evaluator" run after every step: the worker's wall and CPU clocks and its peak RSS."""

    every = 1

    def __call__(self, model: Any) -> dict[str, float]:
        return {"clock_wall": time.perf_counter(), "clock_cpu": time.process_time(),
                "clock_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "clock_torch_threads": torch.get_num_threads()}


@dataclass(frozen=True)
class TimedPreferenceData(PreferenceData):
    """``PreferenceData`` that records the seconds of its reference pass (``batches``) in ``timing_file``."""

    timing_file: str = ""

    def batches(self, model: Any, precision: str) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        batches = super().batches(model, precision)
        Path(self.timing_file).write_text(json.dumps({"reference_seconds": time.perf_counter() - wall,
                                                      "reference_cpu_seconds": time.process_time() - cpu}))
        return batches


def training_data(options: dict[str, Any], run_dir: Path) -> ChatData | PreferenceData:
    items = json.loads(Path(options["items"]).read_text())
    common = {"pad_token_id": options["pad_token_id"], "batch_size": options["batch"], "seed": options["seed"],
              "max_length": options["max_length"]}
    if options["stage"] == "sft":
        return ChatData(items=[(ids, labels) for ids, labels in items], **common)
    pairs = [EncodedPair((c_ids, c_labels), (r_ids, r_labels)) for (c_ids, c_labels), (r_ids, r_labels) in items]
    # reference_batch_size: the micro-batch size, as the dpo step sets it
    return TimedPreferenceData(items=pairs, **common, beta=options["beta"], reference_batch_size=options["batch"],
                               timing_file=str(run_dir / "reference.json"))


def build_job(options: dict[str, Any], run_dir: Path) -> TrainingJob:
    """The job the ``sft``/``dpo`` step builds for these options, with a constant LR (``lr``), AdamW (0.9, 0.95,
    eps 1e-5, no weight decay), clipping at 1.0, fp32, one micro-batch a step, ``steps`` steps."""
    config = TrainConfig(
        micro_batch_size=options["batch"], global_batch_size=options["batch"], max_steps=options["steps"],
        schedule=LRSchedule(kind="constant", peak_lr=options["lr"], warmup_steps=0),
        optimizer=OptimizerConfig(betas=(0.9, 0.95), eps=1e-5, weight_decay=0.0), max_grad_norm=1.0,
        seed=options["seed"], precision="fp32",
    )
    (run_dir / "artifact").mkdir(parents=True, exist_ok=True)
    return TrainingJob(
        model=OlmoConfig.from_dict(options["olmo_config"]), init=Initialization(pretrained=options["artifact"]),
        data=training_data(options, run_dir), config=config, execution=Execution(device="cpu"),
        checkpoint_dir=str(run_dir / "checkpoints"), output_dir=str(run_dir / "artifact"), in_loop_eval=StepClock,
    )


def run(options: dict[str, Any]) -> dict[str, Any]:
    """Train one job on one worker through the launcher; what the benchmark keeps of it."""
    run_dir = Path(options["run_dir"])
    job = build_job(options, run_dir)
    launch_workers(run_training_job, (job,), 1, Rendezvous(run_id=f"adapt-bench-{run_dir.name}"),
                   environment=worker_environment())
    history = [json.loads(line) for line in (Path(job.output_dir) / METRICS_FILE).read_text().splitlines()]
    wall = [m["clock_wall"] for m in history]
    cpu = [m["clock_cpu"] for m in history]
    result = {
        "losses": [m["loss"] for m in history],
        # step k (k >= 2): from the end of step k-1 to the end of step k; step 1 has no start on this clock
        "step_seconds": [b - a for a, b in zip(wall, wall[1:])],
        "step_cpu_seconds": [b - a for a, b in zip(cpu, cpu[1:])],
        "trainer_step_seconds": [m["step_seconds"] for m in history],
        "tokens_with_padding": [m["tokens"] for m in history],
        "peak_rss_mb": max(m["clock_peak_rss_mb"] for m in history),
        "torch_threads": history[-1]["clock_torch_threads"],
    }
    if options["stage"] == "dpo":
        result |= json.loads((run_dir / "reference.json").read_text())
    return result


def main() -> None:
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    from benchmarks import adapt_ours  # this file as a module: the job's classes then pickle by name

    adapt_ours.main()
