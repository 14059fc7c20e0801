"""OLMo 2's architecture options of ``OlmoConfig`` (RMSNorm, reordered norms, QK-norm, the "normal" init), the
``olmo2-1b``/``olmo2-7b`` presets and their parameter counts, and the v1 path left bit-identical.

Sources of the preset numbers (read 2026; HF pages as stored by the project's search tools):

- allenai/OLMo-2-1124-7B ``config.json`` (https://huggingface.co/allenai/OLMo-2-1124-7B/blob/
  stage2-ingredient3-step11931-tokens50B/config.json, the same in the ``stage2-ingredient1`` revision and in
  allenai/OLMo-2-1124-7B-Instruct's): Olmo2ForCausalLM, hidden_size 4096, intermediate_size 11008,
  num_hidden_layers 32, num_attention_heads 32, num_key_value_heads 32, max_position_embeddings 4096,
  rms_norm_eps 1e-06, rope_theta 500000, tie_word_embeddings false, vocab_size 100352, eos_token_id 100257,
  pad_token_id 100277 (also its generation_config.json on main).
- allenai/OLMo-2-0425-1B: the model card's table (16 layers, hidden 2048, 16 heads, context 4096); the repository
  listing (https://huggingface.co/allenai/OLMo-2-0425-1B/tree/main: fp32 shards of 4.98 GB + 956 MB, i.e.
  4 bytes x ~1.485e9 parameters, so the output matrix is untied: tied it would be 1.279e9); its config as a
  fine-tune carries it (https://huggingface.co/CodeAtCMU/OLMo-2-0425-1B_full_sft_code_data_120K_remove_comments,
  commit c6680f4: intermediate_size 8192, rms_norm_eps 1e-06, rope_theta 500000, tie_word_embeddings false,
  vocab_size 100352, eos 100257, pad 100277); OLMo-core's ``TransformerConfig.olmo2_1B_v2`` (16 layers,
  d_model 2048, 16 heads, reordered_norm, qk_norm, rope_theta 500000, layer_norm_eps 1e-6, SwiGLU hidden
  int(1.5 * int(8 * 2048 / 3)) rounded up to a multiple of 256 = 8192).
- The tokenizer: OLMo-core's ``TokenizerConfig.dolma2()`` (vocab_size 100278, eos 100257, pad 100277),
  ``padded_vocab_size(128)`` = 100352.
- Parameter counts: OLMo-core (allenai/OLMo-core at fa6c5014c) ``TransformerConfig.olmo2_1B_v2(vocab_size=100352)
  .num_params`` = 1,484,916,736 and ``olmo2_7B(vocab_size=100352).num_params`` = 7,298,617,344, computed with
  OLMo-core itself (benchmarks/.venv-olmo-core); 4 x 1,484,916,736 bytes = 5.94 GB, the 1B's shards.
"""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from olmo_model import Olmo, OlmoConfig
from olmo_model.flops import matmul_parameters
from olmo_model.init import NORMAL_STD, init_stds, mitchell_stds
from olmo_model.model import LayerNorm, RMSNorm, apply_rotary

TRUNCATED_STD_FACTOR = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))


def olmo2_micro(**overrides) -> OlmoConfig:
    """OLMo 2's architecture (untied, as OLMo 2) at olmo-micro's size."""
    fields = {"norm": "rmsnorm", "block": "reordered_norm", "qk_norm": True, "init": "normal",
              "layer_norm_eps": 1e-6, "weight_tying": False}
    return OlmoConfig.preset("olmo-micro", **{**fields, **overrides})


