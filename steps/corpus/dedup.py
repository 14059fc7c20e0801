"""The dedup stage: URL, exact-document and paragraph deduplication through one Bloom filter.

Sources are read in sorted name order and their shards in sorted order, so the first occurrence of
a URL, a text or a paragraph in that order is the one kept, across all sources. A Bloom filter never
misses a repeat but may, at its configured false-positive rate, take a new item for a repeat.

Paragraphs are the lines of ``text.split("\n")``; blank ones are never removed. By default paragraph
dedup skips sources with "code" in their name, whose lines (``return None``, ``}``) repeat by nature.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from steps.common.documents import read_documents, write_jsonl_gz
from steps.corpus.config import Selector, build, check_selector, not_code, require, selects
from steps.corpus.layout import DOCUMENTS_DIR, shard_stem, source_shards
from steps.corpus.stats import total_stats

logger = logging.getLogger(__name__)


def bloom_size(expected_items: int, false_positive_rate: float) -> tuple[int, int]:
    """``(bits m, hashes k)`` for ``n`` items at rate ``p``: m = -n ln p / (ln 2)^2, k = ceil(m/n ln 2)."""
    if expected_items < 1 or not 0 < false_positive_rate < 1:
        raise ValueError(f"need expected_items >= 1 and 0 < false_positive_rate < 1, "
                         f"got {expected_items} and {false_positive_rate}")
    bits = math.ceil(-expected_items * math.log(false_positive_rate) / math.log(2) ** 2)
    return bits, math.ceil(bits / expected_items * math.log(2))


class BloomFilter:
    """A Bloom filter whose bit array is a file (numpy memmap), so it can outgrow memory and be reused.

    Item positions come from blake2b (deterministic across processes and machines) by double
    hashing: position_i = (h1 + i * h2) mod m. Parameters live next to the bits in ``<path>.json``.
    """

    def __init__(self, path: str | Path, bits: int, hashes: int, mode: str = "r+"):
        self.path, self.bits, self.hashes = Path(path), bits, hashes
        self.inserted = 0  # items added through this handle that were not (probably) present
        self._array = np.memmap(self.path, dtype=np.uint8, mode=mode, shape=((bits + 7) // 8,))
        self._bytes = memoryview(self._array)  # plain-int indexing: much faster than numpy per item

    @classmethod
    def create(cls, path: str | Path, expected_items: int, false_positive_rate: float) -> "BloomFilter":
        bits, hashes = bloom_size(expected_items, false_positive_rate)
        params = {"bits": bits, "hashes": hashes, "expected_items": expected_items,
                  "false_positive_rate": false_positive_rate}
        Path(f"{path}.json").write_text(json.dumps(params, sort_keys=True))
        return cls(path, bits, hashes, mode="w+")

    @classmethod
    def open(cls, path: str | Path, read_only: bool = True) -> "BloomFilter":
        params = json.loads(Path(f"{path}.json").read_text())
        return cls(path, params["bits"], params["hashes"], mode="r" if read_only else "r+")

    def _positions(self, item: str) -> Iterator[tuple[int, int]]:
        """(byte offset, bit mask) of each of the item's bits."""
        digest = hashlib.blake2b(item.encode("utf-8"), digest_size=16).digest()
        h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        for i in range(self.hashes):
            position = (h1 + i * h2) % self.bits
            yield position >> 3, 1 << (position & 7)

    def __contains__(self, item: str) -> bool:
        return all(self._bytes[offset] & mask for offset, mask in self._positions(item))

    def add(self, item: str) -> bool:
        """Insert ``item``; return whether it was (probably) present already."""
        present = True
        for offset, mask in self._positions(item):
            value = self._bytes[offset]
            if not value & mask:
                present = False
                self._bytes[offset] = value | mask
        self.inserted += not present
        return present

    def flush(self) -> None:
        self._array.flush()


