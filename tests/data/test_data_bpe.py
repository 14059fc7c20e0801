"""Training a byte-level BPE tokenizer: exact vocabulary size, reserved ids, round trips, determinism, and the
`train_tokenizer` step standing in for `tokenizer` through Tango."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tango import StepGraph
from tango.common.exceptions import ConfigurationError
from tango.common.util import import_module_and_submodules
from integrations.workspace import OlmoWorkspace

from steps.common.documents import write_jsonl_gz
from steps.corpus.pii import mask_pii
from steps.data.bpe import bpe_spec, bpe_statistics, check_bpe_config, document_texts, train_bpe
from steps.data.tokenizer import TokenizerSpecError, check_special_tokens, parse_tokenizer, tokenizer_summary

import_module_and_submodules("steps")  # registers the step types, as tango.yml's include_package does
EMAIL, PHONE, IP = "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "|||IP_ADDRESS|||"
ROUND_TRIP_TEXTS = [
    "Tokenizers 🙂 🧑🏽‍💻 for 日本語のテキスト and 中文, Ελληνικά, עברית.",
    "  leading spaces,\ttabs\r\nand CRLF; trailing  ",
    "e\u0301 (decomposed) vs \u00e9 (composed): not normalized",
    "\x00\x07 control bytes and \u200b zero width",
]


def rich_texts(count: int = 300, seed: int = 0) -> list[str]:
    """Texts over a few hundred pseudo-words: enough distinct pairs to fill a 512-token vocabulary."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(400)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(20, 80))) + "." for _ in range(count)]


@pytest.fixture(scope="module")
def rich_tokenizer():
    return train_bpe(rich_texts(), 500)


def test_vocabulary_is_the_requested_size_rounded_up_to_128(rich_tokenizer):
    assert rich_tokenizer.get_vocab_size() == 512
    assert bpe_statistics(rich_tokenizer) == {"merges": 512 - 256 - 5, "unused_tokens": 0}


def test_reserved_ids_match_olmos_layout_and_the_spec(rich_tokenizer):
    tokenizer = rich_tokenizer
    assert [tokenizer.id_to_token(i) for i in (0, 1, 509, 510, 511)] == [
        IP, "<|padding|>", EMAIL, PHONE, "<|endoftext|>",
    ]
    spec = bpe_spec("trained.json", 500)
    assert (spec.eos_token_id, spec.pad_token_id) == (511, 1)
    check_special_tokens(tokenizer, spec)  # PII tokens are single tokens too
    summary = tokenizer_summary(tokenizer.to_str().encode(), spec)
    assert summary["pii_token_ids"] == {EMAIL: 509, PHONE: 510, IP: 0}
    assert summary["vocab_size"] == 512


def test_small_corpus_is_padded_with_unused_extra_tokens_to_the_exact_size():
    tokenizer = train_bpe(["tiny corpus, tiny corpus"], 300)
    stats = bpe_statistics(tokenizer)
    assert tokenizer.get_vocab_size() == 384
    assert stats["unused_tokens"] > 0 and 256 + 5 + stats["merges"] + stats["unused_tokens"] == 384
    first_extra = 384 - 3 - stats["unused_tokens"]
    assert tokenizer.id_to_token(first_extra) == "<|extra_id_0|>"
    assert tokenizer.id_to_token(380) == f"<|extra_id_{stats['unused_tokens'] - 1}|>"
    assert tokenizer.id_to_token(383) == "<|endoftext|>"
    assert tokenizer.encode("<|extra_id_0|>").ids == [first_extra]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_any_text_round_trips(rich_tokenizer, text):
    ids = rich_tokenizer.encode(text).ids
    assert rich_tokenizer.decode(ids) == text


def test_pii_masked_text_keeps_placeholders_as_single_tokens(rich_tokenizer):
    masked, spans = mask_pii("Mail ada@example.org or call 555-123-4567 from 10.0.0.1 now.")
    assert spans == 3
    encoding = rich_tokenizer.encode(masked)
    assert [t for t in encoding.tokens if t.startswith("|||")] == [EMAIL, PHONE, IP]
    assert rich_tokenizer.decode(encoding.ids) == masked  # placeholders are not special: decoding keeps them


def test_no_merges_are_learned_from_pii_placeholders():
    texts = [f"contact {EMAIL} or {PHONE} at {IP}" for _ in range(50)]
    vocab = train_bpe(texts, 400).get_vocab()
    learned = set(vocab) - {EMAIL, PHONE, IP}
    assert not [token for token in learned if any(word in token for word in ("EMAIL", "PHONE", "ADDRESS", "|||"))]
    assert "contact" in vocab  # merges were learned from the rest of the text


def test_training_is_deterministic_across_runs_and_processes():
    texts = rich_texts()
    first = train_bpe(texts, 500).to_str()
    assert train_bpe(texts, 500).to_str() == first
    # another process: other hash seeds, in Python and in the tokenizers library's hash maps
    script = "import json, sys; from steps.data import bpe; print(bpe.train_bpe(json.load(sys.stdin), 500).to_str())"
    root = Path(__file__).resolve().parents[2]
    other = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(texts), cwd=root, capture_output=True, text=True, check=True
    )
    assert other.stdout.rstrip("\n") == first
    assert train_bpe(rich_texts(seed=1), 500).to_str() != first