def seeded(config: OlmoConfig, seed: int = 0) -> Olmo:
    with torch.device("meta"):
        model = Olmo(config)
    model.to_empty(device="cpu")
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("name", "shape", "parameters"),
    [
        ("olmo2-1b", (2048, 16, 16, 8192), 1_484_916_736),
        ("olmo2-7b", (4096, 32, 32, 11008), 7_298_617_344),
    ],
)
def test_olmo2_presets_are_the_released_models(name, shape, parameters):
    config = OlmoConfig.preset(name)
    assert (config.d_model, config.n_heads, config.n_layers, config.mlp_hidden_size) == shape
    assert (config.vocab_size, config.embedding_size) == (100278, 100352)
    assert (config.eos_token_id, config.pad_token_id) == (100257, 100277)
    assert (config.rope_theta, config.layer_norm_eps, config.max_sequence_length) == (500_000.0, 1e-6, 4096)
    assert (config.norm, config.block, config.qk_norm, config.init) == ("rmsnorm", "reordered_norm", True, "normal")
    assert config.weight_tying is False and config.is_olmo2
    assert config.num_parameters() == parameters
    with torch.device("meta"):
        model = Olmo(config)
    assert sum(p.numel() for p in model.parameters()) == parameters
    # norm weights: 4 per block (attn, ff, q, k) and the final one, d_model each
    assert config.norm_parameters() == (4 * config.n_layers + 1) * config.d_model
    norm_count = sum(p.numel() for name, p in model.named_parameters() if "norm" in name or "ln_f" in name)
    assert norm_count == config.norm_parameters()
    assert matmul_parameters(config) == parameters - config.embedding_size * config.d_model - norm_count


def test_v1_presets_keep_their_counts_and_have_no_norm_weights():
    for name, expected in (("olmo-1b", 1_176_764_416), ("olmo-7b", 6_888_095_744)):
        config = OlmoConfig.preset(name)
        assert (config.norm, config.block, config.qk_norm, config.init) == ("layernorm", "pre_norm", False, "mitchell")
        assert config.norm_parameters() == 0 and config.num_parameters() == expected and not config.is_olmo2


def test_options_round_trip_through_a_recipe_mapping():
    config = OlmoConfig.from_dict({"preset": "olmo2-1b", "n_layers": 2})
    assert config == OlmoConfig.from_dict(config.to_dict()) and config.n_layers == 2 and config.qk_norm
    v1 = {key: value for key, value in OlmoConfig.preset("olmo-micro").to_dict().items()
          if key not in ("norm", "block", "qk_norm")}  # a v1 config written before these fields existed
    assert OlmoConfig.from_dict(v1) == OlmoConfig.preset("olmo-micro")


# ---------------------------------------------------------------- the v1 path, unchanged

# Computed with the code before these options existed (commit 868af29), by exactly the computation below:
# sha256 (first 16 hex digits) of the fp32 bytes of the weights drawn with Generator seed 1234, the logits of
# fixed tokens, the summed loss and every gradient of ``model(ids, targets)``, and packed-row logits.
V1_REFERENCE = {
    "olmo-micro": {"weights": "93b87670690c2fc4", "logits": "82378081c724ce32", "loss": 836.4586791992188,
                   "grads": "b39635d164a34a8d", "packed": "4521fd0c2bc7afcd"},
    "olmo-micro-untied": {"weights": "5dab4e1bfa2c5ce9", "logits": "5728c9ef52b4e6a2", "loss": 839.1271362304688,
                          "grads": "2142b2c59af6cd66", "packed": "cd2a0595bf9333c5"},
    "olmo-tiny": {"weights": "16b2f4fcff696221", "logits": "49f98f21ad1a0544", "loss": 842.5446166992188,
                  "grads": "5e4ae886f6d9f431", "packed": "fa2cbcfe63e4b97b"},
}


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(V1_REFERENCE))
def test_v1_weights_logits_loss_and_gradients_are_bit_identical_to_before(name):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = OlmoConfig.preset(name.removesuffix("-untied"), weight_tying=not name.endswith("-untied"))
        model = seeded(config, seed=1234)
        state = model.state_dict()
        ids = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            logits = model(ids)
        targets = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(6))
        targets[0, :5] = -100
        loss = model(ids, targets)
        loss.backward()
        grads = [p.grad for _, p in sorted(model.named_parameters())]
        positions = torch.cat([torch.arange(15), torch.arange(25)]).expand(2, 40)
        segments = torch.cat([torch.zeros(15, dtype=torch.long), torch.ones(25, dtype=torch.long)]).expand(2, 40)
        mask = (segments.unsqueeze(2) == segments.unsqueeze(1)) & torch.ones(40, 40, dtype=torch.bool).tril()
        with torch.no_grad():
            packed = model(ids, position_ids=positions, attention_mask=mask)
    finally:
        torch.set_num_threads(threads)
    actual = {"weights": digest(*[state[key] for key in sorted(state)]), "logits": digest(logits),
              "loss": float(loss.detach()), "grads": digest(*grads), "packed": digest(packed)}
    assert actual == V1_REFERENCE[name]


