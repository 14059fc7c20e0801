"""A real tokenizer, a small model over its vocabulary, and a small Dolma documents directory."""
from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from olmo_model import Olmo, OlmoConfig
from steps.common.documents import write_jsonl_gz
from steps.data.tokenizer import olmo_tokenizers_dir

WORDS = ("river stone lantern orchard copper meadow violin harbor thunder pepper glacier "
         "candle falcon velvet compass marble ember willow").split()


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(olmo_tokenizers_dir() / "allenai_gpt-neox-olmo-dolma-v1_5.json"))


@pytest.fixture(scope="session")
def small_tokenizer() -> Tokenizer:
    """A byte-level BPE with a few hundred tokens trained on the test vocabulary, so training tests
    spend their time on the model rather than on a 50k-way softmax. Ids: EOS 0, pad 1."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [doc["text"] for doc in _synthetic_documents(64)] + ["<|user|>\n<|assistant|>\nContinue the text:\n"]
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


@pytest.fixture
def make_model(small_tokenizer):
    """olmo-micro over the small tokenizer's vocabulary."""

    def make(seed: int = 0) -> Olmo:
        config = OlmoConfig.preset("olmo-micro", vocab_size=small_tokenizer.get_vocab_size(),
                                   eos_token_id=0, pad_token_id=1)
        model = Olmo(config)
        model.reset_parameters(torch.Generator().manual_seed(seed))
        return model

    return make


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _synthetic_documents(count: int) -> list[dict]:
    """Documents of two or three paragraphs, plus ones too short to use (every fourth)."""
    docs = []
    for i in range(count):
        rng = random.Random(i)
        if i % 4 == 3:
            text = _sentence(rng, 6)  # one paragraph only
        else:
            text = "\n\n".join(_sentence(rng, rng.randint(5, 9)) for _ in range(rng.randint(2, 3)))
        docs.append({"id": f"doc{i}", "text": text, "source": "synthetic"})
    return docs


def _write_documents(directory, docs: list[dict], shards: int = 1) -> None:
    for shard in range(shards):
        write_jsonl_gz(directory / "synthetic" / f"part-{shard:05d}.jsonl.gz", docs[shard::shards])


@pytest.fixture
def synthetic_documents():
    return _synthetic_documents


@pytest.fixture
def write_documents():
    return _write_documents


@pytest.fixture
def documents_dir(tmp_path):
    directory = tmp_path / "documents"
    _write_documents(directory, _synthetic_documents(16))
    return directory


@pytest.fixture
def encoded_pairs(documents_dir, small_tokenizer):
    """Four preference pairs made from ``documents_dir``, encoded with the small tokenizer (EOS 0)."""
    from steps.adapt.chat import build_preference_pairs
    from steps.adapt.dpo import encode_preference_pairs

    rows, _ = build_preference_pairs(documents_dir, max_pairs=4, seed=0)
    pairs, counts = encode_preference_pairs(rows, small_tokenizer, 0, max_length=96)
    assert counts == {"pairs": 4, "encoded": 4}
    return pairs
