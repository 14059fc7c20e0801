import pytest
import torch

from olmo_model import Olmo, OlmoConfig


@pytest.mark.parametrize(
    ("preset", "expected"), [("olmo-1b", 1_176_764_416), ("olmo-7b", 6_888_095_744)]
)
def test_paper_parameter_counts_on_meta_device(preset, expected):
    config = OlmoConfig.preset(preset)
    with torch.device("meta"):
        model = Olmo(config)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == expected
    assert config.num_parameters() == expected


def test_7b_shapes_follow_reference():
    config = OlmoConfig.preset("olmo-7b")
    with torch.device("meta"):
        model = Olmo(config)
    block = model.transformer.blocks[0]
    assert block.ff_proj.weight.shape == (22016, 4096)  # fused up+gate
    assert block.ff_out.weight.shape == (4096, 11008)  # SwiGLU hidden
    assert model.transformer.ff_out.weight.shape == (50304, 4096)
    assert not config.weight_tying and OlmoConfig.preset("olmo-1b").weight_tying


@pytest.mark.parametrize(
    ("vocab_size", "pad_to_multiple", "expected"),
    [(50280, 128, 50304), (50304, 128, 50304), (50305, 128, 50432), (50280, 1, 50280)],
)
def test_embedding_size_pads_vocab(vocab_size, pad_to_multiple, expected):
    config = OlmoConfig.preset("olmo-micro", vocab_size=vocab_size, pad_to_multiple=pad_to_multiple)
    assert config.embedding_size == expected


def test_default_token_ids_and_rope():
    config = OlmoConfig.preset("olmo-tiny")
    assert (config.vocab_size, config.eos_token_id, config.pad_token_id) == (50280, 50279, 1)
    assert (config.rope_theta, config.layer_norm_eps, config.max_sequence_length) == (10000.0, 1e-5, 256)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="olmo-1b.*olmo-7b.*olmo-micro.*olmo-tiny"):
        OlmoConfig.preset("olmo-65b")


def test_preset_overrides_are_validated():
    assert OlmoConfig.preset("olmo-micro", n_layers=3).n_layers == 3
    with pytest.raises(ValueError, match="unknown key.*'n_layer'"):
        OlmoConfig.preset("olmo-micro", n_layer=3)


def test_round_trip_through_dict():
    config = OlmoConfig.preset("olmo-7b")
    assert OlmoConfig.from_dict(config.to_dict()) == config
    assert "embedding_size" not in config.to_dict()


def test_from_dict_rejects_unknown_keys():
    data = {**OlmoConfig.preset("olmo-micro").to_dict(), "clip_qkv": 8.0}
    with pytest.raises(ValueError, match="unknown key.*'clip_qkv'"):
        OlmoConfig.from_dict(data)


def test_from_dict_names_missing_keys():
    with pytest.raises(ValueError, match="missing required key.*'mlp_hidden_size'"):
        OlmoConfig.from_dict({"d_model": 32, "n_heads": 2, "n_layers": 2})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_heads": 3}, "divisible by n_heads"),
        ({"d_model": 24, "n_heads": 8}, "must be even"),
        ({"n_layers": "2"}, r"n_layers: expected an integer, got '2'"),
        ({"d_model": True}, "d_model: expected an integer"),
        ({"weight_tying": 1}, "weight_tying: expected a bool"),
        ({"n_layers": 0}, "n_layers: expected a positive integer"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps: expected a positive number"),
        ({"eos_token_id": 50280}, r"eos_token_id: expected an id in \[0, 50280\)"),
        ({"init": "xavier"}, "init: expected one of 'mitchell', 'normal'"),
        ({"norm": "batchnorm"}, "norm: expected one of 'layernorm', 'rmsnorm'"),
        ({"block": "post_norm"}, "block: expected one of 'pre_norm', 'reordered_norm'"),
        ({"qk_norm": 1}, "qk_norm: expected a bool"),
    ],
)
def test_bad_values_are_reported_by_key(override, message):
    with pytest.raises(ValueError, match=message):
        OlmoConfig.preset("olmo-micro", **override)


def test_integer_given_for_float_is_normalised():
    config = OlmoConfig.preset("olmo-micro", rope_theta=10000)
    assert type(config.rope_theta) is float
    assert config == OlmoConfig.preset("olmo-micro")
