"""Training FLOPs of an OLMo decoder, for model FLOPs utilisation (MFU)."""

from __future__ import annotations

from .config import OlmoConfig


def matmul_parameters(config: OlmoConfig) -> int:
    """Weights every token is multiplied by: all block Linear weights plus the output matrix.

    The input embedding is a lookup, not a matmul; the output matrix is counted even when it is tied
    to the embedding (then every parameter is one), since the logits are computed either way. Norm
    weights (OLMo 2's RMSNorm) scale element-wise and are not counted.
    """
    input_embedding = 0 if config.weight_tying else config.embedding_size * config.d_model
    return config.num_parameters() - input_embedding - config.norm_parameters()


def flops_per_token(config: OlmoConfig, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token of ``config`` on sequences of ``seq_len`` tokens.

    ``6 * matmul_parameters(config)`` (2 per multiply-add forward, 4 backward) plus attention's
    ``12 * n_layers * d_model * seq_len`` for QK^T and AV, the PaLM / Megatron / OLMo-core convention.
    Attention is counted over the full ``seq_len x seq_len`` score matrix: no halving for the causal
    mask, so MFU figures compare with those papers. Element-wise work (norms, RoPE, softmax, SwiGLU,
    the loss) is not counted.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len: expected a positive integer, got {seq_len!r}")
    attention = 12 * config.n_layers * config.d_model * seq_len
    return float(6 * matmul_parameters(config) + attention)
