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


# allenai/OLMo-2-1124-7B's config.json (its keys that describe the model; sources in tests/olmo_model/test_olmo2.py)
OLMO2_7B_CONFIG = {
    "architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "eos_token_id": 100257,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008,
    "max_position_embeddings": 4096, "model_type": "olmo2", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 32, "pad_token_id": 100277, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 500000, "tie_word_embeddings": False, "vocab_size": 100352,
}


def test_olmo2_presets_export_the_released_configs():
    seven = hf_config(OlmoConfig.preset("olmo2-7b"))
    assert {key: seven[key] for key in OLMO2_7B_CONFIG} == OLMO2_7B_CONFIG
    one = hf_config(OlmoConfig.preset("olmo2-1b"))  # allenai/OLMo-2-0425-1B: the 7B's keys but for the shape
    shape = {"hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 16, "num_hidden_layers": 16,
             "num_key_value_heads": 16}
    assert {key: one[key] for key in OLMO2_7B_CONFIG} == {**OLMO2_7B_CONFIG, **shape}
    assert "clip_qkv" not in seven and hf_config(OlmoConfig.preset("olmo-7b"))["model_type"] == "olmo"


def test_olmo2_norm_weights_map_one_to_one():
    config = OlmoConfig.preset("olmo-micro", norm="rmsnorm", block="reordered_norm", qk_norm=True)
    state = Olmo(config).state_dict()
    hf = to_hf_state_dict(state, config)
    norms = sorted(name for name in hf if "norm" in name)
    per_layer = ["post_attention_layernorm", "post_feedforward_layernorm", "self_attn.k_norm", "self_attn.q_norm"]
    assert norms == [f"model.layers.{i}.{norm}.weight" for i in (0, 1) for norm in per_layer] + ["model.norm.weight"]
    back = from_hf_state_dict(hf, config)
    assert set(back) == set(state) and all(torch.equal(back[name], state[name]) for name in state)
