"""Configuration: the typed dataclasses every stage declares (``Config``, built once from a recipe by
``build_config``, errors naming the key), and OLMo's model configuration and presets."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, get_args

T = TypeVar("T")

Norm = Literal["layernorm", "rmsnorm"]
Block = Literal["pre_norm", "reordered_norm"]
InitScheme = Literal["mitchell", "normal"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong kind."""


def require(condition: bool, where: str, expected: str, value: Any) -> None:
    """Raise a :class:`ConfigError` saying what ``where`` should be unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")


class Config:
    """Base of every configuration dataclass: built once from a recipe's mapping by :meth:`from_dict`
    (:func:`build_config`), typed and checked, and passed as it is from then on.

    ``__post_init__`` checks each field against its annotation (so a config built in Python is checked
    too), then calls :meth:`check`, where a config checks its values.
    """

    # How errors name a config built without a ``where`` (default: the class name), e.g. its recipe block.
    WHERE: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        check_types(self, self.WHERE or type(self).__name__)
        self.check()

    def check(self) -> None:
        """Check the values of the fields; raise :class:`ConfigError` (or ``ValueError``) naming the key."""

    @classmethod
    def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
        return build_config(cls, data, where or cls.WHERE or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def build_config(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, checking every key against the field annotations.

    Lists become tuples where a field says ``tuple``. Unknown keys, missing required keys and values of the
    wrong type raise :class:`ConfigError` naming ``where.key`` and what was expected.
    """
    if isinstance(data, cls):
        return data
    require(isinstance(data, Mapping), where, "a mapping", data)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(sorted(fields))}"
        )
    missing = [
        name
        for name, field in fields.items()
        if name not in data
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    hints = typing.get_type_hints(cls)
    values = {key: coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except ValueError as exc:  # a check of the config's values, which may not know where it sits in the recipe
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def check_types(config: Any, where: str) -> None:
    """Check every field of dataclass ``config`` against its annotation, storing the coerced value (an
    integer given for a float is stored as a float, so ``10000`` and ``10000.0`` describe the same config)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        coerced = coerce(value, hints[field.name], f"{where}.{field.name}")
        if coerced is not value:
            object.__setattr__(config, field.name, coerced)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation; return it with lists turned into tuples and integers into
    floats where the annotation says so, and mappings built into the dataclasses it names."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        return build_config(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        blocks = [option for option in args if dataclasses.is_dataclass(option)]
        if isinstance(value, Mapping) and len(blocks) == 1:  # the one option a mapping can be: its own errors
            return build_config(blocks[0], value, where)
        for option in args:
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {describe(annotation)}, got {value!r}")
    if origin is typing.Literal:
        require(value in args, where, f"one of {', '.join(map(repr, args))}", value)
        return value
    if origin is tuple:
        require(isinstance(value, (list, tuple)), where, describe(annotation), value)
        if len(args) == 2 and args[1] is Ellipsis:
            items = args[:1] * len(value)
        else:
            require(len(value) == len(args), where, describe(annotation), value)
            items = args
        coerced = tuple(coerce(item, kind, f"{where}[{i}]") for i, (item, kind) in enumerate(zip(value, items)))
        return value if coerced == value and isinstance(value, tuple) else coerced
    if origin is dict:
        require(isinstance(value, Mapping), where, "a mapping", value)
        return {coerce(k, args[0], where): coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is type(None):
        require(value is None, where, "null", value)
        return None
    if annotation is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), where, "a number", value)
        return value if type(value) is float else float(value)
    if annotation is int:
        require(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
        return value
    if annotation in (bool, str):
        require(isinstance(value, annotation), where, describe(annotation), value)
        return value
    if annotation in (dict, list):
        require(isinstance(value, annotation), where, "a mapping" if annotation is dict else "a list", value)
        return value
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")


def describe(annotation: Any) -> str:
    """What an annotation expects, in words ("an integer or null")."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in args)
    if origin is typing.Literal:
        return " or ".join(map(repr, args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list ({describe(args[0])} each)"
        return f"a list of {len(args)} ({', '.join(describe(arg) for arg in args)})"
    if origin is dict or annotation is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return f"a mapping with keys {', '.join(field.name for field in dataclasses.fields(annotation))}"
    if annotation is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "a bool", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (OLMo pads its embedding this way: 50280 -> 50304)."""
    return -(-vocab_size // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class OlmoConfig(Config):
    """Shape, architecture options and token ids of an OLMo decoder (v1 by default, OLMo 2 with the options).

    ``mlp_hidden_size`` is the SwiGLU hidden size; the fused ``ff_proj`` outputs twice that.
    The embedding (and untied output) matrix has ``embedding_size`` rows: ``vocab_size`` rounded up
    to a multiple of ``pad_to_multiple``.

    The options, whose defaults are OLMo v1 exactly (a config that leaves them out is the v1 model, with the
    same parameters, weights for a seed and logits):

    ``norm``
        ``"layernorm"`` (v1): LayerNorm without learned scale or shift, no parameters. ``"rmsnorm"`` (OLMo 2):
        ``weight * x / sqrt(mean(x²) + eps)`` over the last dimension with a learned ``weight`` (initialised
        to ones), computed in fp32 and cast back to the input's dtype, as transformers' ``Olmo2RMSNorm`` and
        OLMo-core's ``RMSNorm``. Every norm of the model is of this kind, the final one included; ``eps`` is
        ``layer_norm_eps`` (v1 1e-5, OLMo 2 1e-6).
    ``block``
        ``"pre_norm"`` (v1): ``x + attn_out(attention(norm(x)))``, then ``x + mlp(norm(x))``.
        ``"reordered_norm"`` (OLMo 2; OLMo-core's ``ReorderedNormTransformerBlock``): the norm moves onto
        the branch outputs, ``x + norm(attn_out(attention(x)))``, then ``x + norm(mlp(x))``.
    ``qk_norm``
        Normalise the query and key projections (each over its whole ``d_model`` width, all heads at once, not
        per head) before RoPE, as transformers' ``Olmo2Attention`` (``q_norm``/``k_norm`` of size
        ``num_heads * head_dim``) and OLMo-core's ``qk_norm`` without ``use_head_qk_norm``. The norm is of the
        kind ``norm`` says.
    ``init``
        ``"mitchell"`` (v1, see ``olmo_model.init.mitchell_stds``) or ``"normal"`` (OLMo 2, OLMo-core's
        ``InitMethod.normal``: every matrix N(0, 0.02²) truncated at ±3σ). Norm weights start at one.
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
    init: InitScheme = "mitchell"
    norm: Norm = "layernorm"
    block: Block = "pre_norm"
    qk_norm: bool = False

    def check(self) -> None:
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

    @property
    def embedding_size(self) -> int:
        """Rows of the embedding matrix: ``vocab_size`` padded up to ``pad_to_multiple``."""
        return padded_vocab_size(self.vocab_size, self.pad_to_multiple)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def is_olmo2(self) -> bool:
        """Whether the architecture is OLMo 2's: RMSNorm, reordered norms and QK-norm together."""
        return self.norm == "rmsnorm" and self.block == "reordered_norm" and self.qk_norm

    def norm_parameters(self) -> int:
        """Parameters of the norms: none with LayerNorm; with RMSNorm a ``d_model`` weight for each block's two
        norms, its q and k norms (``qk_norm``) and the final norm."""
        if self.norm == "layernorm":
            return 0
        per_block = (2 + (2 if self.qk_norm else 0)) * self.d_model
        return self.n_layers * per_block + self.d_model

    def num_parameters(self) -> int:
        """Parameter count, computed from the shapes alone (norm weights included)."""
        d, h = self.d_model, self.mlp_hidden_size
        per_block = 3 * d * d + d * d + 2 * h * d + h * d  # att_proj, attn_out, ff_proj, ff_out
        embeddings = self.embedding_size * d * (1 if self.weight_tying else 2)
        return embeddings + self.n_layers * per_block + self.norm_parameters()

    @classmethod
    def from_dict(cls, data: Any, where: str | None = None) -> OlmoConfig:
        """A config from its mapping; in a recipe, ``{"preset": name, **overrides}`` starts from a preset."""
        where = where or cls.WHERE or cls.__name__
        if isinstance(data, Mapping) and "preset" in data:
            overrides = {key: value for key, value in data.items() if key != "preset"}
            return cls.preset(data["preset"], where=where, **overrides)
        return build_config(cls, data, where)

    @classmethod
    def preset(cls, name: str, where: str = "model", **overrides: Any) -> OlmoConfig:
        """A named configuration (see ``PRESETS``), with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown OLMo preset {name!r}; known presets are {sorted(PRESETS)}")
        return build_config(cls, {**PRESETS[name].to_dict(), **overrides}, where)


# OLMo 2's architecture and tokenizer (the "dolma2" tokenizer: 100278 ids, EOS 100257, pad 100277, padded to
# 100352 rows), as in the released checkpoints' config.json and OLMo-core's TransformerConfig.olmo2_* (see
# tests/olmo_model/test_olmo2.py for the sources of every number).
OLMO2 = {
    "norm": "rmsnorm", "block": "reordered_norm", "qk_norm": True, "init": "normal", "layer_norm_eps": 1e-6,
    "rope_theta": 500_000.0, "vocab_size": 100278, "eos_token_id": 100257, "pad_token_id": 100277,
    "max_sequence_length": 4096, "weight_tying": False,
}

PRESETS: dict[str, OlmoConfig] = {
    "olmo-1b": OlmoConfig(d_model=2048, n_heads=16, n_layers=16, mlp_hidden_size=8192,
                          weight_tying=True),
    "olmo-7b": OlmoConfig(d_model=4096, n_heads=32, n_layers=32, mlp_hidden_size=11008,
                          weight_tying=False),
    "olmo-tiny": OlmoConfig(d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=512,
                            weight_tying=True, max_sequence_length=256),
    "olmo-micro": OlmoConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=128,
                             weight_tying=True, max_sequence_length=128),
    # allenai/OLMo-2-0425-1B
    "olmo2-1b": OlmoConfig(d_model=2048, n_heads=16, n_layers=16, mlp_hidden_size=8192, **OLMO2),
    # allenai/OLMo-2-1124-7B
    "olmo2-7b": OlmoConfig(d_model=4096, n_heads=32, n_layers=32, mlp_hidden_size=11008, **OLMO2),
}
