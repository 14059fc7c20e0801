import json

import pytest
import torch
from safetensors.torch import load_file

from integrations.huggingface import export_to_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from olmo_model import Olmo, OlmoConfig


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_is_exact(tied):
    config = OlmoConfig.preset("olmo-micro", weight_tying=tied)
    state = Olmo(config).state_dict()
    back = from_hf_state_dict(to_hf_state_dict(state, config), config)
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor), name


def test_split_follows_the_reference_mapping():
    config = OlmoConfig.preset("olmo-micro")
    state = Olmo(config).state_dict()
    hf = to_hf_state_dict(state, config)
    d, h = config.d_model, config.mlp_hidden_size
    fused_qkv = state["transformer.blocks.1.att_proj.weight"]
    assert torch.equal(hf["model.layers.1.self_attn.k_proj.weight"], fused_qkv[d : 2 * d])
    ff_proj = state["transformer.blocks.0.ff_proj.weight"]
    assert torch.equal(hf["model.layers.0.mlp.up_proj.weight"], ff_proj[:h])  # first half is "up"
    assert torch.equal(hf["model.layers.0.mlp.gate_proj.weight"], ff_proj[h:])
    assert torch.equal(hf["lm_head.weight"], state["transformer.wte.weight"])  # tied
    assert not any("norm" in name for name in hf)  # non-parametric LayerNorm has no weights


def test_config_matches_the_paper_models():
    seven = hf_config(OlmoConfig.preset("olmo-7b"))
    assert (seven["hidden_size"], seven["intermediate_size"], seven["num_hidden_layers"]) == (4096, 11008, 32)
    assert seven["vocab_size"] == 50304 and seven["eos_token_id"] == 50279 and seven["pad_token_id"] == 1
    assert seven["tie_word_embeddings"] is False and hf_config(OlmoConfig.preset("olmo-1b"))["tie_word_embeddings"]


def test_export_writes_a_loadable_directory(tmp_path):
    config = OlmoConfig.preset("olmo-micro")
    state = Olmo(config).state_dict()
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text("{}")
    files = export_to_hf(state, config, tokenizer, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    assert weights["model.embed_tokens.weight"].shape == (config.embedding_size, config.d_model)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "olmo"