def test_min_frequency_stops_merging_rare_pairs():
    texts = ["aaaa bbbb"] * 3 + ["xyzq"]
    often = train_bpe(texts, 300, min_frequency=2).get_vocab()
    once = train_bpe(texts, 300, min_frequency=1).get_vocab()
    assert "aaaa" in often and "xyzq" not in often
    assert "xyzq" in once


def test_document_texts_reads_the_first_documents_in_shard_order(tmp_path, make_corpus):
    documents = make_corpus(tmp_path)
    ordered = [doc["text"] for doc_id, doc in sorted(documents.items(), key=lambda item: _shard_order(item[0]))]
    assert list(document_texts(tmp_path)) == ordered
    assert list(document_texts(tmp_path, max_documents=20)) == ordered[:20]
    with pytest.raises(FileNotFoundError, match="no document shards"):
        list(document_texts(tmp_path / "empty"))


def _shard_order(doc_id: str) -> tuple:
    source, rest = doc_id.split(",")
    shard, number = rest.split("-")
    return source, int(shard), int(number)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"vocab_size": 260}, "vocab_size: expected an integer >= 261"),
        ({"vocab_size": 512.0}, "vocab_size"),
        ({"vocab_size": True}, "vocab_size"),
        ({"vocab_size": 512, "min_frequency": 0}, "min_frequency"),
        ({"vocab_size": 512, "max_documents": 0}, "max_documents"),
        ({"vocab_size": 512, "max_documents": "10"}, "max_documents"),
    ],
)
def test_bad_settings_are_rejected_naming_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        check_bpe_config(**settings)


def test_smallest_vocabulary_holds_bytes_and_reserved_tokens():
    check_bpe_config(261)
    tokenizer = train_bpe(["abc"], 261)
    assert tokenizer.get_vocab_size() == 384 and tokenizer.id_to_token(383) == "<|endoftext|>"


def test_a_wrong_eos_id_for_a_trained_tokenizer_is_caught(rich_tokenizer):
    spec = bpe_spec("trained.json", 1000)  # ids of a 1024-token vocabulary
    with pytest.raises(TokenizerSpecError, match="trained.json: eos_token_id 1023"):
        check_special_tokens(rich_tokenizer, spec)


def _graph(corpus: Path, **tokenizer_settings) -> StepGraph:
    return StepGraph.from_params({
        "mix": {"type": "corpus_source", "source": {"name": "web", "type": "files", "paths": [str(corpus)]}},
        "tokenizer": {"type": "train_tokenizer", "documents": {"type": "ref", "ref": "mix"}, **tokenizer_settings},
        "tokenize": {
            "type": "tokenize_documents",
            "documents": {"type": "ref", "ref": "mix"},
            "tokenizer": {"type": "ref", "ref": "tokenizer"},
        },
    })


def write_shard(corpus: Path, texts: list[str]) -> None:
    rows = [{"id": str(n), "text": text, "source": "web"} for n, text in enumerate(texts)]
    write_jsonl_gz(corpus / "part-0.jsonl.gz", rows)


def test_step_trains_a_tokenizer_the_tokenize_step_accepts(tmp_path):
    corpus, texts = tmp_path / "corpus", rich_texts(40)
    write_shard(corpus, texts)
    graph = _graph(corpus, vocab_size=400, max_documents=30)
    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    trained = graph["tokenizer"].result(workspace)
    content = (trained.path / "tokenizer.json").read_bytes()
    assert trained.summary == {
        **tokenizer_summary(content, bpe_spec("tokenizer.json", 400)),
        **bpe_statistics(parse_tokenizer(content, "tokenizer.json")),
    }
    assert (trained.summary["vocab_size"], trained.summary["eos_token_id"], trained.summary["pad_token_id"]) == (
        512, 511, 1,
    )
    assert content == train_bpe(texts[:30], 400).to_str().encode()  # max_documents: the first 30

    tokens = graph["tokenize"].result(workspace)
    tokenizer = parse_tokenizer(content, "tokenizer.json")
    (token_file,) = sorted((tokens.path / "tokens").rglob("*.npy"))
    ids = np.fromfile(token_file, dtype=np.uint16)
    assert (ids == 511).sum() == len(texts) and ids.max() == 511
    documents = np.split(ids, np.flatnonzero(ids == 511) + 1)[:-1]
    assert [tokenizer.decode(doc[:-1].tolist()) for doc in documents] == texts

    assert _graph(corpus, vocab_size=400, max_documents=29)["tokenizer"].unique_id != graph["tokenizer"].unique_id


def test_step_rejects_a_bad_vocabulary_before_running(tmp_path):
    write_shard(tmp_path, ["a document"])
    with pytest.raises(ConfigurationError, match="TrainBpeTokenizer: vocab_size"):
        _graph(tmp_path, vocab_size=100)