def test_v1_modules_hold_no_norm_parameters():
    with torch.device("meta"):
        model = Olmo(OlmoConfig.preset("olmo-micro"))
    block = model.transformer.blocks[0]
    assert isinstance(block.attn_norm, LayerNorm) and isinstance(model.transformer.ln_f, LayerNorm)
    assert block.q_norm is None and block.k_norm is None
    assert not any("norm" in name or "ln_f" in name for name, _ in model.named_parameters())
    assert init_stds(model.config) == mitchell_stds(model.config)


# ---------------------------------------------------------------- OLMo 2's modules


def test_olmo2_parameter_names_follow_olmo_checkpoints():
    config = olmo2_micro()
    with torch.device("meta"):
        model = Olmo(config)
    names = {name: tuple(p.shape) for name, p in model.named_parameters()}
    d = config.d_model
    for i in range(config.n_layers):
        for norm in ("attn_norm", "ff_norm", "q_norm", "k_norm"):
            assert names[f"transformer.blocks.{i}.{norm}.weight"] == (d,)
    assert names["transformer.ln_f.weight"] == (d,)
    assert "transformer.ff_out.weight" in names  # untied, as OLMo 2
    assert len(names) == 1 + 1 + 1 + config.n_layers * 8


def test_rms_norm_is_the_reference_formula_in_fp32():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 4
    expected = norm.weight.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x.float()).double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(norm(x.float()), F.rms_norm(x.float(), (16,), norm.weight, eps=1e-6))
    bf16 = norm(x.bfloat16())
    assert bf16.dtype == torch.bfloat16  # computed in fp32, cast back


