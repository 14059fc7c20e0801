"""Small models and token data for the trainer and checkpoint tests."""
from __future__ import annotations

import pytest
import torch

from olmo_model import Olmo, OlmoConfig

VOCAB = 128


def micro_config(**overrides) -> OlmoConfig:
    """olmo-micro with a 128-token vocabulary, so tests spend their time on the trainer, not the softmax."""
    return OlmoConfig.preset("olmo-micro", vocab_size=VOCAB, eos_token_id=0, pad_token_id=1, **overrides)


def micro_model(seed: int = 0, **overrides) -> Olmo:
    model = Olmo(micro_config(**overrides))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


@pytest.fixture
def make_model():
    return micro_model
