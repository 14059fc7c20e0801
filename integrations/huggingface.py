"""Hugging Face ``transformers`` format for OLMo weights: ``OlmoForCausalLM`` (model_type "olmo") for OLMo v1, and
``Olmo2ForCausalLM`` (model_type "olmo2") for an OLMo-2-shaped config (RMSNorm, reordered norms and QK-norm;
``OlmoConfig.is_olmo2``).

Our parameter names follow OLMo's checkpoints (``transformer.blocks.{i}.att_proj.weight``, ...);
this module maps them to and from the names and config ``transformers`` expects, without
importing ``transformers``: the output is safetensors + ``config.json`` it can load
(:func:`export_to_hf`), and such a directory, local or behind any fsspec URL, is read back into our
config and weights (:func:`import_from_hf`), safetensors only.

OLMo 2's extra weights map one to one: ``blocks.{i}.attn_norm`` / ``ff_norm`` (applied to the attention and MLP
outputs) are ``layers.{i}.post_attention_layernorm`` / ``post_feedforward_layernorm``, ``blocks.{i}.q_norm`` /
``k_norm`` are ``layers.{i}.self_attn.q_norm`` / ``k_norm`` (over the whole projection, as ours), and
``transformer.ln_f`` is ``model.norm``; ``rms_norm_eps`` is our ``layer_norm_eps``.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import fsspec
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from olmo_model import Olmo, OlmoConfig

TOKENIZER_CONFIG = {
    "tokenizer_class": "GPTNeoXTokenizerFast",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|padding|>",
    "bos_token": None,
    "model_max_length": None,
}


OLMO = "OlmoForCausalLM"
OLMO2 = "Olmo2ForCausalLM"
MODEL_TYPES = {"olmo": OLMO, "olmo2": OLMO2}


def hf_architecture(config: OlmoConfig) -> str:
    """The ``transformers`` class of this architecture: ``OlmoForCausalLM`` for OLMo v1 (LayerNorm, pre-norm, no
    QK-norm), ``Olmo2ForCausalLM`` for OLMo 2 (RMSNorm, reordered norms, QK-norm); no other mix has one."""
    if config.is_olmo2:
        return OLMO2
    if config.norm == "layernorm" and config.block == "pre_norm" and not config.qk_norm:
        return OLMO
    raise ValueError(
        f"no transformers model has norm={config.norm!r}, block={config.block!r}, qk_norm={config.qk_norm}: "
        "OlmoForCausalLM is layernorm + pre_norm without qk_norm, Olmo2ForCausalLM rmsnorm + reordered_norm + qk_norm"
    )


def hf_config(config: OlmoConfig) -> dict:
    """The ``config.json`` of the ``OlmoForCausalLM`` or ``Olmo2ForCausalLM`` with this architecture (OLMo 2's:
    the keys of the released checkpoints, with ``rms_norm_eps`` and no ``clip_qkv``)."""
    olmo2 = hf_architecture(config) == OLMO2
    shape = {
        "architectures": [OLMO2 if olmo2 else OLMO],
        "model_type": "olmo2" if olmo2 else "olmo",
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
    }
    architecture = {"rms_norm_eps": config.layer_norm_eps} if olmo2 else {"clip_qkv": None}
    return {
        **shape,
        **architecture,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def _norm_names(config: OlmoConfig) -> dict[str, str]:
    """Our norm weight names and ``Olmo2ForCausalLM``'s (none for OLMo v1, whose norms have no weights)."""
    if not config.is_olmo2:
        return {}
    names = {"transformer.ln_f.weight": "model.norm.weight"}
    for i in range(config.n_layers):
        ours, theirs = f"transformer.blocks.{i}.", f"model.layers.{i}."
        names.update({
            ours + "attn_norm.weight": theirs + "post_attention_layernorm.weight",
            ours + "ff_norm.weight": theirs + "post_feedforward_layernorm.weight",
            ours + "q_norm.weight": theirs + "self_attn.q_norm.weight",
            ours + "k_norm.weight": theirs + "self_attn.k_norm.weight",
        })
    return names


