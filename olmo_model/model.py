"""The OLMo decoder: blocks of causal RoPE attention and a SwiGLU MLP; OLMo v1 by default (pre-norm, parameter-free
LayerNorm), OLMo 2 with the config's options (RMSNorm, reordered norms, QK-norm; see ``OlmoConfig``).

Module and parameter names match OLMo's checkpoints (``transformer.wte``, ``transformer.blocks.{i}.att_proj``,
and for OLMo 2's norm weights ``blocks.{i}.attn_norm``/``ff_norm``/``q_norm``/``k_norm`` and ``transformer.ln_f``),
so weights interoperate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import OlmoConfig
from .init import fill_truncated_normal_, init_stds
from .loss import linear_cross_entropy_sum


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dimension without learned scale or shift."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


class LayerNorm(nn.Module):
    """OLMo v1's LayerNorm: no learned scale or shift, so no parameters (:func:`layer_norm`)."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.eps)


class RMSNorm(nn.Module):
    """OLMo 2's RMSNorm over the last dimension: ``weight * x / sqrt(mean(x²) + eps)``, computed in fp32 (the
    weight multiplied in fp32 too) and cast back to the input's dtype, as transformers' ``Olmo2RMSNorm``.
    ``weight`` starts at one (``Olmo.reset_parameters``)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * normed).to(x.dtype)


def build_norm(config: OlmoConfig) -> nn.Module:
    """A norm over ``d_model`` of the config's kind (``norm``), with its ``layer_norm_eps``."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.layer_norm_eps)
    return LayerNorm(config.layer_norm_eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """NeoX-style rotation: (x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., T, head_dim] by the fp32 angles ``cos``/``sin`` [T, head_dim] (or any shape
    broadcasting to ``x``'s, e.g. [B, 1, T, head_dim] for per-row positions), in fp32."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


CPU_QUERY_BAND = 128  # queries per band of ``causal_attention`` on CPU


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal scaled dot-product attention of ``q``, ``k``, ``v`` [B, H, T, head_dim].

    On CPU, in bands of ``CPU_QUERY_BAND`` queries, each against the keys up to its last query: torch's CPU
    kernel skips no masked-out keys at these lengths (a causal call costs as much as a full one), so the bands
    leave out most of the upper triangle, about a quarter of the work at T = 512.
    """
    seq_len = q.shape[-2]
    if q.device.type != "cpu" or seq_len <= CPU_QUERY_BAND:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    bands = []
    for start in range(0, seq_len, CPU_QUERY_BAND):
        end = min(start + CPU_QUERY_BAND, seq_len)
        visible = torch.ones(end - start, end, dtype=torch.bool, device=q.device).tril(start)
        band = F.scaled_dot_product_attention(q[..., start:end, :], k[..., :end, :], v[..., :end, :], attn_mask=visible)
        bands.append(band.transpose(1, 2))
    return torch.cat(bands, dim=1).transpose(1, 2)  # [B, T, H, head_dim] memory, as the callers' reshape wants


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE, computed in fp32 and cached per device (grown to the longest length seen)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._cache.get(device)
        if cached is None or cached[0].shape[0] < seq_len:
            cached = self._tables(seq_len, device)
            self._cache[device] = cached
        cos, sin = cached
        return cos[:seq_len], sin[:seq_len]

    @torch.inference_mode(False)  # tables first built during evaluation must still serve training
    def _tables(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim
        inv_freq = 1.0 / (self.theta**exponents)
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


class OlmoBlock(nn.Module):
    """Pre-norm (v1): ``x + attn_out(attention(norm(x)))`` then ``x + ff_out(swiglu(ff_proj(norm(x))))``;
    reordered norm (OLMo 2): ``x + norm(attn_out(attention(x)))`` then ``x + norm(ff_out(swiglu(ff_proj(x))))``.
    No biases. With ``qk_norm`` the attention normalises q and k (``q_norm``, ``k_norm``) before RoPE."""

    def __init__(self, config: OlmoConfig) -> None:
        super().__init__()
        d, h = config.d_model, config.mlp_hidden_size
        self.n_heads = config.n_heads
        self.reordered = config.block == "reordered_norm"
        self.att_proj = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, 2 * h, bias=False)
        self.ff_out = nn.Linear(h, d, bias=False)
        self.attn_norm = build_norm(config)
        self.ff_norm = build_norm(config)
        self.q_norm = build_norm(config) if config.qk_norm else None
        self.k_norm = build_norm(config) if config.qk_norm else None

    def attention(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Multi-head self-attention of ``x`` [B, T, d] (normalised already in a pre-norm block), before
        ``attn_out``: causal, or where ``attention_mask`` [B, T, T] is True (query, key) when given."""
        batch, seq_len, d_model = x.shape
        q, k, v = self.att_proj(x).split(d_model, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(batch, seq_len, self.n_heads, d_model // self.n_heads).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if attention_mask is None:
            attended = causal_attention(q, k, v)
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask.unsqueeze(1))
        return attended.transpose(1, 2).reshape(batch, seq_len, d_model)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU of ``x``, through ``ff_out``: ff_proj halves are (up, gate); ff_out(silu(gate) * up)."""
        up, gate = self.ff_proj(x).chunk(2, dim=-1)
        return self.ff_out(F.silu(gate) * up)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.reordered:
            x = x + self.attn_norm(self.attn_out(self.attention(x, cos, sin, attention_mask)))
            return x + self.ff_norm(self.mlp(x))
        x = x + self.attn_out(self.attention(self.attn_norm(x), cos, sin, attention_mask))
        return x + self.mlp(self.ff_norm(x))


class Olmo(nn.Module):
    """OLMo decoder. ``Olmo(config)(input_ids)`` returns logits [B, T, embedding_size];
    ``Olmo(config)(input_ids, targets)`` the summed cross entropy against ``targets`` without the logits.

    Parameters are created on the default device (``with torch.device(...)`` is honoured) and
    initialised (``config.init``) once, skipping torch's default init; on the meta device they are
    left uninitialised (``to_empty`` then ``reset_parameters`` later).
    """

    def __init__(self, config: OlmoConfig) -> None:
        super().__init__()
        self.config = config
        device = torch.get_default_device()
        with torch.device("meta"):
            self.transformer = nn.ModuleDict(
                {
                    "wte": nn.Embedding(config.embedding_size, config.d_model),
                    "blocks": nn.ModuleList(OlmoBlock(config) for _ in range(config.n_layers)),
                    "ln_f": build_norm(config),
                }
            )
            if not config.weight_tying:
                self.transformer.ff_out = nn.Linear(
                    config.d_model, config.embedding_size, bias=False
                )
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        if device.type != "meta":
            self.to_empty(device=device)
            self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every weight (``config.init``: each matrix truncated normal, drawn in a fixed order,
        then RMSNorm weights set to one); a seeded CPU ``generator`` gives bit-identical weights."""
        params = dict(self.named_parameters())
        stds = init_stds(self.config)
        norms = [f"{name}.weight" for name, module in self.named_modules() if isinstance(module, RMSNorm)]
        if params.keys() != stds.keys() | set(norms):
            raise RuntimeError(
                f"init covers {sorted((stds.keys() | set(norms)) ^ params.keys())} inconsistently with the model"
            )
        for name, std in stds.items():
            fill_truncated_normal_(params[name], std, generator)
        with torch.no_grad():
            for name in norms:
                params[name].fill_(1.0)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, T, d_model] for ``input_ids`` [B, T], after the final norm.

        By default token ``t`` is at position ``t`` and attends causally. Both may be given instead (e.g. to run
        several sequences packed in one row): ``position_ids`` [B, T], each below ``max_sequence_length``, and a
        boolean ``attention_mask`` [B, T, T], True where the query (dim 1) may attend the key (dim 2); every
        query must attend at least one key.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape [batch, seq_len], got {tuple(input_ids.shape)}")
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_sequence_length:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_sequence_length {self.config.max_sequence_length}"
            )
        if (position_ids is None) != (attention_mask is None):
            raise ValueError("position_ids and attention_mask are given together or not at all")
        x = self.transformer.wte(input_ids)
        if position_ids is None:
            cos, sin = self.rotary(seq_len, x.device)
        else:
            cos, sin = self._packed_rotary(input_ids, position_ids, attention_mask)
        for block in self.transformer.blocks:
            x = block(x, cos, sin) if attention_mask is None else block(x, cos, sin, attention_mask)
        return self.transformer.ln_f(x)

    def _packed_rotary(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [B, 1, T, head_dim] at ``position_ids``, after checking the shapes of both arguments."""
        batch, seq_len = input_ids.shape
        if position_ids.shape != (batch, seq_len):
            raise ValueError(f"expected position_ids of shape {(batch, seq_len)}, got {tuple(position_ids.shape)}")
        if attention_mask.shape != (batch, seq_len, seq_len) or attention_mask.dtype != torch.bool:
            raise ValueError(
                f"expected a boolean attention_mask of shape {(batch, seq_len, seq_len)}, "
                f"got {attention_mask.dtype} {tuple(attention_mask.shape)}"
            )
        limit = self.config.max_sequence_length
        if bool(((position_ids < 0) | (position_ids >= limit)).any()):
            raise ValueError(f"position_ids must lie in [0, {limit}) (max_sequence_length)")
        cos, sin = self.rotary(limit, input_ids.device)
        return cos[position_ids].unsqueeze(1), sin[position_ids].unsqueeze(1)

    @property
    def output_weight(self) -> torch.Tensor:
        """The output matrix [embedding_size, d_model]: the embedding when tied, else ``transformer.ff_out``'s."""
        return self.transformer.wte.weight if self.config.weight_tying else self.transformer.ff_out.weight

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., embedding_size] from hidden states."""
        return F.linear(hidden, self.output_weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        z_loss_multiplier: float | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T, embedding_size]; with ``targets`` [B, T] (the token to predict after each position,
        ``IGNORE_INDEX`` where none), instead ``linear_cross_entropy_sum`` of the hidden states against them:
        the summed cross entropy, or with ``z_loss_multiplier`` the pair (cross entropy + z-loss, z-loss).
        ``position_ids`` and ``attention_mask`` as in :meth:`hidden_states` (packed rows).

        The loss goes through ``forward`` so that wrappers hooking it (FSDP's all-gather) cover the output matrix.
        """
        hidden = self.hidden_states(input_ids, position_ids=position_ids, attention_mask=attention_mask)
        if targets is None:
            if z_loss_multiplier is not None:
                raise ValueError("z_loss_multiplier is given with targets only")
            return self.project(hidden)
        return linear_cross_entropy_sum(hidden, self.output_weight, targets, z_loss_multiplier=z_loss_multiplier)
