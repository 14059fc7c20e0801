"""Cross entropy fused with the output projection, computed a chunk of rows at a time.

A training step's logits ([tokens, vocabulary], ~100x the hidden states for a 50k vocabulary) are
its largest tensors. ``linear_cross_entropy_sum`` never holds more than one chunk of them: for each
chunk of rows it computes the logits, their log-softmax and the loss, and (when gradients are
wanted) the gradients w.r.t. the hidden states and the output matrix, ``softmax - one_hot``; the
backward pass then only scales those by the incoming gradient.

With a ``z_loss_multiplier`` m it adds OLMo-core's z-loss (the auxiliary loss of PaLM, which OLMo 2 trained with,
m = 1e-5): ``m * logsumexp(logits)²`` summed over the same positions (``olmo_core.nn.functional.cross_entropy_loss``
with ``compute_z_loss``; its train module takes the sum and divides it by the batch's label tokens, as the
cross entropy). Its gradient w.r.t. the logits, ``2m * logsumexp * softmax``, joins the cross entropy's in the
same pass.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 2**26  # logits per chunk: 256 MiB in fp32 (the whole batch of a CPU run)


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_elements: int = CHUNK_ELEMENTS,
    z_loss_multiplier: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``sum_i cross_entropy(hidden[i] @ weight.T, targets[i])`` over the positions whose target is not
    ``IGNORE_INDEX``; an fp32 scalar.

    ``hidden`` is [..., d], ``weight`` [vocabulary, d] and ``targets`` ``hidden.shape[:-1]``. Matmuls run
    in the autocast dtype when autocast is on (as ``F.linear`` would), the softmax in at least fp32; at most
    ``chunk_elements`` logits exist at once.

    With ``z_loss_multiplier`` m (a number, 0 included), a pair instead: the loss to train on, that sum plus the
    z-loss ``m * sum_i logsumexp(hidden[i] @ weight.T)²`` over the same positions, and the z-loss alone
    (detached: its gradient is already in the first), to log beside it.
    """
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match hidden states {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not project hidden size {hidden.shape[-1]}")
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    with_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(device_type, enabled=False):
        loss, z_loss = _LinearCrossEntropySum.apply(
            hidden.reshape(-1, hidden.shape[-1]).to(dtype), weight.to(dtype), targets.reshape(-1), chunk_elements,
            with_grads, z_loss_multiplier,
        )
    return loss if z_loss_multiplier is None else (loss, z_loss)


def _cross_entropy_sum(
    logits: torch.Tensor, targets: torch.Tensor, with_grad: bool, z_loss_multiplier: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Summed cross entropy of ``logits`` [n, V] against ``targets`` [n, 1]; with ``z_loss_multiplier`` m, the
    sum of ``logsumexp(logits)²`` (else None); and (``with_grad``) the gradient of the cross entropy plus m times
    that sum w.r.t. the logits, ``softmax · (1 + 2m · logsumexp) - one_hot(targets)``, in a new tensor."""
    target_logits = logits.gather(1, targets)
    if not with_grad:
        logsumexp = torch.logsumexp(logits, dim=-1, keepdim=True)
        z_squared = None if z_loss_multiplier is None else logsumexp.square().sum()
        return (logsumexp - target_logits).sum(), z_squared, None
    grad = torch.softmax(logits, dim=-1)
    # A row's largest probability is exp(0) / sum(exp(logits - max)), so logsumexp = max - log(largest): two
    # reads where log_softmax then exp would take another pass writing the whole chunk.
    logsumexp = logits.amax(dim=-1, keepdim=True) - grad.amax(dim=-1, keepdim=True).log()
    z_squared = None
    if z_loss_multiplier is not None:
        z_squared = logsumexp.square().sum()
        grad.mul_(1 + 2 * z_loss_multiplier * logsumexp)
    grad.scatter_add_(1, targets, grad.new_full(targets.shape, -1.0))
    return (logsumexp - target_logits).sum(), z_squared, grad


def _accumulate(total: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``total + a @ b`` in place (``total`` at least fp32), or ``a @ b`` at least fp32 when ``total`` is None."""
    if total is None:
        return (a @ b).to(torch.promote_types(a.dtype, torch.float32))
    if a.dtype == total.dtype:
        return total.addmm_(a, b)
    return total.add_(a @ b)


class _LinearCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_elements: int,
        with_grads: bool,
        z_loss_multiplier: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kept = (targets != IGNORE_INDEX).nonzero().squeeze(1)
        rows, kept_targets = hidden.index_select(0, kept), targets.index_select(0, kept)
        want_hidden, want_weight = (with_grads and needed for needed in ctx.needs_input_grad[:2])
        grad_rows = torch.empty_like(rows) if want_hidden else None
        grad_weight = None
        softmax_dtype = torch.promote_types(hidden.dtype, torch.float32)
        loss = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
        z_squared = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
        step = max(1, chunk_elements // weight.shape[0])
        for start in range(0, rows.shape[0], step):
            chunk, chunk_targets = rows[start:start + step], kept_targets[start:start + step, None]
            chunk_loss, chunk_z_squared, grad_logits = _cross_entropy_sum(
                (chunk @ weight.T).to(softmax_dtype), chunk_targets, want_hidden or want_weight, z_loss_multiplier
            )
            loss += chunk_loss
            if chunk_z_squared is not None:
                z_squared += chunk_z_squared
            if grad_logits is None:
                continue
            grad_logits = grad_logits.to(weight.dtype)
            if want_hidden:
                torch.mm(grad_logits, weight, out=grad_rows[start:start + step])
            if want_weight:
                grad_weight = _accumulate(grad_weight, grad_logits.T, chunk)
        if want_hidden:
            ctx.grad_hidden = torch.zeros_like(hidden).index_copy_(0, kept, grad_rows)
        if want_weight:
            ctx.grad_weight = torch.zeros_like(weight, dtype=softmax_dtype) if grad_weight is None else grad_weight
        ctx.weight_dtype = weight.dtype
        if z_loss_multiplier is None:
            z_loss = z_squared  # zero, and not returned by linear_cross_entropy_sum
        else:
            z_loss = z_loss_multiplier * z_squared
            loss = loss + z_loss
        ctx.mark_non_differentiable(z_loss)
        return loss, z_loss

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_loss: torch.Tensor, grad_z_loss: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        grad_hidden = ctx.grad_hidden * grad_loss if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            if ctx.grad_weight is None:
                raise RuntimeError("linear_cross_entropy_sum: a second backward pass through the same loss is not supported")
            grad_weight, ctx.grad_weight = ctx.grad_weight.mul_(grad_loss).to(ctx.weight_dtype), None
        return grad_hidden, grad_weight, None, None, None, None