def to_hf_state_dict(state: dict[str, torch.Tensor], config: OlmoConfig) -> dict[str, torch.Tensor]:
    """Rename (and split the fused) OLMo tensors into ``transformers``' Olmo (or Olmo2) layout."""
    hf_architecture(config)  # refuses a mix transformers has no model of
    d, hidden = config.d_model, config.mlp_hidden_size
    out = {"model.embed_tokens.weight": state["transformer.wte.weight"]}
    out.update({theirs: state[ours] for ours, theirs in _norm_names(config).items()})
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
    """The inverse of :func:`to_hf_state_dict`: ``transformers``' Olmo (or Olmo2) tensors in our layout."""
    out = {"transformer.wte.weight": state["model.embed_tokens.weight"]}
    out.update({ours: state[theirs] for ours, theirs in _norm_names(config).items()})
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


def olmo2_tokenizer_config(tokenizer_file: Path, config: OlmoConfig) -> dict:
    """``tokenizer_config.json`` of an exported OLMo 2 model: a fast tokenizer whose EOS and pad tokens are the
    tokenizer file's tokens of the model's ids (left out when the file does not list them as added tokens)."""
    try:
        added = json.loads(Path(tokenizer_file).read_text()).get("added_tokens") or []
    except (OSError, ValueError, AttributeError):
        added = []
    tokens = {entry.get("id"): entry.get("content") for entry in added if isinstance(entry, dict)}
    out: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "model_max_length": None}
    for key, token_id in (("eos_token", config.eos_token_id), ("pad_token", config.pad_token_id)):
        if isinstance(tokens.get(token_id), str):
            out[key] = tokens[token_id]
    return out


