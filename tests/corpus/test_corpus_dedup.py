"""Bloom filter sizing and accuracy; URL, exact and paragraph dedup across sources."""
import math

import pytest

from steps.common.documents import list_shards, read_documents, write_jsonl_gz
from steps.corpus.config import ConfigError
from steps.corpus.dedup import BloomFilter, DedupConfig, bloom_size, deduplicate


def test_bloom_size_formula():
    bits, hashes = bloom_size(20_000, 1e-2)
    assert bits == math.ceil(-20_000 * math.log(1e-2) / math.log(2) ** 2) == 191_702
    assert hashes == math.ceil(bits / 20_000 * math.log(2)) == 7
    assert bloom_size(60_000_000_000, 1e-6)[1] == 20  # Dolma's setting
    with pytest.raises(ValueError):
        bloom_size(10, 1.5)


def test_bloom_false_positive_rate_is_as_configured(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 20_000, 1e-2)
    for i in range(20_000):
        bloom.add(f"member-{i}")
    assert all(f"member-{i}" in bloom for i in range(20_000))  # never a false negative
    false_positives = sum(f"stranger-{i}" in bloom for i in range(20_000))
    assert 0.005 < false_positives / 20_000 < 0.02
    assert (tmp_path / "f.bloom").stat().st_size == (191_702 + 7) // 8


def test_bloom_filter_is_a_reusable_file(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 100, 1e-6)
    assert bloom.add("paragraph") is False and bloom.add("paragraph") is True
    bloom.flush()
    reopened = BloomFilter.open(tmp_path / "f.bloom")
    assert "paragraph" in reopened and "other" not in reopened
    assert (reopened.bits, reopened.hashes) == (bloom.bits, bloom.hashes)


def doc(doc_id, text, url=None):
    return {"id": doc_id, "text": text, "source": "s", **({"metadata": {"url": url}} if url else {})}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "in"
    write_jsonl_gz(root / "b-web" / "b-00000.jsonl.gz", [
        doc("b1", "Shared paragraph one.\nOnly in b1.", "https://x/1"),  # URL seen in a-books: removed
        doc("b2", "A text that a-books also has.", "https://x/b2"),  # exact copy: removed
        doc("b3", "Shared paragraph two.\n\nShared paragraph one.", "https://x/b3"),  # every paragraph seen
        doc("b4", "Fresh start.\nShared paragraph two.\nFresh end.", "https://x/b4"),
    ])
    write_jsonl_gz(root / "a-books" / "a-00000.jsonl.gz", [
        doc("a1", "Shared paragraph one.\nShared paragraph two.", "https://x/1"),
        doc("a2", "A text that a-books also has."),
    ])
    write_jsonl_gz(root / "a-books" / "a-00001.jsonl.gz", [
        doc("a3", "A text that a-books also has.", "https://x/a3"),  # exact copy of a2 (earlier shard)
    ])
    return root


def kept_docs(out, source):
    return {d["id"]: d["text"] for path in list_shards(out / "documents" / source) for _, d in read_documents(path)}


def test_first_occurrence_across_sources_is_kept(corpus, tmp_path):
    stats = deduplicate(corpus, tmp_path / "out", {})
    assert kept_docs(tmp_path / "out", "a-books") == {
        "a1": "Shared paragraph one.\nShared paragraph two.", "a2": "A text that a-books also has."}
    assert kept_docs(tmp_path / "out", "b-web") == {"b4": "Fresh start.\nFresh end."}
    a, b = stats["sources"]["a-books"], stats["sources"]["b-web"]
    assert a == {"documents_in": 3, "documents_without_url": 1, "removed_url": 0, "removed_exact": 1,
                 "paragraphs_removed": 0, "documents_emptied": 0, "documents_kept": 2}
    assert b == {"documents_in": 4, "documents_without_url": 0, "removed_url": 1, "removed_exact": 1,
                 "paragraphs_removed": 3, "documents_emptied": 1, "documents_kept": 1}
    for s in (a, b):
        assert s["documents_in"] == s["removed_url"] + s["removed_exact"] + s["documents_emptied"] + s["documents_kept"]
    assert stats["bloom"]["items"] > 0 and stats["bloom"]["hashes"] == 20
    assert not list((tmp_path / "out").glob(".bloom-*"))  # the scratch filter is gone


def test_each_dedup_kind_can_be_switched_off(corpus, tmp_path):
    stats = deduplicate(corpus, tmp_path / "out", {"url": False, "paragraph": False})
    b = stats["sources"]["b-web"]
    assert (b["removed_url"], b["removed_exact"], b["paragraphs_removed"], b["documents_kept"]) == (0, 1, 0, 3)
    assert kept_docs(tmp_path / "out", "b-web")["b1"] == "Shared paragraph one.\nOnly in b1."


def test_paragraph_dedup_skips_code_sources_by_default(tmp_path):
    lines = "def f():\n    return None\n"
    write_jsonl_gz(tmp_path / "in" / "python-code" / "c.jsonl.gz", [doc("f", lines), doc("g", "# g\n" + lines)])
    stats = deduplicate(tmp_path / "in", tmp_path / "out", {})
    assert stats["sources"]["python-code"]["paragraphs_removed"] == 0
    assert kept_docs(tmp_path / "out", "python-code")["g"] == "# g\n" + lines
    stats = deduplicate(tmp_path / "in", tmp_path / "all", {"paragraph_sources": "*"})
    assert stats["sources"]["python-code"]["paragraphs_removed"] == 2
    assert kept_docs(tmp_path / "all", "python-code")["g"] == "# g\n"


def test_dedup_config_errors():
    with pytest.raises(ConfigError, match=r"dedup: unknown key\(s\) 'urls'"):
        DedupConfig.from_dict({"urls": True})
    with pytest.raises(ConfigError, match=r"dedup\.false_positive_rate"):
        DedupConfig.from_dict({"false_positive_rate": 0})
    with pytest.raises(ConfigError, match=r"dedup\.paragraph_sources"):
        DedupConfig.from_dict({"paragraph_sources": "code"})
