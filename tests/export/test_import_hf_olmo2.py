"""OLMo 2 and Hugging Face ``Olmo2ForCausalLM`` (model_type "olmo2"), both ways: a checkpoint made with
``transformers`` (random weights, norm weights included) imports into our OLMo-2-shaped model with transformers'
logits; our OLMo 2 model exported loads in ``transformers`` with our logits; import then export is the identity on
every tensor and on the config; the ``import_hf``/``export_hf`` steps take it as they take OLMo v1."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from integrations.huggingface import (
    HuggingFaceImportError, export_to_hf, from_hf_state_dict, hf_config, import_from_hf, olmo_config_from_hf,
    to_hf_state_dict,
)
from integrations.workspace import OlmoWorkspace
from olmo_model import Olmo, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.models import MODEL_DIR, load_model, model_tokenizer_dir
from steps.export.steps import ExportHuggingFace, ImportHuggingFace
from tests.export.test_import_hf import assert_exported_as_imported, hf_tensors

# OLMo 2's padded vocabulary and token ids (see tests/olmo_model/test_olmo2.py), tiny layers.
ROWS, EOS, PAD = 100352, 100257, 100277
SHAPE = {"hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "vocab_size", "pad_token_id", "eos_token_id", "tie_word_embeddings",
    "attention_bias", "hidden_act", "rms_norm_eps", "model_type",
)


def randomize_norms(model: torch.nn.Module, seed: int) -> None:
    """Norm weights away from their initial ones, so that a mapping mistake shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.empty_like(param).uniform_(0.5, 1.5, generator=generator))