def test_reordered_block_normalises_the_branch_outputs_and_qk_norm_the_whole_projection():
    config = olmo2_micro()
    model = seeded(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5, generator=generator)
    block = model.transformer.blocks[1]
    x = torch.randn(2, 9, config.d_model) * 3 + 1
    cos, sin = model.rotary(9, x.device)

    def rms(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6)

    def attention(t: torch.Tensor) -> torch.Tensor:
        batch, seq_len, d = t.shape
        q, k, v = (t @ w.T for w in block.att_proj.weight.split(d))
        q, k = rms(q, block.q_norm.weight), rms(k, block.k_norm.weight)  # over all heads at once
        heads = config.n_heads
        q, k, v = (u.view(batch, seq_len, heads, d // heads).transpose(1, 2) for u in (q, k, v))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.transpose(1, 2).reshape(batch, seq_len, d) @ block.attn_out.weight.T

    h = x + rms(attention(x), block.attn_norm.weight)
    expected = h + rms(block.mlp(h), block.ff_norm.weight)
    with torch.no_grad():
        torch.testing.assert_close(block(x, cos, sin), expected, rtol=0, atol=1e-5)
        hidden = model.hidden_states(torch.randint(0, config.vocab_size, (1, 8)))
    # the final RMSNorm: hidden / weight has unit RMS
    unit = hidden / model.transformer.ln_f.weight
    torch.testing.assert_close(unit.pow(2).mean(-1), torch.ones(1, 8), rtol=0, atol=1e-4)


def test_normal_init_is_olmo_core_s_truncated_normal_and_norms_start_at_one():
    config = olmo2_micro(d_model=128, n_heads=4, mlp_hidden_size=512)
    model = seeded(config, seed=3)
    stds = init_stds(config)
    assert set(stds.values()) == {NORMAL_STD} and NORMAL_STD == 0.02
    params = dict(model.named_parameters())
    for name in stds:
        weight = params[name].detach()
        assert weight.abs().max().item() <= 3 * NORMAL_STD * (1 + 1e-6), name
        if weight.numel() >= 16384:
            assert weight.std().item() == pytest.approx(NORMAL_STD * TRUNCATED_STD_FACTOR, rel=0.03), name
    norms = [name for name in params if name not in stds]
    assert len(norms) == 4 * config.n_layers + 1
    assert all(torch.equal(params[name], torch.ones_like(params[name])) for name in norms)
    again = seeded(config, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_init_and_architecture_are_independent_options():
    mixed = OlmoConfig.preset("olmo-micro", norm="rmsnorm")  # RMSNorm in pre-norm blocks, mitchell init
    model = seeded(mixed)
    assert not mixed.is_olmo2 and model.transformer.blocks[0].q_norm is None
    assert init_stds(mixed) == mitchell_stds(mixed)
    logits = model(torch.randint(0, mixed.vocab_size, (1, 6)))
    assert torch.isfinite(logits).all()


def test_olmo2_trains_a_step_with_every_parameter_getting_a_gradient():
    config = olmo2_micro(vocab_size=96, eos_token_id=0, pad_token_id=1)
    model = seeded(config)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)
    loss = model(ids, targets)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    logits = model(ids)
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)


def _fsdp_olmo2(rank: int, world_size: int, rendezvous: str, out_dir: str) -> None:
    import os

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        mesh = dist.device_mesh.init_device_mesh("cpu", (world_size,))
        with torch.device("meta"):
            model = Olmo(olmo2_micro(vocab_size=96, eos_token_id=0, pad_token_id=1))
        for block in model.transformer.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        model.reset_parameters(torch.Generator().manual_seed(3))
        weights = {name: p.full_tensor() for name, p in model.named_parameters()}
        ids = torch.randint(0, 96, (4, 12), generator=torch.Generator().manual_seed(0))
        targets = F.pad(ids[:, 1:], (0, 1), value=-100)
        loss, z_loss = model(ids[rank::world_size], targets[rank::world_size], z_loss_multiplier=1e-3)
        (loss * world_size).backward()  # FSDP averages gradients over ranks
        totals = torch.stack([loss.detach(), z_loss])
        dist.all_reduce(totals)
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
        if rank == 0:
            tensors = {"totals": totals, **{f"weights/{k}": v for k, v in weights.items()},
                       **{f"grads/{k}": v for k, v in grads.items()}}
            save_file(tensors, f"{out_dir}/olmo2.safetensors")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # as in test_olmo_init: skip C++ static destructors racing gloo's threads


@pytest.mark.slow  # two spawned processes
def test_olmo2_under_fsdp2_initialises_and_trains_as_one_process(tmp_path):
    """Sharded RMSNorm weights start at one like the rest of the init (no world-size dependence), and two ranks
    with half the rows each get the one-process loss, z-loss and gradients."""
    world_size = 2
    torch.multiprocessing.spawn(_fsdp_olmo2, args=(world_size, f"file://{tmp_path}/rendezvous", str(tmp_path)),
                                nprocs=world_size)
    tensors = load_file(tmp_path / "olmo2.safetensors")
    result = {part: {name.split("/", 1)[1]: t for name, t in tensors.items() if name.startswith(part + "/")}
              for part in ("weights", "grads")} | {"totals": tensors["totals"]}
    reference = seeded(olmo2_micro(vocab_size=96, eos_token_id=0, pad_token_id=1), seed=3)
    for name, param in reference.named_parameters():
        assert torch.equal(result["weights"][name], param.detach()), name
    ids = torch.randint(0, 96, (4, 12), generator=torch.Generator().manual_seed(0))
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)
    loss, z_loss = reference(ids, targets, z_loss_multiplier=1e-3)
    loss.backward()
    torch.testing.assert_close(result["totals"], torch.stack([loss.detach(), z_loss]), rtol=1e-6, atol=0)
    for name, param in reference.named_parameters():
        grad = param.grad
        torch.testing.assert_close(result["grads"][name], grad, rtol=0, atol=2e-6 * grad.abs().max().item(), msg=name)
