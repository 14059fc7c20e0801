import math

import pytest
import torch
import torch.nn.functional as F

from olmo_model import Olmo, OlmoConfig
from olmo_model.model import CPU_QUERY_BAND, apply_rotary, causal_attention

MICRO = OlmoConfig.preset("olmo-micro")


@pytest.fixture(scope="module")
def model() -> Olmo:
    torch.manual_seed(0)
    return Olmo(MICRO).eval()


def tokens(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, MICRO.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def expected_shapes(config: OlmoConfig) -> dict[str, tuple[int, ...]]:
    d, h, e = config.d_model, config.mlp_hidden_size, config.embedding_size
    shapes = {"transformer.wte.weight": (e, d)}
    for i in range(config.n_layers):
        shapes |= {
            f"transformer.blocks.{i}.att_proj.weight": (3 * d, d),
            f"transformer.blocks.{i}.attn_out.weight": (d, d),
            f"transformer.blocks.{i}.ff_proj.weight": (2 * h, d),
            f"transformer.blocks.{i}.ff_out.weight": (d, h),
        }
    if not config.weight_tying:
        shapes["transformer.ff_out.weight"] = (e, d)
    return shapes


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_names_and_shapes_match_olmo_checkpoints(tied):
    config = OlmoConfig.preset("olmo-micro", weight_tying=tied)
    with torch.device("meta"):
        model = Olmo(config)
    actual = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    assert actual == expected_shapes(config)  # hence no biases, no LayerNorm parameters, no buffers
    assert isinstance(model.transformer.blocks, torch.nn.ModuleList)


def test_logits_shape_and_forward_is_project_of_hidden_states(model):
    ids = tokens(2, 12)
    logits = model(ids)
    assert logits.shape == (2, 12, 50304) and logits.dtype == torch.float32
    hidden = model.hidden_states(ids)
    assert hidden.shape == (2, 12, MICRO.d_model)
    torch.testing.assert_close(model.project(hidden), logits, rtol=0, atol=0)
    torch.testing.assert_close(model.project(hidden[:, -1]), logits[:, -1])


def test_hidden_states_are_layer_normalised(model):
    hidden = model.hidden_states(tokens(1, 8))
    torch.testing.assert_close(hidden.mean(-1), torch.zeros(1, 8), rtol=0, atol=1e-5)
    torch.testing.assert_close(hidden.var(-1, unbiased=False), torch.ones(1, 8), rtol=0, atol=1e-3)


def test_changing_a_later_token_leaves_earlier_logits_unchanged(model):
    ids = tokens(1, 16)
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % MICRO.vocab_size
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :10], after[:, :10], rtol=0, atol=0)
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_tied_output_is_the_embedding(model):
    assert not hasattr(model.transformer, "ff_out")
    hidden = torch.randn(3, MICRO.d_model)
    torch.testing.assert_close(model.project(hidden), hidden @ model.transformer.wte.weight.T)


def test_untied_output_is_separate():
    torch.manual_seed(0)
    untied = Olmo(OlmoConfig.preset("olmo-micro", weight_tying=False))
    output, embedding = untied.transformer.ff_out.weight, untied.transformer.wte.weight
    assert output.data_ptr() != embedding.data_ptr()
    hidden = torch.randn(3, MICRO.d_model)
    torch.testing.assert_close(untied.project(hidden), hidden @ output.T)
    ids = tokens(1, 4)
    untied(ids).sum().backward()
    assert output.grad is not None and embedding.grad is not None
    assert not torch.equal(output.grad, embedding.grad)


def test_swiglu_first_half_is_up_second_is_gate(model):
    block = model.transformer.blocks[0]
    h = MICRO.mlp_hidden_size
    x = torch.randn(2, 5, MICRO.d_model)
    up_weight, gate_weight = block.ff_proj.weight[:h], block.ff_proj.weight[h:]
    expected = (F.silu(x @ gate_weight.T) * (x @ up_weight.T)) @ block.ff_out.weight.T
    swapped = (F.silu(x @ up_weight.T) * (x @ gate_weight.T)) @ block.ff_out.weight.T
    torch.testing.assert_close(block.mlp(x), expected)
    assert not torch.allclose(block.mlp(x), swapped, atol=1e-4)


