"""Shared fixtures: a small generated Dolma corpus and its tokenization with the real OLMo tokenizer."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from steps.common.documents import write_jsonl_gz
from steps.data.tokenize import tokenize_documents
from steps.data.tokenizer import olmo_tokenizers_dir

OLMO_EOS = 50279
WORDS = "the of and to in data model token open language science text paper train eval corpus".split()


def make_text(rng: random.Random) -> str:
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) for _ in range(rng.randint(1, 4))]
    return "\n".join(lines).capitalize() + "."


def write_corpus(directory: Path, shards_per_source: int = 2, docs_per_shard: int = 15) -> dict[str, dict]:
    """Write ``<directory>/<source>/part-NNNNN.jsonl.gz``; return the documents by id."""
    rng = random.Random(0)
    documents: dict[str, dict] = {}
    for source in ("web", "wiki"):
        for shard in range(shards_per_source):
            rows = []
            for n in range(docs_per_shard):
                doc_id = f"{source},{shard}-{n}"  # a comma, to exercise csv quoting
                rows.append({"id": doc_id, "text": make_text(rng), "source": source})
                documents[doc_id] = rows[-1]
            write_jsonl_gz(directory / source / f"part-{shard:05d}.jsonl.gz", rows)
    return documents


@pytest.fixture(scope="session")
def olmo_tokenizer_file() -> Path:
    return olmo_tokenizers_dir() / "allenai_gpt-neox-olmo-dolma-v1_5.json"


@pytest.fixture(scope="session")
def olmo_tokenizer(olmo_tokenizer_file) -> Tokenizer:
    return Tokenizer.from_file(str(olmo_tokenizer_file))


@pytest.fixture(scope="session")
def make_corpus():
    """The corpus writer, for tests that need a corpus of their own."""
    return write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    directory = tmp_path_factory.mktemp("documents")
    return directory, write_corpus(directory)


@pytest.fixture(scope="session")
def tokenized(corpus, olmo_tokenizer_file, tmp_path_factory) -> tuple[Path, dict]:
    """(output directory, summary) of tokenizing the corpus; tests must not modify it."""
    output = tmp_path_factory.mktemp("tokenized")
    summary = tokenize_documents(corpus[0], olmo_tokenizer_file, output, OLMO_EOS, batch_size=4)
    return output, summary
