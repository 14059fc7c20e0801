"""Training benchmark: this project's trainer against ``transformers``' ``OlmoForCausalLM`` with a plain AdamW loop.

``python benchmarks/train.py [--quick] [--gpu]`` installs ``transformers`` (with the same torch) into
``benchmarks/.venv-transformers`` (once), builds an OLMo-shaped model (d_model 512, 8 layers, 8 heads, SwiGLU
hidden 2048, the 50,304-row embedding, tied, seq 512), gives both sides the same initial weights (ours,
exported through the project's Hugging Face mapping) and the same token batches (Zipf-distributed ids, so the
loss has something to learn), and trains each for the same steps in its own process on the same threads: fp32
on CPU, AdamW (0.9/0.95, eps 1e-5, no weight decay), constant LR 3e-4, clipping at 1.0.

Our side runs in the environment the launcher gives training workers (``steps.train.runtime``); the peer runs
twice, in the default environment and in ours. The sides alternate over several rounds (the machine may be
shared); tokens/s comes from the median step time over all rounds, warm-up steps left out. It appends tokens/s,
peak RSS and the losses to ``benchmarks/RESULTS.md`` (its "train" section) and prints one JSON line, last.

``--gpu`` adds our trainer on the first GPU: the OLMo-1B preset at seq 2048, bf16 autocast, compiled blocks;
its tokens/s and MFU (model FLOPs with attention, over the GPU's peak dense bf16 FLOP/s).

:func:`ours_only` runs this project's side alone at any shape and size (the smoke test's toy run).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# the other benchmarks are imported as the ``benchmarks`` package, from the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.corpus import (  # noqa: E402
    BENCHMARKS, PROJECT_PYTHON, append_results, base_python, log, machine, run, work_directory,
)
from steps.train.runtime import worker_environment  # noqa: E402

PEER_VENV = BENCHMARKS / ".venv-transformers"
PEER_REQUIREMENTS = ("torch==2.13.0", "transformers==4.57.1", "safetensors", "numpy")
SHAPE = {"d_model": 512, "n_heads": 8, "n_layers": 8, "mlp_hidden_size": 2048, "max_sequence_length": 512,
         "weight_tying": True}
WARMUP_STEPS = 2  # steps of each run left out of the timing (allocator, first-call costs)
TARGET_RATIO = 1.2  # issue 5's acceptance
CONTENDED = 0.9  # a CPU share below this: the machine was shared during the run
GPU = {"preset": "olmo-1b", "seq_len": 2048, "global_batch": 16, "micro_batch": 8, "warmup": 3}
TARGET_MFU = 0.45


def ensure_peer() -> Path:
    """The python of ``benchmarks/.venv-transformers``, installed from PyPI when missing."""
    python = PEER_VENV / "bin" / "python"
    probe = [str(python), "-c", "import transformers, torch; from transformers import OlmoForCausalLM"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        log(f"installing {', '.join(PEER_REQUIREMENTS)} into {PEER_VENV} (once)")
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        subprocess.run([base_python(), "-m", "venv", str(PEER_VENV)], check=True)
        run([str(PEER_VENV / "bin" / "pip"), "install", *PEER_REQUIREMENTS], PEER_VENV / "install.log")
    return python


def prepare(work: Path, steps: int, batch: int, seed: int, shape: dict[str, Any] = SHAPE) -> dict[str, Any]:
    """Write the shared initial weights (an OlmoForCausalLM directory) and token batches; return the options."""
    script = (
        "import json, sys, torch; from pathlib import Path\n"
        "from integrations.huggingface import export_to_hf\n"
        "from olmo_model import Olmo, OlmoConfig\n"
        "from steps.data.tokenizer import olmo_tokenizers_dir\n"
        "config = OlmoConfig(**json.loads(sys.argv[1])); model = Olmo(config)\n"
        "model.reset_parameters(torch.Generator().manual_seed(int(sys.argv[3])))\n"
        "export_to_hf(model.state_dict(), config, olmo_tokenizers_dir() / 'allenai_gpt-neox-olmo-dolma-v1_5.json',"
        " Path(sys.argv[2]))\n"
    )
    run([str(PROJECT_PYTHON), "-c", script, json.dumps(shape), str(work / "model"), str(seed)],
        work / "logs" / "prepare.log")
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, size=(steps, batch, shape["max_sequence_length"])) - 1, 50_279)
    np.save(work / "tokens.npy", ids.astype(np.int64))
    return {"model": str(work / "model"), "tokens": str(work / "tokens.npy"), "olmo_config": shape,
            "threads": os.cpu_count() or 1}


def ours_only(work: Path, shape: dict[str, Any], steps: int, batch: int, seed: int = 0) -> dict[str, Any]:
    """This project's side alone, as a round of the benchmark runs it (``train_worker.py ours`` in the training
    workers' environment, from weights exported as an ``OlmoForCausalLM`` directory): its JSON line."""
    options = prepare(work, steps, batch, seed, shape)
    return train_side(PROJECT_PYTHON, "ours", options, worker_environment(), work / "logs" / "ours.log")