@dataclass(frozen=True)
class DedupConfig:
    url: bool = True
    exact: bool = True
    paragraph: bool = True
    paragraph_sources: Selector = None  # default: sources without "code" in the name (code lines repeat)
    expected_items: int = 1_000_000  # documents (per enabled document key) plus paragraphs
    false_positive_rate: float = 1e-6

    def __post_init__(self) -> None:
        check_selector(self.paragraph_sources, "dedup.paragraph_sources")
        require(self.expected_items >= 1, "dedup.expected_items", "a positive integer", self.expected_items)
        require(0 < self.false_positive_rate < 1, "dedup.false_positive_rate", "a number in (0, 1)",
                self.false_positive_rate)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DedupConfig":
        return build(cls, data, "dedup")

    def dedups_paragraphs(self, source: str) -> bool:
        return self.paragraph and selects(self.paragraph_sources, source, not_code)


def _empty_stats() -> dict[str, int]:
    return dict.fromkeys(("documents_in", "documents_without_url", "removed_url", "removed_exact",
                          "paragraphs_removed", "documents_emptied", "documents_kept"), 0)


def _dedup_document(
    doc: dict[str, Any], source: str, seen: BloomFilter, config: DedupConfig, stats: dict[str, int]
) -> str | None:
    """The document's text after paragraph dedup, or None when it is removed (counted in ``stats``)."""
    text = doc["text"]
    if config.url:
        url = (doc.get("metadata") or {}).get("url")
        if url is None:
            stats["documents_without_url"] += 1
        elif seen.add(f"url\0{url}"):
            stats["removed_url"] += 1
            return None
    if config.exact and seen.add(f"text\0{text}"):
        stats["removed_exact"] += 1
        return None
    if config.dedups_paragraphs(source):
        paragraphs = text.split("\n")
        kept = [p for p in paragraphs if not p.strip() or not seen.add(f"paragraph\0{p.strip()}")]
        stats["paragraphs_removed"] += len(paragraphs) - len(kept)
        if len(kept) < len(paragraphs):
            text = "\n".join(kept)
        if not text.strip():
            stats["documents_emptied"] += 1
            return None
    return text


def deduplicate(
    input_dir: str | Path, output_dir: str | Path, config: DedupConfig | Mapping[str, Any]
) -> dict[str, Any]:
    """Deduplicate the documents directory ``input_dir`` into ``output_dir/documents/<source>/<shard>``.

    Returns ``{"sources": {source: stats}, "total": stats, "bloom": {items, expected_items, bits,
    hashes}}``. Stats: documents_in, documents_without_url (passed through URL dedup), removed_url,
    removed_exact, paragraphs_removed, documents_emptied (every paragraph a repeat) and
    documents_kept, with documents_in == removed_url + removed_exact + documents_emptied + documents_kept.
    """
    config = DedupConfig.from_dict(config) if isinstance(config, Mapping) else config
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    per_source: dict[str, dict[str, int]] = {}
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".bloom-") as scratch:
        seen = BloomFilter.create(Path(scratch) / "seen.bloom", config.expected_items, config.false_positive_rate)
        for source, shards in source_shards(input_dir).items():
            stats = per_source[source] = _empty_stats()
            for shard in shards:
                kept = []
                for _, doc in read_documents(shard):
                    stats["documents_in"] += 1
                    text = _dedup_document(doc, source, seen, config, stats)
                    if text is not None:
                        kept.append({**doc, "text": text})
                stats["documents_kept"] += len(kept)
                if kept:
                    stem = shard_stem(shard, input_dir / source)
                    write_jsonl_gz(output_dir / DOCUMENTS_DIR / source / f"{stem}.jsonl.gz", kept)
        bloom = {"items": seen.inserted, "expected_items": config.expected_items, "bits": seen.bits,
                 "hashes": seen.hashes}
        del seen  # release the memmap before its folder goes
    if bloom["items"] > config.expected_items:
        logger.warning("dedup saw %d items, more than expected_items=%d: the false-positive rate is above %g",
                       bloom["items"], config.expected_items, config.false_positive_rate)
    return {"sources": per_source, "total": total_stats(per_source), "bloom": bloom}
