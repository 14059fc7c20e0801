"""Hugging Face ``transformers`` format (``OlmoForCausalLM``, model_type "olmo") for OLMo weights.

Our parameter names follow OLMo's checkpoints (``transformer.blocks.{i}.att_proj.weight``, ...);
this module maps them to and from the names and config ``transformers`` expects, without
importing ``transformers``: the output is safetensors + ``config.json`` it can load.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from olmo_model import OlmoConfig

TOKENIZER_CONFIG = {
    "tokenizer_class": "GPTNeoXTokenizerFast",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|padding|>",
    "bos_token": None,
    "model_max_length": None,
}


def hf_config(config: OlmoConfig) -> dict:
    """The ``config.json`` of an ``OlmoForCausalLM`` with this architecture."""
    return {
        "architectures": ["OlmoForCausalLM"],
        "model_type": "olmo",
        "hidden_size": config.d_model,
        "intermediate_size": config.mlp_hidden_size,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_heads,
        "max_position_embeddings": config.max_sequence_length,
        "vocab_size": config.embedding_size,
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": config.weight_tying,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "clip_qkv": None,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def to_hf_state_dict(state: dict[str, torch.Tensor], config: OlmoConfig) -> dict[str, torch.Tensor]:
    """Rename (and split the fused) OLMo tensors into ``transformers``' Olmo layout."""
    d, hidden = config.d_model, config.mlp_hidden_size
    out = {"model.embed_tokens.weight": state["transformer.wte.weight"]}
    for i in range(config.n_layers):
        ours, theirs = f"transformer.blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[ours + "att_proj.weight"].split(d, dim=0)
        up, gate = state[ours + "ff_proj.weight"].split(hidden, dim=0)
        out.update(
            {
                theirs + "self_attn.q_proj.weight": q,
                theirs + "self_attn.k_proj.weight": k,
                theirs + "self_attn.v_proj.weight": v,
                theirs + "self_attn.o_proj.weight": state[ours + "attn_out.weight"],
                theirs + "mlp.up_proj.weight": up,
                theirs + "mlp.gate_proj.weight": gate,
                theirs + "mlp.down_proj.weight": state[ours + "ff_out.weight"],
            }
        )
    output = "transformer.wte.weight" if config.weight_tying else "transformer.ff_out.weight"
    out["lm_head.weight"] = state[output]
    return {name: tensor.contiguous().clone() for name, tensor in out.items()}


def from_hf_state_dict(state: dict[str, torch.Tensor], config: OlmoConfig) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_hf_state_dict`: ``transformers``' Olmo tensors in our layout."""
    out = {"transformer.wte.weight": state["model.embed_tokens.weight"]}
    for i in range(config.n_layers):
        ours, theirs = f"transformer.blocks.{i}.", f"model.layers.{i}."
        attention = [state[theirs + f"self_attn.{p}_proj.weight"] for p in ("q", "k", "v")]
        mlp = [state[theirs + f"mlp.{p}_proj.weight"] for p in ("up", "gate")]
        out.update(
            {
                ours + "att_proj.weight": torch.cat(attention, dim=0),
                ours + "attn_out.weight": state[theirs + "self_attn.o_proj.weight"],
                ours + "ff_proj.weight": torch.cat(mlp, dim=0),
                ours + "ff_out.weight": state[theirs + "mlp.down_proj.weight"],
            }
        )
    if not config.weight_tying:
        out["transformer.ff_out.weight"] = state["lm_head.weight"]
    return out


def export_to_hf(
    state: dict[str, torch.Tensor], config: OlmoConfig, tokenizer_file: Path, directory: Path
) -> list[str]:
    """Write an ``OlmoForCausalLM`` directory (fp32 safetensors, config, tokenizer); return its files."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state_dict(state, config), directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(config), indent=2, sort_keys=True))
    shutil.copyfile(tokenizer_file, directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    generation = {"eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return sorted(path.name for path in directory.iterdir())
