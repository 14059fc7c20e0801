"""Shared fixtures for the evaluation tests: a bigram model with known log-probabilities,
a character tokenizer, the real OLMo tokenizer and an untrained OLMo-micro."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from tokenizers import Tokenizer

from olmo_model import Olmo, OlmoConfig
from steps.common.tasks import olmo_data_dir

CHARS = "\0 abcdefghijklmnopqrstuvwxyz:.?\né"  # id 0 is EOS


class CharTokenizer:
    """One token per character of ``CHARS``."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [CHARS.index(char) for char in text]


class BigramModel(torch.nn.Module):
    """log p(next | prefix) = log_softmax(table[last token]); records the shape of every input batch."""

    def __init__(self, vocab: int = len(CHARS), max_sequence_length: int = 64, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=generator))
        self.config = SimpleNamespace(max_sequence_length=max_sequence_length, eos_token_id=0)
        self.input_shapes: list[tuple[int, int]] = []

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.input_shapes.append(tuple(input_ids.shape))
        return self.table[input_ids]

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def logprob(self, previous: int, token: int) -> float:
        return torch.log_softmax(self.table.detach().double()[previous], dim=-1)[token].item()


@pytest.fixture
def make_bigram() -> Callable[..., BigramModel]:
    return BigramModel


@pytest.fixture
def bigram() -> BigramModel:
    return BigramModel()


@pytest.fixture
def char_tokenizer() -> CharTokenizer:
    return CharTokenizer()


@pytest.fixture(scope="session")
def olmo_tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(olmo_data_dir() / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"))


@pytest.fixture
def micro_model() -> Olmo:
    torch.manual_seed(0)
    return Olmo(OlmoConfig.preset("olmo-micro"))
