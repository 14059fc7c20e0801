"""OLMo v1 model configuration, presets, and strict dict (de)serialisation."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

INIT_SCHEMES = ("mitchell",)


def check_field_types(obj: Any) -> None:
    """Check every field of dataclass ``obj`` against its annotation.

    Supports ``int``, ``float``, ``bool``, ``str`` and ``X | None``. ``bool`` is never accepted as
    a number; an ``int`` given for a ``float`` field is stored as ``float`` (so ``10000`` and
    ``10000.0`` describe the same config).
    """
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        expected = hints[field.name]
        is_union = typing.get_origin(expected) in (typing.Union, types.UnionType)
        allowed = typing.get_args(expected) if is_union else (expected,)
        if type(value) is int and float in allowed and int not in allowed:
            value = float(value)
            object.__setattr__(obj, field.name, value)
        if type(value) not in allowed:
            raise ValueError(
                f"{type(obj).__name__}.{field.name}: expected {_type_name(expected)}, "
                f"got {value!r} ({type(value).__name__})"
            )


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if args:
        return " | ".join(_type_name(arg) for arg in args)
    return "None" if annotation is type(None) else annotation.__name__


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown and missing keys by name; errors start with
    ``where`` (default: the class name)."""
    where = cls.__name__ if where is None else where
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    known = [field.name for field in fields]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {known}")
    missing = [
        field.name
        for field in fields
        if field.name not in data
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {missing}")
    return cls(**data)


def check_keys(config: Mapping[str, Any], known: set[str], where: str) -> None:
    """Reject configuration keys that are not ``known``, naming them and the known ones."""
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}")


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (OLMo pads its embedding this way: 50280 -> 50304)."""
    return -(-vocab_size // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class OlmoConfig:
    """Shape and token ids of an OLMo v1 decoder.

    ``mlp_hidden_size`` is the SwiGLU hidden size; the fused ``ff_proj`` outputs twice that.
    The embedding (and untied output) matrix has ``embedding_size`` rows: ``vocab_size`` rounded up
    to a multiple of ``pad_to_multiple``.
    """

    d_model: int
    n_heads: int
    n_layers: int
    mlp_hidden_size: int
    vocab_size: int = 50280
    pad_to_multiple: int = 128
    max_sequence_length: int = 2048
    rope_theta: float = 10000.0
    weight_tying: bool = True
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 50279
    pad_token_id: int = 1
    init: str = "mitchell"

    def __post_init__(self) -> None:
        check_field_types(self)
        name = type(self).__name__
        for key in ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size",
                    "pad_to_multiple", "max_sequence_length"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{name}.{key}: expected a positive integer, got {getattr(self, key)}")
        for key in ("rope_theta", "layer_norm_eps"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{name}.{key}: expected a positive number, got {getattr(self, key)}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"{name}: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"{name}: head dimension {self.head_dim} must be even for RoPE")
        for key in ("eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, key) < self.vocab_size:
                raise ValueError(
                    f"{name}.{key}: expected an id in [0, {self.vocab_size}), got {getattr(self, key)}"
                )
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"{name}.init: expected one of {list(INIT_SCHEMES)}, got {self.init!r}")

    @property
    def embedding_size(self) -> int:
        """Rows of the embedding matrix: ``vocab_size`` padded up to ``pad_to_multiple``."""
        return padded_vocab_size(self.vocab_size, self.pad_to_multiple)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def num_parameters(self) -> int:
        """Parameter count, computed from the shapes alone."""
        d, h = self.d_model, self.mlp_hidden_size
        per_block = 3 * d * d + d * d + 2 * h * d + h * d  # att_proj, attn_out, ff_proj, ff_out
        embeddings = self.embedding_size * d * (1 if self.weight_tying else 2)
        return embeddings + self.n_layers * per_block

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OlmoConfig:
        return dataclass_from_dict(cls, data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> OlmoConfig:
        """A named configuration (see ``PRESETS``), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown OLMo preset {name!r}; known presets are {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name].to_dict(), **overrides})


PRESETS: dict[str, OlmoConfig] = {
    "olmo-1b": OlmoConfig(d_model=2048, n_heads=16, n_layers=16, mlp_hidden_size=8192,
                          weight_tying=True),
    "olmo-7b": OlmoConfig(d_model=4096, n_heads=32, n_layers=32, mlp_hidden_size=11008,
                          weight_tying=False),
    "olmo-tiny": OlmoConfig(d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=512,
                            weight_tying=True, max_sequence_length=256),
    "olmo-micro": OlmoConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=128,
                             weight_tying=True, max_sequence_length=128),
}
