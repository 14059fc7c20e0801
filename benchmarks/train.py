"""Training benchmark: this project's trainer against OLMo-core's ``Trainer`` and ``transformers``' ``OlmoForCausalLM``
with a plain AdamW loop, each side's model FLOP/s as a fraction of this machine's measured fp32 matmul peak.

``python benchmarks/train.py [--quick] [--gpu]`` installs the peers from PyPI into virtualenvs of their own (once):
``transformers`` into ``benchmarks/.venv-transformers`` and ``ai2-olmo-core`` into ``benchmarks/.venv-olmo-core``,
each with the same torch (``torch==2.13.0``, the local CPU build). It builds an OLMo-shaped model (d_model 512,
8 layers, 8 heads, SwiGLU hidden 2048, the 50,304-row embedding, tied, seq 512), gives every side the same
initial weights (ours, exported through the project's Hugging Face mapping; OLMo-core loads them renamed to its
own tensors) and the same token batches (Zipf-distributed ids, so the loss has something to learn), and trains
each for the same steps in its own process on the same threads: fp32 on CPU, AdamW (0.9/0.95, eps 1e-5, no
weight decay), constant LR 3e-4, clipping at 1.0. OLMo-core's side is its own ``Transformer`` (built from its
config classes), ``TransformerTrainModule`` and ``Trainer`` (``train_worker.py`` says how).

Our side runs in the environment the launcher gives training workers (``steps.train.runtime``); each peer runs
twice, in the default environment and in ours. The sides alternate over several rounds (the machine may be
shared); tokens/s comes from the median step time over all rounds, warm-up steps left out. Every round also
measures the fp32 matmul peak (``torch.mm`` on large square matrices, the same threads, best of several); the
best over the rounds is the peak. Model FLOP/s = tokens/s x ``olmo_model.flops.flops_per_token`` (training:
6 x matmul parameters + attention). It appends tokens/s, the fraction of the peak, peak RSS and the losses to
``benchmarks/RESULTS.md`` (its "train" section) and prints one JSON line, last. When OLMo-core cannot be installed
or run, the benchmark goes on without it and RESULTS.md records the error.

``--gpu`` adds our trainer on the first GPU: the OLMo-1B preset at seq 2048, bf16 autocast, compiled blocks;
its tokens/s and MFU (model FLOPs with attention, over the GPU's peak dense bf16 FLOP/s).

:func:`ours_only` runs this project's side alone at any shape and size (the smoke test's toy run; no peer).
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
from olmo_model import OlmoConfig  # noqa: E402
from olmo_model.flops import flops_per_token  # noqa: E402
from steps.train.runtime import worker_environment  # noqa: E402

PEER_VENV = BENCHMARKS / ".venv-transformers"
PEER_REQUIREMENTS = ("torch==2.13.0", "transformers==4.57.1", "safetensors", "numpy")
OLMO_CORE_VENV = BENCHMARKS / ".venv-olmo-core"
OLMO_CORE_VERSION = "3.0.0"  # requires torch >=2.10,<2.14
# torch pinned to the local CPU build (pip would otherwise be free to take a CUDA build with its nvidia packages)
OLMO_CORE_REQUIREMENTS = ("torch==2.13.0", f"ai2-olmo-core=={OLMO_CORE_VERSION}", "safetensors", "numpy")
PEAK_MATMUL = {"sizes": [1024, 2048, 4096], "repeats": 5}  # square fp32 torch.mm, best of the repeats
TARGET_PEAK_FRACTION = 0.9  # issue 15: ours at >= 90% of the fp32 matmul peak measured in the same run
TARGET_OLMO_CORE_RATIO = 1.0  # issue 15: ours at >= 1.0x OLMo-core
SHAPE = {"d_model": 512, "n_heads": 8, "n_layers": 8, "mlp_hidden_size": 2048, "max_sequence_length": 512,
         "weight_tying": True}
WARMUP_STEPS = 2  # steps of each run left out of the timing (allocator, first-call costs)
TARGET_RATIO = 1.2  # issue 5's acceptance
CONTENDED = 0.9  # a CPU share below this: the machine was shared during the run
GPU = {"preset": "olmo-1b", "seq_len": 2048, "global_batch": 16, "micro_batch": 8, "warmup": 3}
TARGET_MFU = 0.45


def ensure_venv(venv: Path, requirements: tuple[str, ...], probe: str) -> Path:
    """The python of ``venv``, with ``requirements`` installed from PyPI (once) when ``probe`` fails in it."""
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", probe], capture_output=True).returncode:
        log(f"installing {', '.join(requirements)} into {venv} (once)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        run([str(venv / "bin" / "pip"), "install", *requirements], venv / "install.log")
        check = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"{venv}: installed, but `{probe}` fails there:\n{check.stderr[-2000:]}")
    return python


def ensure_peer() -> Path:
    """The python of ``benchmarks/.venv-transformers``, installed from PyPI when missing."""
    return ensure_venv(PEER_VENV, PEER_REQUIREMENTS,
                       "import transformers, torch; from transformers import OlmoForCausalLM")


def ensure_olmo_core() -> Path:
    """The python of ``benchmarks/.venv-olmo-core`` (``ai2-olmo-core`` on the CPU build of torch), installed from
    PyPI when missing."""
    probe = ("import torch; from importlib.metadata import version; from olmo_core.train import Trainer; "
             f"assert version('ai2-olmo-core') == {OLMO_CORE_VERSION!r}, version('ai2-olmo-core')")
    return ensure_venv(OLMO_CORE_VENV, OLMO_CORE_REQUIREMENTS, probe)


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
SIDES = (("ours", "ours", "project", True), ("peer", "peer", "peer", False), ("peer_worker_env", "peer", "peer", True),
         ("olmo_core", "olmo_core", "olmo_core", False), ("olmo_core_worker_env", "olmo_core", "olmo_core", True))
OPTIONAL = "olmo_core"  # a python whose sides the benchmark runs without when it cannot install or run them


def measure_peak(options: dict[str, Any], log_file: Path) -> dict[str, Any]:
    """This machine's fp32 matmul FLOP/s on the benchmark's threads (``train_worker.py peak``)."""
    return train_side(PROJECT_PYTHON, "peak", {**PEAK_MATMUL, "threads": options["threads"]}, {}, log_file)


def run_rounds(options: dict[str, Any], pythons: dict[str, Path], rounds: int, work: Path,
               failures: dict[str, str]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every side whose python is in ``pythons`` once per round, in alternating order, and the matmul peak once
    per round; per side the losses (equal in every round, checked) and the steady step times of all rounds.
    An optional side that fails is dropped from the rounds, its error kept in ``failures``."""
    pythons = {"project": PROJECT_PYTHON, **pythons}
    results: dict[str, dict[str, Any]] = {}
    peaks = []
    for round_index in range(rounds):
        sides = [side for side in SIDES if side[2] in pythons]
        order = sides if round_index % 2 == 0 else sides[::-1]
        log(f"round {round_index + 1}/{rounds}: fp32 matmul peak")
        peaks.append(measure_peak(options, work / "logs" / f"peak-{round_index}.log"))
        for name, mode, python, worker_env in order:
            if python not in pythons:
                continue
            log(f"round {round_index + 1}/{rounds}: {name}")
            try:
                measured = train_side(pythons[python], mode, options, worker_environment() if worker_env else {},
                                      work / "logs" / f"{name}-{round_index}.log")
            except RuntimeError as error:
                if python != OPTIONAL:
                    raise
                log(f"{name} failed; the benchmark goes on without {python}:\n{error}")
                failures[python] = f"{name}, round {round_index + 1}: {error}"
                del pythons[python]
                for other, _, whose, _ in SIDES:
                    if whose == python:
                        results.pop(other, None)
                continue
            side = results.setdefault(name, {"losses": measured["losses"], "step_seconds": [], "step_cpu_seconds": [],
                                             "peak_rss_mb": 0.0})
            if measured["losses"] != side["losses"]:
                raise RuntimeError(f"{name}: the losses of round {round_index + 1} differ from round 1's")
            for key in ("step_seconds", "step_cpu_seconds"):
                side[key] += measured[key][WARMUP_STEPS:]
            side["peak_rss_mb"] = max(side["peak_rss_mb"], measured["peak_rss_mb"])
            if "olmo_core_flops_per_token" in measured:
                side["olmo_core_flops_per_token"] = measured["olmo_core_flops_per_token"]
    return results, peaks


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


