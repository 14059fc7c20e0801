"""workflows/adapt-hf.jsonnet end to end: an HF OLMo checkpoint made here by ``transformers`` (random weights, the
real OLMo tokenizer) is imported, fine-tuned on open-instruct-format files (SFT, then DPO against cached reference
log-probs), evaluated at each stage, exported and reported; a second run starts nothing. The corpus steps (held-out
documents) come cached from the session's micro workspace; the settings are olmo-micro's."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tango import StepGraph
from tango.common.params import Params
from tango.common.util import import_module_and_submodules

from integrations.workspace import OlmoWorkspace
from tests.export.test_import_hf import write_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ADAPT_HF = ROOT / "workflows" / "adapt-hf.jsonnet"
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"

import_module_and_submodules("steps")


def chat(*turns: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in zip(["user", "assistant"] * len(turns), turns)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def micro_adaptation(tmp_path: Path) -> Path:
    """adapt-hf with olmo-micro's params; SFT in the checkpoint's own (Jinja) chat template, DPO in OLMo's."""
    workflow = tmp_path / "adapt-hf-micro.jsonnet"
    workflow.write_text(
        f"local micro = (import '{MICRO}').params;\n"
        f"(import '{ADAPT_HF}') + {{ params:: micro {{ name: 'adapt-hf-micro', sft+: {{ template: 'checkpoint' }},"
        f" dpo+: {{ template: 'olmo', loss_type: 'dpo_norm', beta: 5.0 }} }} }}\n"
    )
    return workflow


@pytest.mark.slow
def test_a_released_checkpoint_is_imported_adapted_evaluated_exported_and_cached(micro_workspace, tango_run, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "OLMo-micro-hf", tied=True, max_position_embeddings=128)
    sft = write_jsonl(tmp_path / "tulu.jsonl", [
        {"id": f"t{i}", "messages": chat(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.")} for i in range(12)
    ] + [{"id": "bad", "messages": [{"role": "narrator", "content": "Once upon a time."}]}])
    preferences = write_jsonl(tmp_path / "ultrafeedback.jsonl", [
        {"chosen": chat(f"Name color {i}.", "Teal."), "rejected": chat(f"Name color {i}.", "I will not.")}
        for i in range(12)
    ])
    workspace = tmp_path / "workspace"
    shutil.copytree(micro_workspace, workspace, symlinks=True)
    workflow = micro_adaptation(tmp_path)
    arguments = ("-D", f"model_dir={checkpoint}", "-D", f"sft_data={sft}", "-D", f"preference_data={preferences}")

    started, _ = tango_run(workflow, workspace, *arguments)
    assert started == {"imported", "evaluate_imported", "sft_data", "sft", "evaluate_sft", "preference_data",
                       "reference_logprobs", "dpo", "evaluate_dpo", "export", "report"}  # the corpus came cached

    ext_vars = {"model_dir": str(checkpoint), "sft_data": str(sft), "preference_data": str(preferences),
                "anneal": "false"}
    graph = StepGraph.from_params(Params.from_file(workflow, ext_vars=ext_vars).pop("steps", keep_as_dict=True))
    cache = OlmoWorkspace(str(workspace)).step_cache
    results = {name: cache[step] for name, step in graph.items()}
    sft_data = results["sft_data"].summary
    assert (sft_data["rows_read"], sft_data["kept"], sft_data["dropped_unknown_role"]) == (13, 12, 1)
    assert sft_data["drop_examples"]["unknown_role"][0].startswith(f"{sft}:13:")
    assert results["sft"].summary["examples"]["encoded"] == 12
    dpo = results["dpo"].summary
    assert dpo["loss_type"] == "dpo_norm" and dpo["beta"] == 5.0 and dpo["pairs"]["encoded"] == 12
    report = (results["report"].path / "report.md").read_text()
    assert "| imported |" in report and "| dpo |" in report
    exported = json.loads((results["export"].path / "config.json").read_text())
    assert exported["model_type"] == "olmo" and exported["vocab_size"] == 50304

    started, output = tango_run(workflow, workspace, *arguments)
    assert started == set() and "Found output for step" in output


def test_a_beta_or_loss_type_ablation_of_dpo_reuses_the_reference_logprobs(tmp_path):
    graph = StepGraph.from_file(MICRO)
    for override in ("beta: 0.5", "loss_type: 'dpo_norm'", "label_smoothing: 0.1"):
        ablation = tmp_path / "dpo-ablation.jsonnet"
        ablation.write_text(f"(import '{MICRO}') + {{ params+:: {{ dpo+: {{ {override} }} }} }}")
        ablated = StepGraph.from_file(ablation)
        changed = {name for name, step in ablated.items() if step.unique_id != graph[name].unique_id}
        assert changed == {"dpo", "evaluate_dpo", "export", "report"}, override
        assert ablated["reference_logprobs"].unique_id == graph["reference_logprobs"].unique_id


def test_the_workflow_names_the_setting_it_needs_and_defaults_the_optional_ones(tmp_path, tango_run):
    with pytest.raises(AssertionError, match=r"external variable is not defined: model_dir"):
        tango_run(ADAPT_HF, tmp_path / "workspace")  # (sft_data, preference_data and anneal: tango.yml's defaults)
