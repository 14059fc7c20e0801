"""Training benchmark: this project's trainer against ``transformers``' ``OlmoForCausalLM`` with a plain AdamW loop.

``python benchmarks/train.py [--quick]`` installs ``transformers`` (with the same torch) into
``benchmarks/.venv-transformers`` (once), builds an OLMo-shaped model (d_model 512, 8 layers, 8 heads, SwiGLU
hidden 2048, the 50,304-row embedding, tied, seq 512), gives both sides the same initial weights (ours,
exported through the project's Hugging Face mapping) and the same token batches (Zipf-distributed ids, so the
loss has something to learn), and trains each for the same steps in its own process, one after the other, on
the same threads: fp32 on CPU, AdamW (0.9/0.95, eps 1e-5, no weight decay), constant LR 3e-4, clipping at 1.0.
It reports tokens/s (after two warm-up steps), peak RSS and the loss of every step for both, appends them to
``benchmarks/RESULTS.md`` (its "train" section) and prints one JSON line, last.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/tokenize.py shadows the standard library's ``tokenize``: take this folder off the import path
# and import the other benchmarks as the ``benchmarks`` package.
BENCHMARKS_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCHMARKS_DIR]
sys.path.insert(0, str(BENCHMARKS_DIR.parent))

from benchmarks.corpus import (  # noqa: E402
    BENCHMARKS, PROJECT_PYTHON, append_results, base_python, log, machine, run, work_directory,
)

PEER_VENV = BENCHMARKS / ".venv-transformers"
PEER_REQUIREMENTS = ("torch==2.13.0", "transformers==4.57.1", "safetensors", "numpy")
SHAPE = {"d_model": 512, "n_heads": 8, "n_layers": 8, "mlp_hidden_size": 2048, "max_sequence_length": 512,
         "weight_tying": True}
TARGET_RATIO = 1.2  # issue 5's acceptance


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


def prepare(work: Path, steps: int, batch: int, seed: int) -> dict[str, Any]:
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
    run([str(PROJECT_PYTHON), "-c", script, json.dumps(SHAPE), str(work / "model"), str(seed)],
        work / "logs" / "prepare.log")
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, size=(steps, batch, SHAPE["max_sequence_length"])) - 1, 50_279)
    np.save(work / "tokens.npy", ids.astype(np.int64))
    return {"model": str(work / "model"), "tokens": str(work / "tokens.npy"), "olmo_config": SHAPE,
            "threads": os.cpu_count() or 1}


def train_side(python: Path, mode: str, options: dict[str, Any], work: Path) -> dict[str, Any]:
    measured = run([str(python), str(BENCHMARKS / "train_worker.py"), mode, json.dumps(options)],
                   work / "logs" / f"{mode}.log")
    return json.loads(measured.stdout.strip().splitlines()[-1])


def results_block(command: str, report: dict[str, Any]) -> str:
    ours, peer, m = report["ours"], report["peer"], report["machine"]
    ratio = ours["tokens_per_second"] / peer["tokens_per_second"]
    lines = [
        f"### {report['date']}: `{command}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, torch threads {report['threads']}; "
        f"{PEER_REQUIREMENTS[1]}. Model: {SHAPE}, vocabulary 50,280 (embedding 50,304); {report['steps']} steps "
        f"of {report['batch']} × {SHAPE['max_sequence_length']} tokens, the same initial weights and batches; "
        "fp32, AdamW (0.9, 0.95, eps 1e-5, no weight decay), LR 3e-4 constant, clip 1.0. tokens/s over the steps "
        "after the first two.",
        "",
        "| side | tokens/s | peak RSS MB | loss, first → last |",
        "|---|---:|---:|---|",
    ]
    for name, side in (("ours: `steps.train.trainer.train` + `Olmo`", ours),
                       ("transformers: `OlmoForCausalLM` + AdamW loop", peer)):
        lines.append(f"| {name} | {side['tokens_per_second']:,.0f} | {side['peak_rss_mb']:,.0f} | "
                     f"{side['losses'][0]:.4f} → {side['losses'][-1]:.4f} |")
    lines += [
        "",
        f"ours / transformers: {ratio:.2f}× tokens/s (target ≥ {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}). Largest per-step loss difference: "
        f"{report['max_loss_difference']:.2e}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 steps of 2 sequences instead of 20 of 4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    steps, batch = (6, 2) if args.quick else (20, 4)
    command = " ".join(["python benchmarks/train.py", *sys.argv[1:]])

    peer_python = ensure_peer()
    with work_directory("train-bench-", args.keep) as work:
        options = prepare(work, steps, batch, args.seed)
        log(f"training ours, then transformers: {steps} steps of {batch} x {SHAPE['max_sequence_length']} tokens")
        ours = train_side(PROJECT_PYTHON, "ours", options, work)
        peer = train_side(peer_python, "peer", options, work)

    difference = max(abs(a - b) for a, b in zip(ours["losses"], peer["losses"]))
    report = {"ours": ours, "peer": peer, "machine": machine(), "threads": options["threads"], "steps": steps,
              "batch": batch, "max_loss_difference": difference,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    append_results("train", results_block(command, report))
    print(json.dumps({
        "benchmark": "train", "unit": "tokens/s", "ours": round(ours["tokens_per_second"], 1),
        "peer": round(peer["tokens_per_second"], 1),
        "ratio": round(ours["tokens_per_second"] / peer["tokens_per_second"], 3),
        "loss_ours": ours["losses"][-1], "loss_peer": peer["losses"][-1], "max_loss_difference": difference,
        "peak_rss_mb_ours": ours["peak_rss_mb"], "peak_rss_mb_peer": peer["peak_rss_mb"],
    }))


if __name__ == "__main__":
    main()