def environment_prefix(environment: dict[str, str]) -> list[str]:
    """``env NAME=value ...``: a command prefix starting the process with ``environment`` added."""
    return ["env", *(f"{name}={value}" for name, value in sorted(environment.items()))] if environment else []


def train_side(python: Path, mode: str, options: dict[str, Any], environment: dict[str, str], log_file: Path,
               ) -> dict[str, Any]:
    command = [*environment_prefix(environment), str(python), str(BENCHMARKS / "train_worker.py"), mode,
               json.dumps(options)]
    return json.loads(run(command, log_file).stdout.strip().splitlines()[-1])


# (name in the report, mode, whose python, in the training workers' environment)
SIDES = (("ours", "ours", "project", True), ("peer", "peer", "peer", False), ("peer_worker_env", "peer", "peer", True))


def run_rounds(options: dict[str, Any], peer_python: Path, rounds: int, work: Path) -> dict[str, dict[str, Any]]:
    """Every side once per round, in alternating order; per side the losses (equal in every round, checked)
    and the steady step times of all rounds."""
    pythons = {"project": PROJECT_PYTHON, "peer": peer_python}
    results: dict[str, dict[str, Any]] = {}
    for round_index in range(rounds):
        order = SIDES if round_index % 2 == 0 else SIDES[::-1]
        for name, mode, python, worker_env in order:
            log(f"round {round_index + 1}/{rounds}: {name}")
            measured = train_side(pythons[python], mode, options, worker_environment() if worker_env else {},
                                  work / "logs" / f"{name}-{round_index}.log")
            side = results.setdefault(name, {"losses": measured["losses"], "step_seconds": [], "step_cpu_seconds": [],
                                             "peak_rss_mb": 0.0})
            if measured["losses"] != side["losses"]:
                raise RuntimeError(f"{name}: the losses of round {round_index + 1} differ from round 1's")
            for key in ("step_seconds", "step_cpu_seconds"):
                side[key] += measured[key][WARMUP_STEPS:]
            side["peak_rss_mb"] = max(side["peak_rss_mb"], measured["peak_rss_mb"])
    return results


def tokens_per_second(step_seconds: list[float], tokens_per_step: int) -> float:
    return tokens_per_step / statistics.median(step_seconds)


def cpu_share(side: dict[str, Any], threads: int) -> float:
    """CPU time of the measured steps over their wall time times the threads: near 1 on cores of its own, lower
    when other processes took turns on them."""
    return sum(side["step_cpu_seconds"]) / (sum(side["step_seconds"]) * threads)


def run_gpu(work: Path, quick: bool, seed: int) -> dict[str, Any]:
    options = {**GPU, "steps": GPU["warmup"] + (5 if quick else 20), "seed": seed, "threads": os.cpu_count() or 1}
    log(f"GPU: {GPU['preset']} at seq {GPU['seq_len']}, {options['steps']} steps of {GPU['global_batch']} sequences")
    measured = train_side(PROJECT_PYTHON, "gpu", options, {}, work / "logs" / "gpu.log")
    tokens = tokens_per_second(measured["step_seconds"][GPU["warmup"]:], GPU["global_batch"] * GPU["seq_len"])
    peak = measured["peak_flops"]
    return {**measured, "tokens_per_second": tokens, "mfu": tokens * measured["flops_per_token"] / peak if peak else None}


