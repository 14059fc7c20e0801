import gzip
import math

import pytest
import torch
import zstandard

from steps.common.documents import write_jsonl_gz
from steps.evaluation import perplexity
from steps.evaluation.perplexity import bits_per_byte, document_windows, read_heldout
from steps.evaluation.scorer import encode

DOCS = [
    {"id": "a", "text": "the cat sat.", "source": "c4", "metadata": {"domain": "pets"}},
    {"id": "b", "text": "café au lait?", "source": "c4", "metadata": {"domain": "food"}},
    {"id": "c", "text": "a\nb", "source": "wiki"},
    {"id": "d", "text": "", "source": "wiki"},
]


def flatten(result, prefix=""):
    """A nested result as {"a/b/c": value}, so pytest.approx can compare it."""
    if isinstance(result, dict):
        return {k: v for key, value in result.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
    return {prefix: result}


def bigram_nll(model, tokenizer, text):
    tokens = [0, *tokenizer.encode(text)]
    return -sum(model.logprob(tokens[i - 1], tokens[i]) for i in range(1, len(tokens)))


def test_windows_predict_every_token_once_from_eos():
    assert document_windows([1, 2, 3, 4, 5], eos_token_id=0, window=2) == [[0, 1, 2], [2, 3, 4], [4, 5]]
    assert document_windows([1, 2], eos_token_id=0, window=2) == [[0, 1, 2]]
    assert document_windows([], eos_token_id=0, window=2) == []


@pytest.mark.parametrize("max_length", [3, 64])
def test_bits_per_byte_equals_a_hand_computation(bigram, char_tokenizer, max_length):
    result = bits_per_byte(bigram, char_tokenizer, DOCS, batch_size=2, max_length=max_length)
    nll = {doc["id"]: bigram_nll(bigram, char_tokenizer, doc["text"]) for doc in DOCS}
    c4_bytes = len("the cat sat.") + len("café au lait?") + 1  # "é" is two UTF-8 bytes
    c4 = result["sources"]["c4"]
    assert (c4["documents"], c4["tokens"], c4["bytes"]) == (2, 25, c4_bytes)
    assert c4["bits_per_byte"] == pytest.approx((nll["a"] + nll["b"]) / (math.log(2) * c4_bytes), rel=1e-6)
    assert c4["perplexity"] == pytest.approx(math.exp((nll["a"] + nll["b"]) / 25), rel=1e-6)
    wiki = result["sources"]["wiki"]
    assert (wiki["documents"], wiki["tokens"], wiki["bytes"]) == (2, 3, 3)
    overall = result["overall"]
    assert (overall["documents"], overall["tokens"], overall["bytes"]) == (4, 28, c4_bytes + 3)
    assert overall["nll_nats"] == pytest.approx(sum(nll.values()), rel=1e-6)
    assert overall["bits_per_byte"] == pytest.approx(sum(nll.values()) / (math.log(2) * (c4_bytes + 3)), rel=1e-6)
    assert set(result["domains"]) == {"c4"}
    assert result["domains"]["c4"]["food"]["nll_nats"] == pytest.approx(nll["b"], rel=1e-6)


def test_each_window_sees_only_its_own_tokens(micro_model, olmo_tokenizer):
    text = "Paloma scores every document on its own, in windows of the model's context length."
    result = bits_per_byte(micro_model, olmo_tokenizer, [{"text": text, "source": "s"}], max_length=8)
    tokens = encode(olmo_tokenizer, text)
    expected = 0.0
    with torch.no_grad():
        for window in document_windows(tokens, micro_model.config.eos_token_id, 8):
            logprobs = torch.log_softmax(micro_model(torch.tensor([window[:-1]])).double(), dim=-1)[0]
            expected -= sum(logprobs[i, window[i + 1]].item() for i in range(len(window) - 1))
    assert result["overall"]["tokens"] == len(tokens) > 16
    assert result["overall"]["nll_nats"] == pytest.approx(expected, abs=1e-3)


def test_a_uniform_model_gives_log2_vocab_bits_per_token(micro_model, olmo_tokenizer):
    docs = [{"text": "Bits per byte of a model that knows nothing.", "source": "s"}]
    with torch.no_grad():
        for parameter in micro_model.parameters():
            parameter.zero_()  # every logit 0: uniform over the padded embedding
    overall = bits_per_byte(micro_model, olmo_tokenizer, docs)["overall"]
    uniform = math.log2(micro_model.config.embedding_size) * overall["tokens"] / overall["bytes"]
    assert overall["bits_per_byte"] == pytest.approx(uniform, rel=1e-6)
    assert overall["perplexity"] == pytest.approx(micro_model.config.embedding_size, rel=1e-5)


def test_an_untrained_model_is_close_to_uniform(micro_model, olmo_tokenizer):
    docs = [{"text": "An untrained model is only a little better or worse than uniform guessing.", "source": "s"}]
    overall = bits_per_byte(micro_model, olmo_tokenizer, docs)["overall"]
    uniform = math.log2(micro_model.config.embedding_size) * overall["tokens"] / overall["bytes"]
    assert 0.9 * uniform < overall["bits_per_byte"] < 1.2 * uniform


def test_streaming_in_small_chunks_changes_nothing(bigram, char_tokenizer, monkeypatch):
    whole = bits_per_byte(bigram, char_tokenizer, DOCS, batch_size=2, max_length=4)
    monkeypatch.setattr(perplexity, "BUFFERED_BATCHES", 1)
    chunked = bits_per_byte(bigram, char_tokenizer, iter(DOCS), batch_size=1, max_length=4)
    assert flatten(chunked) == pytest.approx(flatten(whole))


def test_read_heldout_reads_every_source_folder(tmp_path, bigram, char_tokenizer):
    for source in ("c4", "wiki"):
        write_jsonl_gz(tmp_path / source / "part-00000.jsonl.gz", [d for d in DOCS if d["source"] == source])
    assert sorted(doc["id"] for doc in read_heldout(tmp_path)) == ["a", "b", "c", "d"]
    from_files = bits_per_byte(bigram, char_tokenizer, read_heldout(tmp_path))
    assert flatten(from_files) == pytest.approx(flatten(bits_per_byte(bigram, char_tokenizer, DOCS)))
    with pytest.raises(FileNotFoundError, match="no document shards"):
        list(read_heldout(tmp_path / "missing"))


def test_a_document_without_source_is_named(bigram, char_tokenizer):
    with pytest.raises(ValueError, match="document 1: expected a dict with 'text' and 'source'"):
        bits_per_byte(bigram, char_tokenizer, [DOCS[0], {"text": "x"}])


def write_lines(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def test_paloma_sets_are_read_from_files_or_folders_with_their_subdomains(tmp_path):
    folder = tmp_path / "c4_100_domains" / "val"
    folder.mkdir(parents=True)
    write_lines(folder / "val_pets.jsonl.gz", ['{"text": "the cat sat.", "subdomain": "pets", "id": "1"}', ""])
    write_lines(folder / "val_food.jsonl.gz", ['{"text": "café au lait?", "metadata": {"domain": "food"}}'])
    docs = list(perplexity.read_paloma_documents(tmp_path / "c4_100_domains", "c4"))
    assert docs == [
        {"text": "café au lait?", "source": "c4", "metadata": {"domain": "food"}},
        {"text": "the cat sat.", "source": "c4", "metadata": {"domain": "pets"}},
    ]
    assert list(perplexity.read_paloma_documents(folder / "val_pets.jsonl.gz", "pets")) == [
        {"text": "the cat sat.", "source": "pets", "metadata": {"domain": "pets"}}
    ]


def test_a_paloma_file_is_read_by_its_bytes_whatever_its_name_and_a_leading_bom_skipped(tmp_path):
    record = b'{"text": "the cat sat.", "subdomain": "pets"}\n'
    (tmp_path / "a.jsonl").write_bytes(gzip.compress(b"\xef\xbb\xbf" + record))
    (tmp_path / "b.jsonl.gz").write_bytes(b"\xef\xbb\xbf" + record)
    (tmp_path / "c.jsonl.gz").write_bytes(zstandard.ZstdCompressor().compress(record))
    assert list(perplexity.read_paloma_documents(tmp_path, "c4")) == 3 * [
        {"text": "the cat sat.", "source": "c4", "metadata": {"domain": "pets"}}
    ]


def test_a_bad_paloma_record_names_its_file_and_line(tmp_path):
    path = tmp_path / "set.jsonl.gz"
    write_lines(path, ['{"text": "ok"}', '{"txt": "no text field"}'])
    with pytest.raises(ValueError, match=r"set\.jsonl\.gz:2: expected a JSON object with a string 'text'"):
        list(perplexity.read_paloma_documents(path, "set"))
    with pytest.raises(FileNotFoundError, match="no such Paloma-format file or folder"):
        list(perplexity.read_paloma_documents(tmp_path / "missing", "set"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .*jsonl.* files under it"):
        list(perplexity.read_paloma_documents(tmp_path / "empty", "set"))
