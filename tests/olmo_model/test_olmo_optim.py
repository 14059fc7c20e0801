import pytest
import torch

from olmo_model import Olmo, OlmoConfig, build_adamw, parameter_groups

BLOCK_LINEARS = ("att_proj", "attn_out", "ff_proj", "ff_out")


def block_linear_names(n_layers: int) -> set[str]:
    return {f"transformer.blocks.{i}.{m}.weight" for i in range(n_layers) for m in BLOCK_LINEARS}


def groups_by_decay(model: Olmo, weight_decay: float) -> dict[float, set[str]]:
    return {g["weight_decay"]: set(g["param_names"]) for g in parameter_groups(model, weight_decay)}


def test_tied_model_decays_block_linears_only():
    model = Olmo(OlmoConfig.preset("olmo-micro"))
    groups = groups_by_decay(model, 0.1)
    assert groups == {0.1: block_linear_names(2), 0.0: {"transformer.wte.weight"}}


def test_untied_output_matrix_is_decayed():
    model = Olmo(OlmoConfig.preset("olmo-micro", weight_tying=False))
    groups = groups_by_decay(model, 0.1)
    assert groups == {
        0.1: block_linear_names(2) | {"transformer.ff_out.weight"},
        0.0: {"transformer.wte.weight"},
    }


def test_groups_hold_every_parameter_once():
    model = Olmo(OlmoConfig.preset("olmo-micro"))
    grouped = [p for g in parameter_groups(model, 0.1) for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))


def test_build_adamw_settings():
    model = Olmo(OlmoConfig.preset("olmo-micro"))
    optimizer = build_adamw(model, lr=4e-4)
    for group in optimizer.param_groups:
        assert (group["lr"], group["betas"], group["eps"]) == (4e-4, (0.9, 0.95), 1e-5)
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.1]


def test_step_with_zero_gradient_applies_decay_only_where_configured():
    model = Olmo(OlmoConfig.preset("olmo-micro"))
    lr, weight_decay = 1e-2, 0.1
    optimizer = build_adamw(model, lr=lr, weight_decay=weight_decay)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1.0 if name == "transformer.wte.weight" else 1 - lr * weight_decay
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-6, atol=0)


def test_a_training_step_reduces_loss():
    torch.manual_seed(0)
    model = Olmo(OlmoConfig.preset("olmo-micro"))
    optimizer = build_adamw(model, lr=1e-2)
    tokens = torch.randint(0, 50280, (2, 17))

    def loss() -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    first = loss()
    first.backward()
    optimizer.step()
    assert loss().item() < first.item() - 0.1


def test_fused_and_unfused_adamw_take_the_same_steps():
    """The fused kernel (the default) is the same AdamW as torch's loop, up to fp32 rounding."""
    models = [Olmo(OlmoConfig.preset("olmo-micro")) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_adamw(models[0], lr=1e-2), build_adamw(models[1], lr=1e-2, fused=False)]
    assert [g["fused"] for g in optimizers[0].param_groups] == [True, True]
    assert not any(g["fused"] for g in optimizers[1].param_groups)
    initial = [p.detach().clone() for p in models[0].parameters()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=generator) for p in models[0].parameters()]
        for model, optimizer in zip(models, optimizers):
            for param, grad in zip(model.parameters(), grads):
                param.grad = grad.clone()
            optimizer.step()
    for (name, fused), unfused, before in zip(models[0].named_parameters(), models[1].parameters(), initial):
        torch.testing.assert_close(fused, unfused, rtol=0, atol=1e-6, msg=name)
        assert (fused - before).abs().mean() > 1e-3, name  # the weights took steps of ~lr


def olmo2_micro() -> Olmo:
    return Olmo(OlmoConfig.preset("olmo-micro", norm="rmsnorm", block="reordered_norm", qk_norm=True,
                                  weight_tying=False))


def norm_names(n_layers: int) -> set[str]:
    return {f"transformer.blocks.{i}.{m}.weight" for i in range(n_layers)
            for m in ("attn_norm", "ff_norm", "q_norm", "k_norm")} | {"transformer.ln_f.weight"}


def test_olmo2_norm_weights_are_not_decayed_by_default():
    groups = groups_by_decay(olmo2_micro(), 0.1)
    assert groups == {
        0.1: block_linear_names(2) | {"transformer.ff_out.weight"},
        0.0: {"transformer.wte.weight"} | norm_names(2),
    }


def test_olmo_core_s_olmo2_groups_decay_everything_but_the_embedding():
    """OLMo-core's OLMo 2 recipes: one group for all parameters, the embedding overridden to no decay."""
    groups = {g["weight_decay"]: set(g["param_names"]) for g in parameter_groups(olmo2_micro(), 0.1, decay_norms=True)}
    assert groups == {
        0.1: block_linear_names(2) | {"transformer.ff_out.weight"} | norm_names(2),
        0.0: {"transformer.wte.weight"},
    }


@pytest.mark.parametrize("tied", [True, False])
def test_decay_embeddings_decays_the_embedding_and_so_the_tied_output(tied):
    model = Olmo(OlmoConfig.preset("olmo-micro", weight_tying=tied))
    groups = parameter_groups(model, 0.1, decay_embeddings=True)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1
    assert set(groups[0]["param_names"]) == {name for name, _ in model.named_parameters()}

