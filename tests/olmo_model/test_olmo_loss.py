"""The chunked linear + cross-entropy loss: the values and gradients of the plain logits path, in every chunking,
through ``Olmo(input_ids, targets)`` (tied and untied, under FSDP2 too), without the logits."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from olmo_model import Olmo, OlmoConfig
from olmo_model.loss import IGNORE_INDEX, linear_cross_entropy_sum

VOCAB = 96


def config(tied: bool) -> OlmoConfig:
    return OlmoConfig.preset("olmo-micro", vocab_size=VOCAB, eos_token_id=0, pad_token_id=1, weight_tying=tied)


def seeded_model(tied: bool) -> Olmo:
    model = Olmo(config(tied))
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model


def batch(rows: int = 2, seq_len: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and next-token targets, some ignored (the last position, and a masked prompt in row 0)."""
    ids = torch.randint(2, VOCAB, (rows, seq_len), generator=torch.Generator().manual_seed(1))
    targets = F.pad(ids[:, 1:], (0, 1), value=IGNORE_INDEX)
    targets[0, :4] = IGNORE_INDEX
    return ids, targets


def plain_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum")


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, message: str) -> None:
    """Equal up to fp32 rounding in a different summation order: within 2e-6 of the tensor's largest entry."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=2e-6 * expected.abs().max().item(), msg=message)


def fp64_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded fp64 hidden states [3, 7, 16] and output matrix (both requiring gradients), and targets with a run
    of ``IGNORE_INDEX``."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 16, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(VOCAB, 16, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randint(0, VOCAB, (3, 7), generator=generator)
    targets[1, 2:5] = IGNORE_INDEX
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_elements", [1, 5 * VOCAB, 10**6])  # a row per chunk, 5 rows, all rows at once
def test_loss_and_gradients_equal_the_plain_path(chunk_elements):
    hidden, weight, targets = fp64_problem()

    loss = linear_cross_entropy_sum(hidden, weight, targets, chunk_elements)
    grads = torch.autograd.grad(loss * 0.3, (hidden, weight))
    expected = F.cross_entropy((hidden @ weight.T).reshape(-1, VOCAB), targets.reshape(-1), reduction="sum")
    expected_grads = torch.autograd.grad(expected * 0.3, (hidden, weight))

    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=1e-10, atol=1e-12)
    assert grads[0][1, 2:5].abs().max() == 0  # ignored positions get no gradient


@pytest.mark.parametrize("with_grad", [True, False])
def test_targets_whose_probability_underflows_get_their_exact_loss(with_grad):
    """Logits thousands apart: exp(target - max) is 0 in fp32, the loss (thousands of nats) still exact."""
    generator = torch.Generator().manual_seed(0)
    hidden = 100 * torch.randn(6, 16, generator=generator)
    weight = torch.randn(VOCAB, 16, generator=generator)
    targets = (hidden @ weight.T).argmin(dim=-1)
    with torch.set_grad_enabled(with_grad):
        loss = linear_cross_entropy_sum(hidden.requires_grad_(with_grad), weight, targets)
    expected = plain_loss(hidden @ weight.T, targets)
    assert expected.item() > 6 * 1000
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=0)


def test_no_gradient_is_computed_without_autograd(monkeypatch):
    hidden, weight = torch.randn(4, 8, requires_grad=True), torch.randn(VOCAB, 8, requires_grad=True)
    targets = torch.arange(4)
    monkeypatch.setattr(torch, "softmax", lambda *_, **__: pytest.fail("gradients computed under no_grad"))
    with torch.no_grad():
        loss = linear_cross_entropy_sum(hidden, weight, targets)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, plain_loss(hidden @ weight.T, targets).detach())


def test_all_targets_ignored_gives_zero_loss_and_gradients():
    hidden, weight = torch.randn(2, 3, 8, requires_grad=True), torch.randn(VOCAB, 8, requires_grad=True)
    loss = linear_cross_entropy_sum(hidden, weight, torch.full((2, 3), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0 and hidden.grad.abs().max() == 0 and weight.grad.abs().max() == 0


def test_a_second_backward_pass_is_refused():
    hidden, weight = torch.randn(4, 8, requires_grad=True), torch.randn(VOCAB, 8, requires_grad=True)
    loss = linear_cross_entropy_sum(hidden, weight, torch.arange(4))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward pass"):
        loss.backward()


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"targets of shape \(4,\) do not match hidden states \(3, 8\)"):
        linear_cross_entropy_sum(torch.randn(3, 8), torch.randn(VOCAB, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight of shape \(96, 6\) does not project hidden size 8"):
        linear_cross_entropy_sum(torch.randn(3, 8), torch.randn(VOCAB, 6), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("tied", [True, False])
def test_model_loss_equals_the_logits_path_in_value_and_every_gradient(tied):
    ids, targets = batch()
    fused, plain = seeded_model(tied), seeded_model(tied)
    loss = fused(ids, targets=targets)
    loss.backward()
    expected = plain_loss(plain(ids), targets)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    for (name, param), reference in zip(fused.named_parameters(), plain.parameters()):
        assert_fp32_close(param.grad, reference.grad, name)
    assert torch.equal(fused(ids), plain(ids))  # without targets: the logits, as before


def test_under_bf16_autocast_matmuls_are_bf16_and_gradients_match_the_parameters():
    ids, targets = batch()
    fused, plain = seeded_model(False), seeded_model(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused(ids, targets=targets)
        expected = plain_loss(plain(ids), targets)
    loss.backward()
    expected.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=0)
    output, reference = fused.transformer.ff_out.weight.grad, plain.transformer.ff_out.weight.grad
    assert output.dtype == torch.float32
    assert (output - reference).norm() < 0.02 * reference.norm()


def _fsdp_gradients(rank: int, world_size: int, rendezvous: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        mesh = dist.device_mesh.init_device_mesh("cpu", (world_size,))
        ids, targets = batch()
        results = {}
        for tied in (True, False):
            model = seeded_model(tied)
            for block in model.transformer.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            loss = model(ids[rank::world_size], targets=targets[rank::world_size])
            (loss * world_size).backward()  # FSDP averages gradients over ranks
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[tied] = (total, {name: p.grad.full_tensor() for name, p in model.named_parameters()})
        if rank == 0:
            torch.save(results, f"{out_dir}/results.pt")
        dist.barrier()  # no rank tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()
    os._exit(0)  # as in test_olmo_init: skip C++ static destructors racing gloo's threads


@pytest.mark.slow  # two spawned processes
def test_under_fsdp2_the_sharded_output_matrix_gets_the_plain_gradient(tmp_path):
    """FSDP2 gathers the output matrix for the root's forward, which computes the loss: two ranks, each with
    half the rows, get the one-process plain-path loss and gradients (tied and untied)."""
    world_size = 2
    torch.multiprocessing.spawn(
        _fsdp_gradients, args=(world_size, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=world_size
    )
    results = torch.load(tmp_path / "results.pt")
    ids, targets = batch()
    for tied in (True, False):
        plain = seeded_model(tied)
        expected = plain_loss(plain(ids), targets)
        expected.backward()
        loss, grads = results[tied]
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=0)
        for name, param in plain.named_parameters():
            assert_fp32_close(grads[name], param.grad, f"tied={tied} {name}")


# ---------------------------------------------------------------- z-loss


def plain_z_loss(logits: torch.Tensor, targets: torch.Tensor, multiplier: float) -> torch.Tensor:
    """OLMo-core's z-loss, summed: ``multiplier * logsumexp(logits)²`` over the positions with a target."""
    flat, kept = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1) != IGNORE_INDEX
    return multiplier * (flat.logsumexp(-1).square() * kept).sum()


