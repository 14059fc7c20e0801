"""Every benchmark imports, and runs its own side at toy size (no peer installed, seconds each), through the same
commands the benchmark runs: a benchmark broken by a change fails here, not on the next timed run."""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULES = sorted(path.stem for path in BENCHMARKS.glob("*.py"))
# the benchmarks themselves (``python benchmarks/<name>.py [--quick]``, one JSON line last); the others are their helpers
ENTRY_POINTS = [name for name in MODULES if '"benchmark": ' in (BENCHMARKS / f"{name}.py").read_text()]
TOY_MODEL = {"d_model": 64, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 128, "max_sequence_length": 64,
             "weight_tying": True}


def test_no_benchmark_shadows_a_standard_library_module():
    assert {"adapt", "corpus", "eval", "tokenization", "train"} <= set(ENTRY_POINTS)
    # each runs as ``python benchmarks/<name>.py``, which puts this folder first on the import path
    assert not set(MODULES) & set(sys.stdlib_module_names)


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports(name):
    importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_benchmark_script_starts(name):
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--quick" in result.stdout, result.stderr[-2000:]


def test_corpus_benchmark_runs_our_stages_at_toy_size(tmp_path):
    from benchmarks import corpus

    found = corpus.ours_only(tmp_path, num_documents=40)
    assert sum(found["input"]["sources"].values()) == 40
    assert found["filter"]["documents_in"] == 40 and 0 < found["filter"]["documents_kept"] <= 40
    assert found["dedup"]["documents_in"] == 40 and found["mix"]["documents_out"] == 40
    assert len(found["decisions"]["gopher"]) == len(found["decisions"]["pii_spans"]) == 40


def test_corpus_scale_benchmark_measures_every_stage_at_toy_size(tmp_path):
    from benchmarks import corpus_scale
    from benchmarks.corpus_input import write_corpus

    write_corpus(tmp_path / "documents", 40)
    stages = corpus_scale.run_stages(tmp_path, tmp_path / "documents", 40)
    assert list(stages) == ["tag", "filter", "dedup", "mix", "tokenize"]
    assert stages["tag"]["documents"] == stages["filter"]["documents"] == 40
    assert all(stage["cpu_s"] > 0 and stage["written_bytes"] > 0 for stage in stages.values())
    plan = corpus_scale.projection(stages, [1, 2], cores=4)
    tag = plan["stages"]["tag"]
    assert tag["hours"][1] == pytest.approx(2 * tag["hours"][2]) == pytest.approx(tag["cpu_hours"] / 4)
    assert plan["stages"]["dedup"]["partitions"] >= 1 and plan["stages"]["tokenize"]["tokens_per_cpu_s"] > 0


def test_corpus_benchmark_runs_datatrove_at_toy_size(tmp_path):
    """datatrove's side, when ``benchmarks/.venv-datatrove`` is installed (``benchmarks/corpus.py`` installs it)."""
    from benchmarks import corpus

    if not corpus.peer_ready(corpus.DATATROVE_VENV, corpus.DATATROVE_PROBE):
        pytest.skip("benchmarks/.venv-datatrove is not installed (python benchmarks/corpus.py installs it)")
    found = corpus.datatrove_only(corpus.DATATROVE_VENV / "bin" / "python", tmp_path, num_documents=40)
    filtered, decisions = found["filter"], found["decisions"]["gopher"]
    assert filtered["documents_in"] == 40 and 0 < filtered["documents_kept"] <= 40 and len(decisions) == 40
    # the exclusion writers' run keeps what the timed run's Gopher filters forwarded
    assert sum(reason is None for reason in decisions.values()) == filtered["steps"]["gopher_repetition"]["forwarded"]


def test_tokenization_benchmark_runs_our_modes_at_toy_size(tmp_path):
    from benchmarks import tokenization

    found = tokenization.ours_only(tmp_path, num_documents=40, plan={"total_tokens": 20_000_000, "files": 4})
    assert found["tokenize"]["documents"] == 40 and found["tokenize"]["tokens"] > 40
    compared = found["compare"]
    assert compared["documents_ours"] == compared["documents_peer"] == 40 and compared["differing"] == 0
    assert found["batch_regen"]["token_files"] == 4 and found["batch_regen"]["batch_ms"] > 0


def test_train_benchmark_runs_our_trainer_at_toy_size(tmp_path):
    from benchmarks import train

    found = train.ours_only(tmp_path, TOY_MODEL, steps=2, batch=1)
    assert len(found["losses"]) == len(found["step_seconds"]) == 2
    assert all(loss > 0 for loss in found["losses"]) and found["peak_rss_mb"] > 0


def test_eval_benchmark_scores_both_sides_alike_at_toy_size():
    from benchmarks import eval as evaluation

    report = evaluation.measure(limit=2, rounds=1, shape=TOY_MODEL, tasks=evaluation.TASKS[:2])
    assert report["max_logprob_difference"] <= evaluation.LOGPROB_TOLERANCE and report["accuracies_equal"]
    assert report["pairs"] == sum(report["task_pairs"].values()) > 0
    assert json.dumps(report["questions"]) and "| side |" in evaluation.results_block("toy", {**report, "date": "-"})




def test_adapt_benchmark_runs_at_toy_size(tmp_path):
    """Our SFT and DPO jobs through the launcher (one worker each); with TRL installed, the whole benchmark, TRL's
    trainers too, at toy size (one test, so that the launcher's and TRL's start-ups stay within about a minute)."""
    from benchmarks import adapt

    if importlib.util.find_spec("trl") is None:
        found = adapt.ours_only(tmp_path, TOY_MODEL, steps=3, batch=2)
        for stage in adapt.STAGES:
            assert len(found[stage]["losses"]) == 3 and len(found[stage]["step_seconds"]) == 2, stage
            assert all(loss > 0 for loss in found[stage]["losses"]) and found[stage]["peak_rss_mb"] > 0
        assert found["dpo"]["losses"][0] == pytest.approx(0.693147, abs=1e-4)  # policy = reference at the start
        assert found["dpo"]["reference_seconds"] > 0
        return
    settings = {stage: {**adapt.SETTINGS[stage], "batch": 2} for stage in adapt.STAGES}
    report = adapt.measure(tmp_path, steps=3, rounds=1, python=Path(sys.executable), with_worker_env=False,
                           shape=TOY_MODEL, settings=settings)
    for name, figures in report["figures"].items():
        assert figures["measured_steps"] == 3 - adapt.WARMUP_STEPS and figures["tokens_per_second"] > 0, name
        assert len(figures["losses"]) == 3 and figures["peak_rss_mb"] > 0, name
    for side in ("ours", "trl"):
        assert report["figures"][f"{side}_dpo"]["losses"][0] == pytest.approx(0.693147, abs=1e-4)  # policy = reference
        assert report["figures"][f"{side}_dpo"]["reference_seconds"] > 0
    for stage in adapt.STAGES:  # the same weights, data and loss: TRL's losses are ours to float rounding
        assert report[f"{stage}_max_loss_difference"] < 1e-3, stage
    assert "| sft |" in adapt.results_block("toy", report)
    line = adapt.json_line(report)
    assert line["benchmark"] == "adapt" and line["ratio"] == pytest.approx(line["ours"] / line["peer"], rel=1e-2)