def manual_rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """NeoX RoPE on [..., T, D]: dims i and i + D/2 rotate by position · theta^(-2i/D)."""
    seq_len, dim = x.shape[-2:]
    half = dim // 2
    angle = torch.tensor(
        [[p * theta ** (-2 * i / dim) for i in range(half)] for p in range(seq_len)], dtype=torch.float64
    ).float()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()), dim=-1)


def manual_attention(block, x: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention written out, before attn_out."""
    batch, seq_len, d = x.shape
    n_heads = MICRO.n_heads
    q, k, v = (x @ w.T for w in block.att_proj.weight.split(d))
    q, k, v = (t.view(batch, seq_len, n_heads, d // n_heads).transpose(1, 2) for t in (q, k, v))
    q, k = manual_rope(q), manual_rope(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // n_heads)
    future = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(-1)
    return (weights @ v).transpose(1, 2).reshape(batch, seq_len, d)


def test_attention_matches_manual_causal_softmax(model):
    block = model.transformer.blocks[1]
    x = torch.randn(2, 20, MICRO.d_model)
    cos, sin = model.rotary(20, x.device)
    torch.testing.assert_close(block.attention(x, cos, sin), manual_attention(block, x), rtol=0, atol=1e-5)


def test_block_is_pre_norm_residual(model):
    block = model.transformer.blocks[0]
    x = torch.randn(2, 9, MICRO.d_model) * 3 + 1
    cos, sin = model.rotary(9, x.device)

    def norm(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-5)

    h = x + manual_attention(block, norm(x)) @ block.attn_out.weight.T
    expected = h + block.mlp(norm(h))
    torch.testing.assert_close(block(x, cos, sin), expected, rtol=0, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position(model):
    dim = MICRO.head_dim
    q, k = torch.randn(dim), torch.randn(dim)
    cos, sin = model.rotary(64, torch.device("cpu"))
    assert cos.dtype == sin.dtype == torch.float32

    def score(q_pos: int, k_pos: int) -> float:
        rotated_q = apply_rotary(q.expand(64, dim), cos, sin)[q_pos]
        rotated_k = apply_rotary(k.expand(64, dim), cos, sin)[k_pos]
        return (rotated_q @ rotated_k).item()

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(20, 0) == pytest.approx(score(63, 43), abs=1e-4)
    assert score(10, 10) == pytest.approx(score(50, 50), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rope_tables_are_cached_and_grown(model):
    short_cos, _ = model.rotary(8, torch.device("cpu"))
    long_cos, _ = model.rotary(32, torch.device("cpu"))
    torch.testing.assert_close(long_cos[:8], short_cos, rtol=0, atol=0)
    again, _ = model.rotary(16, torch.device("cpu"))
    assert again.data_ptr() == long_cos.data_ptr()


def test_first_forward_in_inference_mode_does_not_break_training():
    torch.manual_seed(0)
    fresh = Olmo(MICRO)
    with torch.inference_mode():
        fresh(tokens(1, 8))
    fresh(tokens(1, 8)).sum().backward()
    assert fresh.transformer.wte.weight.grad is not None


def test_bf16_autocast_runs():
    torch.manual_seed(0)
    fresh = Olmo(MICRO)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = fresh(tokens(1, 8))
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), fresh(tokens(1, 8)), rtol=0.1, atol=0.1)


def test_bad_inputs_are_rejected(model):
    with pytest.raises(ValueError, match=r"\[batch, seq_len\]"):
        model(tokens(1, 4)[0])
    with pytest.raises(ValueError, match="exceeds max_sequence_length 128"):
        model(tokens(1, 129))


def test_meta_construction_skips_init():
    with torch.device("meta"):
        model = Olmo(MICRO)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("seq_len", [CPU_QUERY_BAND, 2 * CPU_QUERY_BAND + 44])  # one band; three, the last short
def test_causal_attention_in_query_bands_equals_one_causal_call(seq_len):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, seq_len, 8, generator=generator, requires_grad=True) for _ in range(3))
    banded = causal_attention(q, k, v)
    grads = torch.autograd.grad(banded.square().sum(), (q, k, v))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    torch.testing.assert_close(banded, expected, rtol=0, atol=1e-5)
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-4)