def export_to_hf(
    state: dict[str, torch.Tensor], config: OlmoConfig, tokenizer_file: Path, directory: Path
) -> list[str]:
    """Write an ``OlmoForCausalLM`` (OLMo v1) or ``Olmo2ForCausalLM`` (OLMo 2) directory (fp32 safetensors,
    config, tokenizer); return its files."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state_dict(state, config), directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(config), indent=2, sort_keys=True))
    shutil.copyfile(tokenizer_file, directory / "tokenizer.json")
    tokenizer_config = olmo2_tokenizer_config(tokenizer_file, config) if config.is_olmo2 else TOKENIZER_CONFIG
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    generation = {"eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return sorted(path.name for path in directory.iterdir())


# --- Import: an HF ``OlmoForCausalLM``/``Olmo2ForCausalLM`` directory (local path or fsspec URL) as ours ------

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
SHARD_NAME = re.compile(r"model-\d+-of-\d+\.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The tokenizer files a checkpoint may carry, copied beside the imported model when present; transformers
# >= 5 writes the chat template to chat_template.jinja, older versions into tokenizer_config.json.
HF_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
)
# Buffers some transformers versions saved that are not weights (they follow from rope_theta).
DERIVED_SUFFIXES = ("rotary_emb.inv_freq",)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
HASH_CHUNK = 2**22


class HuggingFaceImportError(ValueError):
    """An HF checkpoint directory this project cannot import as it is; the message names the file and key."""


@dataclass(frozen=True)
class CheckpointDirectory:
    """An HF checkpoint directory on any fsspec filesystem: where it is and the files directly in it."""

    url: str
    fs: fsspec.AbstractFileSystem
    root: str
    names: tuple[str, ...]

    @classmethod
    def open(cls, url: str) -> CheckpointDirectory:
        url = str(url)
        fs, root = fsspec.core.url_to_fs(url)
        if not fs.isdir(root):
            raise HuggingFaceImportError(
                f"{url}: not a directory (expected an HF OlmoForCausalLM or Olmo2ForCausalLM checkpoint)"
            )
        entries = fs.ls(root, detail=True)
        names = sorted(posixpath.basename(entry["name"].rstrip("/")) for entry in entries if entry["type"] == "file")
        return cls(url.rstrip("/"), fs, root.rstrip("/"), tuple(names))

    def where(self, name: str) -> str:
        """How errors name a file of the directory: its URL (or path) as given."""
        return f"{self.url}/{name}"

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def read_json(self, name: str) -> Any:
        if name not in self.names:
            raise HuggingFaceImportError(f"{self.where(name)}: missing")
        try:
            with self.fs.open(self.path(name), "rb") as handle:
                return json.loads(handle.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HuggingFaceImportError(f"{self.where(name)}: not valid JSON ({exc})") from None

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(self.path(name), "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def weight_files(self) -> tuple[str | None, dict[str, str] | None, list[str]]:
        """The index file (or None), its ``weight_map`` (or None) and the safetensors files to read, as
        ``transformers`` picks them: ``model.safetensors`` first, else the index of a sharded checkpoint.
        Pickled weights are refused, never read."""
        if WEIGHTS_FILE in self.names:
            return None, None, [WEIGHTS_FILE]
        if WEIGHTS_INDEX_FILE in self.names:
            index = self.read_json(WEIGHTS_INDEX_FILE)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(key, str) and isinstance(file, str) for key, file in weight_map.items()
            ):
                raise HuggingFaceImportError(
                    f"{self.where(WEIGHTS_INDEX_FILE)}: weight_map: expected a non-empty {{tensor name: file name}}"
                )
            shards = sorted(set(weight_map.values()))
            for shard in shards:
                if shard not in self.names:
                    key = next(key for key, file in sorted(weight_map.items()) if file == shard)
                    raise HuggingFaceImportError(
                        f"{self.where(WEIGHTS_INDEX_FILE)}: weight_map[{key!r}] names {shard}, "
                        "which is not in the directory"
                    )
                if not shard.endswith(".safetensors"):
                    raise HuggingFaceImportError(
                        f"{self.where(WEIGHTS_INDEX_FILE)}: weight_map names {shard}; only *.safetensors are read"
                    )
            return WEIGHTS_INDEX_FILE, weight_map, shards
        pickles = [name for name in self.names if name.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise HuggingFaceImportError(
                f"{self.url}: only pickled weights ({', '.join(pickles)}); pickled weights are refused, "
                "convert them to safetensors (model.safetensors, or shards with model.safetensors.index.json)"
            )
        if any(SHARD_NAME.fullmatch(name) for name in self.names):
            raise HuggingFaceImportError(f"{self.url}: sharded safetensors without {WEIGHTS_INDEX_FILE}")
        raise HuggingFaceImportError(f"{self.url}: no {WEIGHTS_FILE} and no {WEIGHTS_INDEX_FILE}")

    def tokenizer_files(self) -> list[str]:
        return sorted(name for name in HF_TOKENIZER_FILES if name in self.names)

    def files(self) -> list[str]:
        """Every file an import reads: config.json, the weights (and their index), the tokenizer files."""
        index, _, shards = self.weight_files()
        return [CONFIG_FILE, *([index] if index else []), *shards, *self.tokenizer_files()]

    @contextmanager
    def local(self, name: str) -> Iterator[str]:
        """A local path of one file: the file itself, or a temporary copy of a remote one (safetensors are
        read by memory map, so a file is copied rather than read into memory)."""
        if self.is_local():
            yield self.path(name)
            return
        with tempfile.TemporaryDirectory(prefix="hf-import-") as folder:
            target = os.path.join(folder, name)
            self.fs.get_file(self.path(name), target)
            yield target


def checkpoint_content_hash(directory: str) -> str:
    """sha256 over the names and bytes (streamed) of every file an import of ``directory`` reads: the same
    files anywhere (another folder, bucket or URL scheme) give the same hash. Remote files are read in full."""
    checkpoint = CheckpointDirectory.open(directory)
    digest = hashlib.sha256(b"hf-olmo-checkpoint\n")
    for name in checkpoint.files():
        digest.update(f"{name}\0{checkpoint.sha256(name)}\n".encode())
    return digest.hexdigest()


def _value(hf: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in hf or hf[key] is None:
        if default is ...:
            raise HuggingFaceImportError(f"{where}: {key} missing")
        return default
    value = hf[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise HuggingFaceImportError(f"{where}: {key}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        expected = "a number" if isinstance(kind, tuple) else kind.__name__
        raise HuggingFaceImportError(f"{where}: {key}: expected {expected}, got {value!r}")
    return value


def _rope_theta(hf: dict[str, Any], where: str) -> float:
    """RoPE's base, from ``rope_theta`` (transformers < 5) or ``rope_parameters`` (>= 5); scaled RoPE refused."""
    if hf.get("rope_scaling") is not None:
        raise HuggingFaceImportError(
            f"{where}: rope_scaling is {hf['rope_scaling']!r}; only plain RoPE (null) is supported"
        )
    parameters = hf.get("rope_parameters")
    if parameters is None:
        return float(_value(hf, "rope_theta", where, (int, float), 10000.0))
    if not isinstance(parameters, dict):
        raise HuggingFaceImportError(f"{where}: rope_parameters: expected a mapping, got {parameters!r}")
    if parameters.get("rope_type", "default") != "default" or set(parameters) - {"rope_type", "rope_theta"}:
        raise HuggingFaceImportError(
            f"{where}: rope_parameters is {parameters!r}; only plain RoPE (rope_type 'default' and rope_theta) "
            "is supported"
        )
    return float(_value(parameters, "rope_theta", f"{where}: rope_parameters", (int, float), 10000.0))