def write_tokenizer(path: Path) -> Path:
    """A word-level tokenizer whose special tokens are OLMo 2's EOS and pad ids."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {f"w{i}": i for i in range(EOS)}
    vocab.update({"<|endoftext|>": EOS, **{f"x{i}": i for i in range(EOS + 1, PAD)}, "<|pad|>": PAD})
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    tokenizer.save(str(path))
    return path


def write_checkpoint(directory: Path, tied: bool, max_shard_size: str | None = None, seed: int = 0) -> Path:
    from transformers import Olmo2Config, Olmo2ForCausalLM

    config = Olmo2Config(vocab_size=ROWS, max_position_embeddings=64, tie_word_embeddings=tied, rope_theta=500000.0,
                         rms_norm_eps=1e-6, eos_token_id=EOS, pad_token_id=PAD, **SHAPE)
    torch.manual_seed(seed)
    model = Olmo2ForCausalLM(config)
    randomize_norms(model, seed)
    if max_shard_size is None:
        model.save_pretrained(directory)
    else:
        model.save_pretrained(directory, max_shard_size=max_shard_size)
    return directory


def ours(seed: int = 0, **overrides) -> Olmo:
    """Our OLMo 2 (the olmo2-1b preset at the checkpoints' tiny size), seeded, norm weights randomised."""
    config = OlmoConfig.preset("olmo2-1b", d_model=32, n_heads=4, n_layers=2, mlp_hidden_size=96,
                               max_sequence_length=64, **overrides)
    model = Olmo(config)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    randomize_norms(model, seed)
    return model.eval()


def input_ids() -> torch.Tensor:
    return torch.randint(0, 100278, (2, 48), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-olmo2")
    return {
        "tied": write_checkpoint(root / "tied", tied=True),
        "untied": write_checkpoint(root / "untied", tied=False),
        "sharded": write_checkpoint(root / "sharded", tied=False, max_shard_size="5MB"),
    }


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_our_model_on_imported_olmo2_weights_gives_transformers_logits(kind, checkpoints):
    from transformers import Olmo2ForCausalLM

    theirs = Olmo2ForCausalLM.from_pretrained(checkpoints[kind], dtype=torch.float32).eval()
    config, state = import_from_hf(str(checkpoints[kind]))
    assert config.is_olmo2 and (config.norm, config.block, config.qk_norm) == ("rmsnorm", "reordered_norm", True)
    assert (config.layer_norm_eps, config.rope_theta, config.embedding_size) == (1e-6, 500000.0, ROWS)
    assert (config.eos_token_id, config.pad_token_id, config.weight_tying) == (EOS, PAD, kind == "tied")
    model = Olmo(config).eval()
    model.load_state_dict(state, strict=True)
    assert not torch.equal(state["transformer.blocks.1.q_norm.weight"], torch.ones(32))
    with torch.no_grad():
        expected = theirs(input_ids=input_ids(), use_cache=False).logits
        logits = model(input_ids())
    assert logits.shape == expected.shape == (2, 48, ROWS)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_our_olmo2_exported_loads_in_transformers_with_our_logits(tied, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Olmo2ForCausalLM

    model = ours(weight_tying=tied)
    files = export_to_hf(model.state_dict(), model.config, write_tokenizer(tmp_path / "tok.json"), tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert isinstance(theirs, Olmo2ForCausalLM)
    with torch.no_grad():
        expected = model(input_ids())
        logits = theirs(input_ids=input_ids(), use_cache=False).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    hf = AutoConfig.from_pretrained(tmp_path / "hf")
    assert (hf.model_type, hf.rms_norm_eps, hf.rope_parameters["rope_theta"]) == ("olmo2", 1e-6, 500000.0)
    assert (hf.vocab_size, hf.eos_token_id, hf.pad_token_id, hf.tie_word_embeddings) == (ROWS, EOS, PAD, tied)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (EOS, PAD)


@pytest.mark.parametrize("tied", [True, False])
def test_our_olmo2_weights_round_trip_exactly(tied):
    model = ours(weight_tying=tied)
    state = model.state_dict()
    hf = to_hf_state_dict(state, model.config)
    assert torch.equal(hf["model.layers.1.post_feedforward_layernorm.weight"],
                       state["transformer.blocks.1.ff_norm.weight"])
    assert torch.equal(hf["model.layers.0.post_attention_layernorm.weight"],
                       state["transformer.blocks.0.attn_norm.weight"])
    assert torch.equal(hf["model.layers.0.self_attn.k_norm.weight"], state["transformer.blocks.0.k_norm.weight"])
    assert torch.equal(hf["model.norm.weight"], state["transformer.ln_f.weight"])
    back = from_hf_state_dict(hf, model.config)
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor), name


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_import_then_export_is_the_identity(kind, checkpoints, tmp_path):
    source = checkpoints[kind]
    config, state = import_from_hf(str(source))
    if kind == "tied":  # transformers stores the tied output matrix once
        assert "lm_head.weight" not in hf_tensors(source)
    export_to_hf(state, config, write_tokenizer(tmp_path / "tok.json"), tmp_path / "exported")
    assert_exported_as_imported(source, tmp_path / "exported", CONFIG_KEYS, 500000.0)


def test_sharded_olmo2_imports_as_one_file(checkpoints, tmp_path):
    sharded = checkpoints["sharded"]
    assert len(list(sharded.glob("*.safetensors"))) > 1
    single = write_checkpoint(tmp_path / "single", tied=False)
    (config, state), (single_config, single_state) = import_from_hf(str(sharded)), import_from_hf(str(single))
    assert config == single_config
    for name, tensor in single_state.items():
        assert torch.equal(state[name], tensor), name


def config_json(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


def test_what_cannot_be_imported_or_exported_is_refused_naming_it(checkpoints, tmp_path):
    hf = config_json(checkpoints["untied"])
    with pytest.raises(HuggingFaceImportError, match=r"architectures is \['OlmoForCausalLM'\]; expected \['Olmo2"):
        olmo_config_from_hf({**hf, "architectures": ["OlmoForCausalLM"]})
    with pytest.raises(HuggingFaceImportError, match=r"model_type is 'llama'; only 'olmo' .* or 'olmo2'"):
        olmo_config_from_hf({**hf, "model_type": "llama"})
    with pytest.raises(HuggingFaceImportError, match=r"num_key_value_heads is 2, .*grouped-query"):
        olmo_config_from_hf({**hf, "num_key_value_heads": 2})
    assert olmo_config_from_hf({k: v for k, v in hf.items() if k != "rms_norm_eps"}).layer_norm_eps == 1e-5

    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["untied"], broken)
    tensors = load_file(broken / "model.safetensors")
    missing = "model.layers.1.self_attn.q_norm.weight"
    save_file({k: v for k, v in tensors.items() if k != missing}, broken / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=rf"broken: {missing} missing from the weights"):
        import_from_hf(str(broken))
    save_file({**tensors, "model.layers.0.input_layernorm.weight": torch.ones(32)}, broken / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=r"input_layernorm.weight is not a weight of Olmo2ForCausalLM"):
        import_from_hf(str(broken))
    save_file({**tensors, "model.norm.weight": torch.ones(31)}, broken / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=r"model.norm.weight has shape \[31\]"):
        import_from_hf(str(broken))

    mixed = OlmoConfig.preset("olmo-micro", norm="rmsnorm")  # RMSNorm in pre-norm blocks: no transformers model
    with pytest.raises(ValueError, match="no transformers model has norm='rmsnorm', block='pre_norm', qk_norm=False"):
        hf_config(mixed)
    with pytest.raises(ValueError, match="no transformers model has"):
        to_hf_state_dict(Olmo(mixed).state_dict(), mixed)


def test_import_and_export_steps_take_olmo2(checkpoints, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(checkpoints["untied"], source)
    write_tokenizer(source / "tokenizer.json")
    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    artifact = ImportHuggingFace(checkpoint={"path": str(source)}).result(workspace)
    assert artifact.summary["format"] == "transformers Olmo2ForCausalLM"
    model = load_model(artifact.path / MODEL_DIR)  # checksums verified, strict
    assert model.config.is_olmo2 and artifact.summary["parameters"] == model.config.num_parameters()
    _, state = import_from_hf(str(source))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name

    carried = Artifact(model_tokenizer_dir(artifact), {"fingerprint": "imported-olmo2-tokenizer"})
    exported = ExportHuggingFace(model=artifact, tokenizer=carried).result(workspace)
    assert exported.summary["format"] == "transformers Olmo2ForCausalLM"
    original = hf_tensors(source)
    assert set(hf_tensors(exported.path)) == set(original)
    for name, tensor in hf_tensors(exported.path).items():
        assert torch.equal(tensor, original[name]), name
