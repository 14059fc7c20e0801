"""Cross entropy fused with the output projection, computed a chunk of rows at a time.

A training step's logits ([tokens, vocabulary], ~100x the hidden states for a 50k vocabulary) are
its largest tensors. ``linear_cross_entropy_sum`` never holds more than one chunk of them: for each
chunk of rows it computes the logits, their log-softmax and the loss, and (when gradients are
wanted) the gradients w.r.t. the hidden states and the output matrix, ``softmax - one_hot``; the
backward pass then only scales those by the incoming gradient.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 2**26  # logits per chunk: 256 MiB in fp32 (the whole batch of a CPU run)


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS
) -> torch.Tensor:
    """``sum_i cross_entropy(hidden[i] @ weight.T, targets[i])`` over the positions whose target is not
    ``IGNORE_INDEX``; an fp32 scalar.

    ``hidden`` is [..., d], ``weight`` [vocabulary, d] and ``targets`` ``hidden.shape[:-1]``. Matmuls run
    in the autocast dtype when autocast is on (as ``F.linear`` would), the softmax in at least fp32; at most
    ``chunk_elements`` logits exist at once.
    """
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match hidden states {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not project hidden size {hidden.shape[-1]}")
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    with_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropySum.apply(
            hidden.reshape(-1, hidden.shape[-1]).to(dtype), weight.to(dtype), targets.reshape(-1), chunk_elements,
            with_grads,
        )


def _cross_entropy_sum(
    logits: torch.Tensor, targets: torch.Tensor, with_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed cross entropy of ``logits`` [n, V] against ``targets`` [n, 1], and (``with_grad``) its gradient
    w.r.t. the logits, ``softmax - one_hot(targets)``, in a new tensor."""
    target_logits = logits.gather(1, targets)
    if not with_grad:
        return (torch.logsumexp(logits, dim=-1, keepdim=True) - target_logits).sum(), None
    grad = torch.softmax(logits, dim=-1)
    # A row's largest probability is exp(0) / sum(exp(logits - max)), so logsumexp = max - log(largest): two
    # reads where log_softmax then exp would take another pass writing the whole chunk.
    logsumexp = logits.amax(dim=-1, keepdim=True) - grad.amax(dim=-1, keepdim=True).log()
    grad.scatter_add_(1, targets, grad.new_full(targets.shape, -1.0))
    return (logsumexp - target_logits).sum(), grad


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
    ) -> torch.Tensor:
        kept = (targets != IGNORE_INDEX).nonzero().squeeze(1)
        rows, kept_targets = hidden.index_select(0, kept), targets.index_select(0, kept)
        want_hidden, want_weight = (with_grads and needed for needed in ctx.needs_input_grad[:2])
        grad_rows = torch.empty_like(rows) if want_hidden else None
        grad_weight = None
        softmax_dtype = torch.promote_types(hidden.dtype, torch.float32)
        loss = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
        step = max(1, chunk_elements // weight.shape[0])
        for start in range(0, rows.shape[0], step):
            chunk, chunk_targets = rows[start:start + step], kept_targets[start:start + step, None]
            chunk_loss, grad_logits = _cross_entropy_sum((chunk @ weight.T).to(softmax_dtype), chunk_targets,
                                                         want_hidden or want_weight)
            loss += chunk_loss
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
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden = ctx.grad_hidden * grad_loss if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            if ctx.grad_weight is None:
                raise RuntimeError("linear_cross_entropy_sum: a second backward pass through the same loss is not supported")
            grad_weight, ctx.grad_weight = ctx.grad_weight.mul_(grad_loss).to(ctx.weight_dtype), None
        return grad_hidden, grad_weight, None, None, None