def _token_id(hf: dict[str, Any], key: str, where: str) -> int:
    value = hf.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise HuggingFaceImportError(f"{where}: {key}: expected one token id, got {value!r}")
    return value


def olmo_config_from_hf(hf: dict[str, Any], where: str = CONFIG_FILE) -> OlmoConfig:
    """Our :class:`OlmoConfig` of an ``OlmoForCausalLM`` or ``Olmo2ForCausalLM`` ``config.json`` (the inverse of
    :func:`hf_config`).

    HF's ``vocab_size`` is the number of embedding rows, i.e. our ``embedding_size`` (OLMo's real checkpoints:
    50304, for a tokenizer of 50280 ids padded to a multiple of 128, EOS 50279, pad 1). The size of the real
    vocabulary is the tokenizer's, not the model's, and config.json does not say it; ours only bounds the ids
    the model accepts (EOS, pad, the tokenizer a pretrain checks), and rows past the tokenizer's last id are never
    produced by it. So ``vocab_size`` is taken as HF's ``vocab_size`` itself, with ``pad_to_multiple`` 128 when
    that divides it (OLMo's convention) and 1 otherwise, so that ``embedding_size`` equals HF's ``vocab_size``
    exactly, and exporting the import gives HF's config again.

    Refused, with the key named: another model type or architecture, ``clip_qkv`` (not null), ``attention_bias``
    (true), scaled RoPE, grouped-query attention, an activation other than SiLU, attention dropout. Our
    non-parametric LayerNorm has eps 1e-5, as transformers' ``OlmoLayerNorm`` does. "olmo2" is OLMo 2's
    architecture (``norm`` "rmsnorm", ``block`` "reordered_norm", ``qk_norm``) with ``layer_norm_eps`` =
    ``rms_norm_eps`` (transformers' default 1e-5 when absent) and ``init`` "normal" (how OLMo 2 was initialised;
    it changes no imported weight).
    """
    if not isinstance(hf, dict):
        raise HuggingFaceImportError(f"{where}: expected a JSON object")
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise HuggingFaceImportError(
            f"{where}: model_type is {model_type!r}; only 'olmo' (OlmoForCausalLM, OLMo v1) or 'olmo2' "
            "(Olmo2ForCausalLM, OLMo 2) can be imported"
        )
    architecture = MODEL_TYPES[model_type]
    architectures = hf.get("architectures")
    if architectures is not None and architecture not in architectures:
        raise HuggingFaceImportError(f"{where}: architectures is {architectures!r}; expected [{architecture!r}]")
    if hf.get("clip_qkv") is not None:
        raise HuggingFaceImportError(
            f"{where}: clip_qkv is {hf['clip_qkv']!r}; this project's OLMo does not clip q/k/v, "
            "so only null can be imported"
        )
    if hf.get("attention_bias", False) is not False:
        raise HuggingFaceImportError(f"{where}: attention_bias is {hf['attention_bias']!r}; only false is supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise HuggingFaceImportError(f"{where}: hidden_act is {hf['hidden_act']!r}; only 'silu' (SwiGLU) is supported")
    if hf.get("attention_dropout", 0.0) not in (0, 0.0):
        raise HuggingFaceImportError(
            f"{where}: attention_dropout is {hf['attention_dropout']!r}; only 0.0 is supported"
        )
    heads = _value(hf, "num_attention_heads", where, int)
    kv_heads = _value(hf, "num_key_value_heads", where, int, heads)
    if kv_heads != heads:
        raise HuggingFaceImportError(
            f"{where}: num_key_value_heads is {kv_heads}, num_attention_heads {heads}; "
            "grouped-query attention is not supported"
        )
    d_model = _value(hf, "hidden_size", where, int)
    if hf.get("head_dim") is not None and d_model % heads == 0 and hf["head_dim"] != d_model // heads:
        raise HuggingFaceImportError(
            f"{where}: head_dim is {hf['head_dim']!r}; expected hidden_size / num_attention_heads"
        )
    embedding_rows = _value(hf, "vocab_size", where, int)
    architecture_fields: dict[str, Any] = {"layer_norm_eps": 1e-5}
    if architecture == OLMO2:
        architecture_fields = {
            "norm": "rmsnorm", "block": "reordered_norm", "qk_norm": True, "init": "normal",
            "layer_norm_eps": float(_value(hf, "rms_norm_eps", where, (int, float), 1e-5)),
        }
    try:
        return OlmoConfig(
            d_model=d_model,
            n_heads=heads,
            n_layers=_value(hf, "num_hidden_layers", where, int),
            mlp_hidden_size=_value(hf, "intermediate_size", where, int),
            vocab_size=embedding_rows,
            pad_to_multiple=128 if embedding_rows % 128 == 0 else 1,
            max_sequence_length=_value(hf, "max_position_embeddings", where, int),
            rope_theta=_rope_theta(hf, where),
            weight_tying=_value(hf, "tie_word_embeddings", where, bool, False),
            eos_token_id=_token_id(hf, "eos_token_id", where),
            pad_token_id=_token_id(hf, "pad_token_id", where),
            **architecture_fields,
        )
    except ValueError as exc:
        raise HuggingFaceImportError(f"{where}: {exc}") from None


def read_hf_config(directory: str) -> OlmoConfig:
    """The config of an HF OLMo checkpoint directory, checked, and its weight files found (nothing loaded)."""
    checkpoint = CheckpointDirectory.open(directory)
    config = olmo_config_from_hf(checkpoint.read_json(CONFIG_FILE), checkpoint.where(CONFIG_FILE))
    checkpoint.weight_files()
    return config


def expected_hf_shapes(config: OlmoConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of an ``OlmoForCausalLM`` (or ``Olmo2ForCausalLM``) with this config, and their shapes
    (``lm_head`` included)."""
    d, hidden, rows = config.d_model, config.mlp_hidden_size, config.embedding_size
    shapes = {"model.embed_tokens.weight": (rows, d), "lm_head.weight": (rows, d)}
    shapes.update({name: (d,) for name in _norm_names(config).values()})
    for i in range(config.n_layers):
        layer = f"model.layers.{i}."
        shapes.update({layer + f"self_attn.{p}_proj.weight": (d, d) for p in ("q", "k", "v", "o")})
        shapes.update({layer + "mlp.up_proj.weight": (hidden, d), layer + "mlp.gate_proj.weight": (hidden, d),
                       layer + "mlp.down_proj.weight": (d, hidden)})
    return shapes


def _read_hf_tensors(
    checkpoint: CheckpointDirectory, config: OlmoConfig
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every weight of the checkpoint in fp32, and the file each came from; unknown or misshapen tensors
    refused, naming the file and key."""
    index, weight_map, shards = checkpoint.weight_files()
    shapes = expected_hf_shapes(config)
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for shard in shards:
        where = checkpoint.where(shard)
        with checkpoint.local(shard) as local:
            try:
                handle = safe_open(local, framework="pt")
            except Exception as exc:  # safetensors raises its own SafetensorError
                raise HuggingFaceImportError(f"{where}: not a safetensors file ({exc})") from None
            with handle:
                for key in handle.keys():
                    if key.endswith(DERIVED_SUFFIXES):
                        continue
                    if key in origin:
                        raise HuggingFaceImportError(f"{where}: {key} is also in {origin[key]}")
                    if key not in shapes:
                        raise HuggingFaceImportError(
                            f"{where}: {key} is not a weight of {hf_architecture(config)} with "
                            f"{checkpoint.where(CONFIG_FILE)}"
                        )
                    if weight_map is not None and weight_map.get(key) != shard:
                        raise HuggingFaceImportError(
                            f"{where}: {key} is not in this file according to {checkpoint.where(index)} "
                            f"(weight_map[{key!r}] = {weight_map.get(key)!r})"
                        )
                    tensor = handle.get_tensor(key)
                    if tuple(tensor.shape) != shapes[key]:
                        raise HuggingFaceImportError(
                            f"{where}: {key} has shape {list(tensor.shape)}; {checkpoint.where(CONFIG_FILE)} "
                            f"implies {list(shapes[key])}"
                        )
                    if tensor.dtype not in FLOAT_DTYPES:
                        raise HuggingFaceImportError(
                            f"{where}: {key} has dtype {tensor.dtype}; expected floating point"
                        )
                    tensors[key] = tensor.to(torch.float32)
                    origin[key] = where
    if weight_map is not None:
        for key in sorted(set(weight_map) - set(origin)):
            if not key.endswith(DERIVED_SUFFIXES):
                raise HuggingFaceImportError(
                    f"{checkpoint.where(weight_map[key])}: {key} missing (listed in {checkpoint.where(index)})"
                )
    return tensors, origin


def import_from_hf(directory: str) -> tuple[OlmoConfig, dict[str, torch.Tensor]]:
    """Our config and fp32 state dict (names as :class:`olmo_model.Olmo` has them) of an HF ``OlmoForCausalLM``
    or ``Olmo2ForCausalLM`` checkpoint directory: a local path or any fsspec URL.

    Reads ``config.json`` (mapped by :func:`olmo_config_from_hf`) and the safetensors weights only: one
    ``model.safetensors``, or the shards ``model.safetensors.index.json`` lists; a directory with only pickled
    weights (``pytorch_model.bin``, ...) is refused, never unpickled. Weights in bf16/fp16 are upcast to fp32
    (exactly). With ``tie_word_embeddings`` the output matrix is the embedding: ``lm_head.weight`` must be absent
    or equal to it. Errors name the file and the key.
    """
    checkpoint = CheckpointDirectory.open(directory)
    config_file = checkpoint.where(CONFIG_FILE)
    config = olmo_config_from_hf(checkpoint.read_json(CONFIG_FILE), config_file)
    hf, origin = _read_hf_tensors(checkpoint, config)
    required = set(expected_hf_shapes(config)) - ({"lm_head.weight"} if config.weight_tying else set())
    missing = sorted(required - set(hf))
    if missing:
        why = " (tie_word_embeddings is false)" if missing == ["lm_head.weight"] else ""
        raise HuggingFaceImportError(
            f"{checkpoint.url}: {missing[0]} missing from the weights{why}"
            + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else "")
        )
    if config.weight_tying and "lm_head.weight" in hf:
        if not torch.equal(hf["lm_head.weight"], hf["model.embed_tokens.weight"]):
            raise HuggingFaceImportError(
                f"{origin['lm_head.weight']}: lm_head.weight differs from model.embed_tokens.weight, but "
                f"{config_file} has tie_word_embeddings true"
            )
    state = from_hf_state_dict(hf, config)
    del hf
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in Olmo(config).state_dict().items()}
    actual = {name: tuple(t.shape) for name, t in state.items()}
    if actual != expected:  # the mapping and the shape checks above make this unreachable
        raise HuggingFaceImportError(
            f"{checkpoint.url}: the mapped weights do not fit the model ({actual} vs {expected})"
        )
    return config, state


def copy_hf_tokenizer(directory: str, target: Path) -> list[str]:
    """Copy the tokenizer files the checkpoint carries (``HF_TOKENIZER_FILES``) into ``target``; their names."""
    checkpoint = CheckpointDirectory.open(directory)
    names = checkpoint.tokenizer_files()
    if names:
        target.mkdir(parents=True, exist_ok=True)
    for name in names:
        checkpoint.fs.get_file(checkpoint.path(name), str(target / name))
    return names