TITLES = {  # side: (what runs, environment)
    "ours": ("ours: `steps.train.trainer` + `Olmo`", "workers'"),
    "peer": ("transformers: `OlmoForCausalLM` + AdamW loop", "default"),
    "peer_worker_env": ("transformers: `OlmoForCausalLM` + AdamW loop", "workers'"),
    "olmo_core": ("OLMo-core: `Transformer` + `TransformerTrainModule` + `Trainer`", "default"),
    "olmo_core_worker_env": ("OLMo-core: `Transformer` + `TransformerTrainModule` + `Trainer`", "workers'"),
}


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def results_block(command: str, report: dict[str, Any]) -> str:
    sides, m, peak = report["sides"], report["machine"], report["peak"]
    contention = "" if min(side["cpu_share"] for side in sides.values()) >= CONTENDED else (
        f"; below {CONTENDED} here: other processes used these cores during the run, so these figures are not a "
        "clean measurement")
    environment = " ".join(f"{k}={v}" for k, v in sorted(worker_environment().items()))
    peers = PEER_REQUIREMENTS[1] + ("" if "olmo_core" in report["failures"] else f", ai2-olmo-core=={OLMO_CORE_VERSION}")
    per_round = ", ".join(f"{p['peak_flops'] / 1e9:.1f}" for p in peak["rounds"])
    lines = [
        f"### {report['date']}: `{command}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, torch threads {report['threads']}; "
        f"{peers}, each in its own virtualenv with torch 2.13.0 (CPU). Model: {SHAPE}, vocabulary 50,280 "
        f"(embedding 50,304); {report['steps']} steps of {report['batch']} × {SHAPE['max_sequence_length']} tokens, "
        "the same initial weights and batches; fp32, AdamW (0.9, 0.95, eps 1e-5, no weight decay), LR 3e-4 "
        f"constant, clip 1.0. {report['rounds']} rounds, the sides alternating; tokens/s from the median time of the "
        f"steps after the first {WARMUP_STEPS} of every run. Workers' environment (`steps.train.runtime`): "
        f"`{environment}`.",
        "",
        f"fp32 matmul peak of this machine, measured in this run: {peak['peak_flops'] / 1e9:.1f} GFLOP/s (`torch.mm`, "
        f"square {'/'.join(map(str, PEAK_MATMUL['sizes']))}, {report['threads']} threads, best of "
        f"{PEAK_MATMUL['repeats']} per size; per round: {per_round}). Model FLOPs: "
        f"`olmo_model.flops.flops_per_token` = {report['flops_per_token'] / 1e6:.1f} MFLOP a token (6 × matmul "
        "parameters, output matrix included, + attention), the same for every side.",
        "",
        "| side | environment | tokens/s | model GFLOP/s | of the peak | CPU share | peak RSS MB | loss, first → last |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, (title, env) in TITLES.items():
        if name not in sides:
            continue
        side = sides[name]
        lines.append(f"| {title} | {env} | {side['tokens_per_second']:,.0f} | {side['model_flops'] / 1e9:.1f} | "
                     f"{side['peak_fraction']:.1%} | {side['cpu_share']:.2f} | {side['peak_rss_mb']:,.0f} | "
                     f"{side['losses'][0]:.4f} → {side['losses'][-1]:.4f} |")
    ours_fraction = sides["ours"]["peak_fraction"]
    lines += [
        "",
        f"ours: {ours_fraction:.1%} of the measured peak (target ≥ {TARGET_PEAK_FRACTION:.0%}: "
        f"{verdict(ours_fraction >= TARGET_PEAK_FRACTION)}).",
    ]
    if "ratio_olmo_core" in report:
        lines.append(
            f"ours / OLMo-core: {report['ratio_olmo_core']:.2f}× tokens/s (target ≥ {TARGET_OLMO_CORE_RATIO}: "
            f"{verdict(report['ratio_olmo_core'] >= TARGET_OLMO_CORE_RATIO)}); against OLMo-core in the workers' "
            f"environment too: {report['ratio_olmo_core_same_environment']:.2f}×. Largest per-step loss difference "
            f"from OLMo-core: {report['max_loss_difference_olmo_core']:.2e}. OLMo-core's own count "
            f"(`Transformer.num_flops_per_token`) is {report['olmo_core_flops_per_token'] / 1e6:.1f} MFLOP a token.")
    else:
        lines += ["OLMo-core: not measured; it failed (the benchmark went on without it):", "", "```",
                  report["failures"]["olmo_core"][-2000:].strip(), "```", ""]
    lines += [
        f"ours / transformers: {report['ratio']:.2f}× tokens/s (issue 5's target ≥ {TARGET_RATIO}: "
        f"{verdict(report['ratio'] >= TARGET_RATIO)}); against transformers in the workers' environment too: "
        f"{report['ratio_same_environment']:.2f}×. Largest per-step loss difference from transformers: "
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


def max_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 6 steps of 2 sequences, not 3 of 12 of 4")
    parser.add_argument("--gpu", action="store_true", help="also measure OLMo-1B on the first GPU (tokens/s, MFU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    rounds, steps, batch = (3, 6, 2) if args.quick else (3, 12, 4)
    command = " ".join(["python benchmarks/train.py", *sys.argv[1:]])

    pythons, failures = {"peer": ensure_peer()}, {}
    try:
        pythons["olmo_core"] = ensure_olmo_core()
    except (RuntimeError, subprocess.CalledProcessError) as error:
        log(f"OLMo-core is not installed; the benchmark goes on without it:\n{error}")
        failures["olmo_core"] = f"installing {', '.join(OLMO_CORE_REQUIREMENTS)}: {error}"
    with work_directory("train-bench-", args.keep) as work:
        options = prepare(work, steps, batch, args.seed)
        log(f"{rounds} rounds of {', '.join(pythons)} and ours: {steps} steps of {batch} x "
            f"{SHAPE['max_sequence_length']} tokens each")
        sides, peaks = run_rounds(options, pythons, rounds, work, failures)
        gpu = run_gpu(work, args.quick, args.seed) if args.gpu else None

    tokens_per_step = batch * SHAPE["max_sequence_length"]
    per_token = flops_per_token(OlmoConfig(**SHAPE), SHAPE["max_sequence_length"])
    peak_flops = max(p["peak_flops"] for p in peaks)
    for side in sides.values():
        side["tokens_per_second"] = tokens_per_second(side["step_seconds"], tokens_per_step)
        side["cpu_share"] = cpu_share(side, options["threads"])
        side["model_flops"] = side["tokens_per_second"] * per_token
        side["peak_fraction"] = side["model_flops"] / peak_flops
    ours, peer = sides["ours"], sides["peer"]
    report = {
        "sides": sides, "machine": machine(), "threads": options["threads"], "steps": steps, "batch": batch,
        "rounds": rounds, "gpu": gpu, "failures": failures, "flops_per_token": per_token,
        "peak": {"peak_flops": peak_flops, "rounds": peaks},
        "ratio": ours["tokens_per_second"] / peer["tokens_per_second"],
        "ratio_same_environment": ours["tokens_per_second"] / sides["peer_worker_env"]["tokens_per_second"],
        "max_loss_difference": max_difference(ours["losses"], peer["losses"]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if "olmo_core" in sides and "olmo_core_worker_env" in sides:
        olmo_core = sides["olmo_core"]
        report |= {
            "ratio_olmo_core": ours["tokens_per_second"] / olmo_core["tokens_per_second"],
            "ratio_olmo_core_same_environment":
                ours["tokens_per_second"] / sides["olmo_core_worker_env"]["tokens_per_second"],
            "max_loss_difference_olmo_core": max_difference(ours["losses"], olmo_core["losses"]),
            "olmo_core_flops_per_token": olmo_core["olmo_core_flops_per_token"],
        }
    append_results("train", results_block(command, report))
    line = {
        "benchmark": "train", "unit": "tokens/s", "ours": round(ours["tokens_per_second"], 1),
        "peer": round(peer["tokens_per_second"], 1), "ratio": round(report["ratio"], 3),
        "peer_worker_env": round(sides["peer_worker_env"]["tokens_per_second"], 1),
        "ratio_same_environment": round(report["ratio_same_environment"], 3),
        "olmo_core": round(sides["olmo_core"]["tokens_per_second"], 1) if "ratio_olmo_core" in report else None,
        "olmo_core_worker_env": (round(sides["olmo_core_worker_env"]["tokens_per_second"], 1)
                                 if "ratio_olmo_core" in report else None),
        "ratio_olmo_core": round(report["ratio_olmo_core"], 3) if "ratio_olmo_core" in report else None,
        "ratio_olmo_core_same_environment": (round(report["ratio_olmo_core_same_environment"], 3)
                                             if "ratio_olmo_core" in report else None),
        "olmo_core_error": failures.get("olmo_core"),
        "peak_gflops": round(peak_flops / 1e9, 1),
        "peak_fraction": {name: round(side["peak_fraction"], 4) for name, side in sides.items()},
        "loss_ours": ours["losses"][-1], "loss_peer": peer["losses"][-1],
        "max_loss_difference": report["max_loss_difference"],
        "max_loss_difference_olmo_core": report.get("max_loss_difference_olmo_core"),
        "peak_rss_mb_ours": ours["peak_rss_mb"], "peak_rss_mb_peer": peer["peak_rss_mb"],
        "cpu_share": {name: round(side["cpu_share"], 3) for name, side in sides.items()},
    }
    if gpu is not None:
        line |= {"tokens_per_second_gpu": round(gpu["tokens_per_second"], 1),
                 "mfu_gpu": None if gpu["mfu"] is None else round(gpu["mfu"], 4)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
