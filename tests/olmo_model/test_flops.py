import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from olmo_model import Olmo, OlmoConfig
from olmo_model.flops import flops_per_token, matmul_parameters


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        # olmo-1b (tied): per block 4*2048^2 + 3*2048*8192 = 67,108,864; x16 = 1,073,741,824;
        # output 50304*2048 = 103,022,592; 6 * 1,176,764,416 = 7,060,586,496;
        # attention 12*16*2048*2048 = 805,306,368.
        ("olmo-1b", 7_060_586_496 + 805_306_368),
        # olmo-7b (untied): per block 4*4096^2 + 3*4096*11008 = 202,375,168; x32 = 6,476,005,376;
        # output 50304*4096 = 206,045,184; 6 * 6,682,050,560 = 40,092,303,360;
        # attention 12*32*4096*2048 = 3,221,225,472.
        ("olmo-7b", 40_092_303_360 + 3_221_225_472),
    ],
)
def test_paper_presets_match_hand_computation(preset, expected):
    assert flops_per_token(OlmoConfig.preset(preset), 2048) == expected


@pytest.mark.parametrize("weight_tying", [True, False])
def test_matmul_parameters_are_the_models_linear_weights_and_output(weight_tying):
    config = OlmoConfig.preset("olmo-micro", weight_tying=weight_tying)
    with torch.device("meta"):
        model = Olmo(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    output = config.embedding_size * config.d_model if weight_tying else 0  # tied: the embedding
    assert matmul_parameters(config) == linear + output


@pytest.mark.parametrize("weight_tying", [True, False])
def test_equals_torch_flop_counter_over_forward_and_backward(weight_tying):
    """PyTorch's own counter, with attention as plain (full, unmasked-cost) matmuls, agrees exactly."""
    config = OlmoConfig.preset("olmo-micro", vocab_size=256, eos_token_id=0, weight_tying=weight_tying)
    model = Olmo(config)
    batch, seq_len = 2, 64
    input_ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(input_ids).logsumexp(-1).sum().backward()
    assert counter.get_total_flops() == flops_per_token(config, seq_len) * batch * seq_len


def test_attention_grows_linearly_with_sequence_length():
    config = OlmoConfig.preset("olmo-tiny")
    growth = flops_per_token(config, 256) - flops_per_token(config, 128)
    assert growth == 12 * config.n_layers * config.d_model * 128


@pytest.mark.parametrize("seq_len", [0, -1, 2.0, True])
def test_rejects_a_bad_sequence_length(seq_len):
    with pytest.raises(ValueError, match="seq_len: expected a positive integer"):
        flops_per_token(OlmoConfig.preset("olmo-micro"), seq_len)