def results_block(command: str, report: dict[str, Any]) -> str:
    sides, m = report["sides"], report["machine"]
    contention = "" if min(side["cpu_share"] for side in sides.values()) >= CONTENDED else (
        f"; below {CONTENDED} here: other processes used these cores during the run, so these figures are not a "
        "clean measurement")
    environment = " ".join(f"{k}={v}" for k, v in sorted(worker_environment().items()))
    lines = [
        f"### {report['date']}: `{command}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, torch threads {report['threads']}; "
        f"{PEER_REQUIREMENTS[1]}. Model: {SHAPE}, vocabulary 50,280 (embedding 50,304); {report['steps']} steps "
        f"of {report['batch']} × {SHAPE['max_sequence_length']} tokens, the same initial weights and batches; "
        "fp32, AdamW (0.9, 0.95, eps 1e-5, no weight decay), LR 3e-4 constant, clip 1.0. "
        f"{report['rounds']} rounds, the sides alternating; tokens/s from the median time of the steps after the "
        f"first {WARMUP_STEPS} of every run. Workers' environment (`steps.train.runtime`): `{environment}`.",
        "",
        "| side | environment | tokens/s | CPU share | peak RSS MB | loss, first → last |",
        "|---|---|---:|---:|---:|---|",
    ]
    titles = {"ours": ("ours: `steps.train.trainer.train` + `Olmo`", "workers'"),
              "peer": ("transformers: `OlmoForCausalLM` + AdamW loop", "default"),
              "peer_worker_env": ("transformers: `OlmoForCausalLM` + AdamW loop", "workers'")}
    for name, (title, env) in titles.items():
        side = sides[name]
        lines.append(f"| {title} | {env} | {side['tokens_per_second']:,.0f} | {side['cpu_share']:.2f} | "
                     f"{side['peak_rss_mb']:,.0f} | "
                     f"{side['losses'][0]:.4f} → {side['losses'][-1]:.4f} |")
    lines += [
        "",
        f"ours / transformers: {report['ratio']:.2f}× tokens/s (target ≥ {TARGET_RATIO}: "
        f"{'met' if report['ratio'] >= TARGET_RATIO else 'NOT met'}); against transformers in the workers' "
        f"environment too: {report['ratio_same_environment']:.2f}×. Largest per-step loss difference: "
        f"{report['max_loss_difference']:.2e}. CPU share: CPU seconds over wall seconds × threads of the measured "
        f"steps{contention}.",
        "",
    ]
    gpu = report.get("gpu")
    if gpu is not None:
        mfu = "not known for this device" if gpu["mfu"] is None else f"{gpu['mfu']:.1%} (target ≥ {TARGET_MFU:.0%})"
        lines += [f"GPU ({gpu['device']}): {GPU['preset']}, seq {GPU['seq_len']}, {GPU['global_batch']} sequences "
                  f"per step ({GPU['micro_batch']} per micro-batch), bf16 autocast, compiled blocks: "
                  f"{gpu['tokens_per_second']:,.0f} tokens/s, MFU {mfu}, peak memory "
                  f"{gpu['peak_memory_gib']:.1f} GiB.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 6 steps of 2 sequences, not 3 of 12 of 4")
    parser.add_argument("--gpu", action="store_true", help="also measure OLMo-1B on the first GPU (tokens/s, MFU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    rounds, steps, batch = (3, 6, 2) if args.quick else (3, 12, 4)
    command = " ".join(["python benchmarks/train.py", *sys.argv[1:]])

    peer_python = ensure_peer()
    with work_directory("train-bench-", args.keep) as work:
        options = prepare(work, steps, batch, args.seed)
        log(f"{rounds} rounds of ours and transformers: {steps} steps of {batch} x {SHAPE['max_sequence_length']} "
            "tokens each")
        sides = run_rounds(options, peer_python, rounds, work)
        gpu = run_gpu(work, args.quick, args.seed) if args.gpu else None

    tokens_per_step = batch * SHAPE["max_sequence_length"]
    for side in sides.values():
        side["tokens_per_second"] = tokens_per_second(side["step_seconds"], tokens_per_step)
        side["cpu_share"] = cpu_share(side, options["threads"])
    ours, peer = sides["ours"], sides["peer"]
    report = {
        "sides": sides, "machine": machine(), "threads": options["threads"], "steps": steps, "batch": batch,
        "rounds": rounds, "gpu": gpu, "ratio": ours["tokens_per_second"] / peer["tokens_per_second"],
        "ratio_same_environment": ours["tokens_per_second"] / sides["peer_worker_env"]["tokens_per_second"],
        "max_loss_difference": max(abs(a - b) for a, b in zip(ours["losses"], peer["losses"])),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    append_results("train", results_block(command, report))
    line = {
        "benchmark": "train", "unit": "tokens/s", "ours": round(ours["tokens_per_second"], 1),
        "peer": round(peer["tokens_per_second"], 1), "ratio": round(report["ratio"], 3),
        "peer_worker_env": round(sides["peer_worker_env"]["tokens_per_second"], 1),
        "ratio_same_environment": round(report["ratio_same_environment"], 3),
        "loss_ours": ours["losses"][-1], "loss_peer": peer["losses"][-1],
        "max_loss_difference": report["max_loss_difference"],
        "peak_rss_mb_ours": ours["peak_rss_mb"], "peak_rss_mb_peer": peer["peak_rss_mb"],
        "cpu_share": {name: round(side["cpu_share"], 3) for name, side in sides.items()},
    }
    if gpu is not None:
        line |= {"tokens_per_second_gpu": round(gpu["tokens_per_second"], 1),
                 "mfu_gpu": None if gpu["mfu"] is None else round(gpu["mfu"], 4)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
