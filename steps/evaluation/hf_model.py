"""Hugging Face ``transformers`` causal LMs as models the evaluators score.

:func:`load_hf_model` loads a model directory (a local path, or any fsspec URL, copied to a local
folder first) with ``AutoModelForCausalLM``, safetensors weights only and no remote code, plus the
tokenizer saved beside it, and wraps the model in :class:`HuggingFaceCausalLM`: the
``hidden_states`` / ``project`` / ``config.max_sequence_length`` / ``config.eos_token_id`` protocol
that :mod:`steps.evaluation.scorer` and :func:`steps.evaluation.perplexity.bits_per_byte` call.
"""
from __future__ import annotations

import posixpath
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import fsspec
import torch

# config.json keys that name a model's context length, by model family.
MAX_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# Files that make a directory hold a tokenizer AutoTokenizer can load.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
CHECK_TOKENS = 8  # length of the input on which the split into hidden states and projection is checked


@dataclass(frozen=True)
class ScoredModelConfig:
    """What the evaluators read from a model's config."""

    max_sequence_length: int
    eos_token_id: int


def max_sequence_length(hf_config: Any) -> int:
    """The context length a ``transformers`` config declares."""
    for key in MAX_LENGTH_KEYS:
        value = getattr(hf_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(
        f"{type(hf_config).__name__}: config.json declares no context length (looked for {', '.join(MAX_LENGTH_KEYS)})"
    )


def eos_token_id(hf_config: Any) -> int:
    """The config's end-of-text token (the first one when it lists several)."""
    value = getattr(hf_config, "eos_token_id", None)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if not isinstance(value, int):
        raise ValueError(f"{type(hf_config).__name__}: config.json has no eos_token_id (got {value!r})")
    return value


class HuggingFaceCausalLM(torch.nn.Module):
    """A ``transformers`` causal LM split into its body (``hidden_states``: the base model, final norm
    included) and its output layer (``project``: the output embedding).

    The split is checked on a short input against the model's own logits when wrapping, so a model
    that changes its logits after the output embedding (scaling, soft-capping) is refused rather
    than scored wrongly.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model.eval()
        self.config = ScoredModelConfig(max_sequence_length(model.config), eos_token_id(model.config))
        self.check_split()

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)

    @torch.no_grad()
    def check_split(self) -> None:
        device = next(self.model.parameters()).device
        vocab = self.model.get_output_embeddings().weight.shape[0]
        input_ids = torch.arange(CHECK_TOKENS, device=device).unsqueeze(0) % vocab
        expected = self.model(input_ids=input_ids, use_cache=False).logits
        split = self.project(self.hidden_states(input_ids))
        if split.shape != expected.shape or not torch.allclose(split, expected, rtol=1e-4, atol=1e-4):
            raise ValueError(
                f"{type(self.model).__name__}: its logits are not its output embedding of its base model's last "
                "hidden state (it scales or caps them); it cannot be evaluated by this adapter"
            )


def model_directory(url: str | Path) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """A model directory (any fsspec URL): its filesystem, its path there, and its files relative to it, sorted."""
    fs, root = fsspec.core.url_to_fs(str(url))
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: not a model directory (expected config.json and *.safetensors in it)")
    return fs, root, sorted(posixpath.relpath(path, root) for path in fs.find(root))


@contextmanager
def local_copy(url: str | Path) -> Iterator[Path]:
    """A local folder with a model directory's files: the directory itself when local, else a temporary copy."""
    fs, root, files = model_directory(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        yield Path(root)
        return
    with tempfile.TemporaryDirectory(prefix="hf-model-") as folder:
        for name in files:
            target = Path(folder) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(posixpath.join(root, name), str(target))
        yield Path(folder)


def load_hf_model(url: str | Path, dtype: str | torch.dtype = "auto") -> tuple[HuggingFaceCausalLM, Any | None]:
    """The model of a ``transformers`` directory, wrapped, and its tokenizer (``None`` when it has none).

    Offline: nothing is downloaded, and only ``*.safetensors`` weights are read (never pickles).
    ``dtype`` as ``from_pretrained`` takes it ("auto": the checkpoint's own).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: imported when a model is loaded

    with local_copy(url) as directory:
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{url}: no config.json; expected a transformers model directory")
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
        )
        has_tokenizer = any((directory / name).is_file() for name in TOKENIZER_FILES)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True) if has_tokenizer else None
    return HuggingFaceCausalLM(model), tokenizer
