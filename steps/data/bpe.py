"""Train a GPT-NeoX-style byte-level BPE tokenizer on a documents directory.

The vocabulary has exactly ``padded_vocab_size(vocab_size)`` ids (a multiple of 128, so the model's
embedding needs no padding), with the reserved ids of OLMo's dolma-v1_5 tokenizer at both ends:

- 0 ``|||IP_ADDRESS|||``, 1 ``<|padding|>``;
- 2..257 the 256 byte tokens, then the learned merges in the order they were learned;
- ``<|extra_id_N|>``: unused tokens that fill the vocabulary when the corpus yields fewer merges;
- size-3 ``|||EMAIL_ADDRESS|||``, size-2 ``|||PHONE_NUMBER|||``, size-1 ``<|endoftext|>`` (EOS).

Text is not normalized (GPT-NeoX applies NFC) and is split byte-level without an added prefix space, so
decoding the ids of any text gives that text back. The PII placeholders are added tokens: never split,
and kept by decoding; padding, EOS and the extras are special tokens. Training is deterministic: the same
texts give a byte-identical ``tokenizer.json``.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from steps.common.documents import list_shards, read_documents
from olmo_model.config import padded_vocab_size
from steps.data.tokenizer import DEFAULT_EOS_TOKEN, PAD_TOKEN, PII_TOKENS, TokenizerSpec

BYTE_TOKENS = 256
LEADING_TOKENS = (PII_TOKENS["ip_address"], PAD_TOKEN)  # ids 0 and 1
TRAILING_TOKENS = (PII_TOKENS["email_address"], PII_TOKENS["phone_number"], DEFAULT_EOS_TOKEN)  # the last ids
EXTRA_TOKEN_PREFIX = "<|extra_id_"
MIN_VOCAB_SIZE = BYTE_TOKENS + len(LEADING_TOKENS) + len(TRAILING_TOKENS)
_PII_PLACEHOLDER = re.compile("|".join(re.escape(token) for token in PII_TOKENS.values()))


def check_bpe_config(vocab_size: Any, min_frequency: Any = 2, max_documents: Any = None) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train a tokenizer."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(vocab_size) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size: expected an integer >= {MIN_VOCAB_SIZE} ({BYTE_TOKENS} byte tokens and "
            f"{MIN_VOCAB_SIZE - BYTE_TOKENS} reserved ones), got {vocab_size!r}"
        )
    if not is_int(min_frequency) or min_frequency < 1:
        raise ValueError(f"min_frequency: expected a positive integer, got {min_frequency!r}")
    if max_documents is not None and (not is_int(max_documents) or max_documents < 1):
        raise ValueError(f"max_documents: expected a positive integer or null, got {max_documents!r}")


def bpe_spec(path: str | Path, vocab_size: int) -> TokenizerSpec:
    """The spec a tokenizer trained with ``vocab_size`` meets (its ids, PII tokens included)."""
    return TokenizerSpec(
        path=str(path),
        eos_token_id=padded_vocab_size(vocab_size) - 1,
        pad_token_id=LEADING_TOKENS.index(PAD_TOKEN),
        pii_tokens=tuple(PII_TOKENS.values()),
    )


def document_texts(documents_dir: str | Path, max_documents: int | None = None) -> Iterator[str]:
    """The texts of the documents under ``<documents_dir>/<source>/``, in shard order; the first
    ``max_documents`` when given."""
    shards = list_shards(documents_dir)
    if not shards:
        raise FileNotFoundError(f"{documents_dir}: no document shards (<source>/<shard>.jsonl.gz) to train on")
    texts = (document["text"] for shard in shards for _, document in read_documents(shard))
    return itertools.islice(texts, max_documents)


def _without_pii_placeholders(texts: Iterable[str]) -> Iterator[str]:
    """Texts cut at PII placeholders: encoding never passes them to BPE, so training does not either."""
    for text in texts:
        yield from _PII_PLACEHOLDER.split(text)


def _byte_level_tokenizer(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    return tokenizer


def _add_reserved(tokenizer: Tokenizer, tokens: Iterable[str]) -> None:
    """Append ``tokens`` as added tokens, in order (one already in the vocabulary keeps its id); all
    are special but the PII placeholders."""
    for token in tokens:
        tokenizer.add_tokens([AddedToken(token, special=token not in PII_TOKENS.values())])


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE tokenizer of ``padded_vocab_size(vocab_size)`` ids, laid out as the module says.

    Merges are learned until the vocabulary is full or no pair occurs ``min_frequency`` times.
    """
    check_bpe_config(vocab_size, min_frequency)
    size = padded_vocab_size(vocab_size)
    trainer = trainers.BpeTrainer(
        vocab_size=size - len(TRAILING_TOKENS),
        min_frequency=min_frequency,
        special_tokens=list(LEADING_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained = _byte_level_tokenizer(models.BPE())
    trained.train_from_iterator(_without_pii_placeholders(texts), trainer)
    # A fresh tokenizer over the trained model: the trainer made every reserved token special, and
    # the PII placeholders must not be (decoding keeps them).
    tokenizer = _byte_level_tokenizer(trained.model)
    unused = size - len(TRAILING_TOKENS) - trained.get_vocab_size()
    extras = [f"{EXTRA_TOKEN_PREFIX}{n}|>" for n in range(unused)]
    _add_reserved(tokenizer, [*LEADING_TOKENS, *extras, *TRAILING_TOKENS])
    return tokenizer


def bpe_statistics(tokenizer: Tokenizer) -> dict[str, int]:
    """How many merges a trained tokenizer learned and how many of its ids are unused extras."""
    data = json.loads(tokenizer.to_str())
    extras = [token for token in data["added_tokens"] if token["content"].startswith(EXTRA_TOKEN_PREFIX)]
    return {"merges": len(data["model"]["merges"]), "unused_tokens": len(extras)}