@pytest.mark.parametrize("chunk_elements", [1, 5 * VOCAB, 10**6])
def test_z_loss_value_and_gradients_equal_the_plain_path(chunk_elements):
    hidden, weight, targets = fp64_problem()
    multiplier = 1e-2  # large enough that the z-loss term moves the gradients well past the tolerance

    loss, z_loss = linear_cross_entropy_sum(hidden, weight, targets, chunk_elements, z_loss_multiplier=multiplier)
    grads = torch.autograd.grad(loss * 0.3, (hidden, weight))
    logits = hidden @ weight.T
    expected_z = plain_z_loss(logits, targets, multiplier)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum") + expected_z
    expected_grads = torch.autograd.grad(expected * 0.3, (hidden, weight))

    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(z_loss, expected_z.detach(), rtol=1e-12, atol=0)
    assert not z_loss.requires_grad and expected_z.item() > 1e-2 * loss.item()
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the no-gradient path gives the same values
        loss_only, z_only = linear_cross_entropy_sum(hidden, weight, targets, chunk_elements, multiplier)
    torch.testing.assert_close(loss_only, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(z_only, expected_z.detach(), rtol=1e-12, atol=0)


def test_a_zero_z_loss_multiplier_changes_nothing_but_reports_zero():
    ids, targets = batch()
    model = seeded_model(False)
    plain = model(ids, targets=targets)
    loss, z_loss = model(ids, targets=targets, z_loss_multiplier=0.0)
    assert torch.equal(loss, plain) and z_loss.item() == 0


@pytest.mark.parametrize("tied", [True, False])
def test_model_z_loss_equals_the_logits_path_in_value_and_every_gradient(tied):
    ids, targets = batch()
    fused, plain = seeded_model(tied), seeded_model(tied)
    loss, z_loss = fused(ids, targets=targets, z_loss_multiplier=1e-4)
    loss.backward()
    logits = plain(ids)
    expected_z = plain_z_loss(logits, targets, 1e-4)
    expected = plain_loss(logits, targets) + expected_z
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(z_loss, expected_z.detach(), rtol=1e-5, atol=0)
    for (name, param), reference in zip(fused.named_parameters(), plain.parameters()):
        assert_fp32_close(param.grad, reference.grad, name)
    with pytest.raises(ValueError, match="z_loss_multiplier is given with targets only"):
        fused(ids, z_loss_multiplier=1e-4)
