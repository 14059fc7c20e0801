"""The jobs of the dedup stage (:mod:`steps.corpus.dedup` drives them), in a module light to import: every worker
process or Ray task that runs a job imports it, so it needs numpy and the documents reader, never the model or Tango.

The work folder of a run (:class:`DedupRun`, every path below it):

- ``run.json``: the run's identity (config, partition count) and its shard keys in global order;
- ``evaluation.npy``: the evaluation paragraphs' digests, sorted (with decontamination);
- ``items/<shard>/<kind>.npy``: a shard's items of one kind as :data:`ITEM` records (digest, document, line),
  grouped by partition, in document order within each; ``items/<shard>/offsets.npy``: per kind (in
  :data:`KINDS` order) ``partitions + 1`` offsets, partition ``p`` being rows ``offsets[k, p]:offsets[k, p + 1]``;
  ``items/<shard>/text_bytes.npy``: each document's UTF-8 text size;
- ``repeats/<kind>/<p>.npy``: partition ``p``'s items that repeat an earlier one, as :data:`REPEAT` records, in
  global order;
- ``fates/<stage>/<shard>.npy``: each document's fate (:data:`ALIVE` or why it was removed) after the hash phase
  (``hash``), the url round and the text round; ``alive/<stage>/<shard>.npy``: the same as one bit per document
  (alive or not), all a partition job reads of every shard (an eighth of the fates);
- ``done/<phase>/...``: the markers of finished jobs.
"""
from __future__ import annotations

import gzip
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from steps.common.compressed import open_shard
from steps.common.documents import GZIP_LEVEL, encode_document, read_documents
from steps.common.files import replacing
from steps.corpus.decontamination import is_long

KINDS = ("url", "text", "paragraph")  # the rounds, in cascade order; also the digests' personalisation
ALIVE, CONTAMINATED, REMOVED_URL, REMOVED_EXACT = range(4)  # a document's fate (uint8)
REMOVED_BY = {"url": REMOVED_URL, "text": REMOVED_EXACT}  # the rounds that remove whole documents
ITEM = np.dtype([("digest", "<u8", (2,)), ("doc", "<u4"), ("line", "<u4")])  # line: of a paragraph, else 0
REPEAT = np.dtype([("shard", "<u4"), ("doc", "<u4"), ("line", "<u4")])  # shard: its index in global order


def item_digests(items: Sequence[str], kind: str) -> np.ndarray:
    """The items' 128-bit blake2b digests as an ``(n, 2)`` uint64 array, personalised by ``kind``
    (so a URL never equals a paragraph); the same on every process and machine."""
    fresh = hashlib.blake2b(digest_size=16, person=kind.encode()).copy  # a copy is cheaper than a new hash
    digests = []
    for item in items:
        digest = fresh()
        digest.update(item.encode("utf-8", "surrogatepass"))
        digests.append(digest.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)


def first_occurrences(digests: np.ndarray) -> np.ndarray:
    """Whether each digest is the first of its equal digests in the array."""
    first = np.ones(len(digests), dtype=bool)
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # stable: equal digests stay in array order
    ordered = digests[order]
    first[order[1:]] = np.any(ordered[1:] != ordered[:-1], axis=1)
    return first


def digest_set(digests: np.ndarray) -> np.ndarray:
    """The distinct digests, sorted, as 16-byte values (for :func:`contains`)."""
    return np.unique(np.ascontiguousarray(digests, dtype="<u8").view("V16").ravel())


def contains(members: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """Whether each digest is one of ``members`` (from :func:`digest_set`): exact, all 128 bits compared."""
    return np.isin(np.ascontiguousarray(digests, dtype="<u8").view("V16").ravel(), members)


def save_array(path: Path, array: np.ndarray) -> None:
    with replacing(path) as handle:
        np.save(handle, array, allow_pickle=False)


def save_json(path: Path, data: Any) -> None:
    with replacing(path) as handle:
        handle.write(json.dumps(data).encode("utf-8"))


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def run_file(root: Path) -> Path:
    """A work folder's ``run.json``."""
    return root / "run.json"


@dataclass(frozen=True)
class DedupRun:
    """What every job of a run knows: its work folder, its partition count and the kinds it dedups."""

    root: Path
    partitions: int
    kinds: tuple[str, ...]  # enabled, in KINDS order

    @property
    def identity(self) -> Path:
        return run_file(self.root)

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.npy"

    def shard_keys(self) -> list[str]:
        """The shards' keys in global order (source, then shard)."""
        return json.loads(self.identity.read_text())["shards"]

    def items(self, key: str, name: str) -> Path:
        return self.root / "items" / key / f"{name}.npy"

    def repeats(self, kind: str, partition: int) -> Path:
        return self.root / "repeats" / kind / f"{partition:05d}.npy"

    def fates(self, stage: str, key: str) -> Path:
        return self.root / "fates" / stage / f"{key}.npy"

    def alive(self, stage: str, key: str) -> Path:
        return self.root / "alive" / stage / f"{key}.npy"

    def save_fates(self, stage: str, key: str, fates: np.ndarray) -> None:
        """A shard's fates after ``stage``, and which documents are alive, packed in bits."""
        save_array(self.alive(stage, key), np.packbits(fates == ALIVE))
        save_array(self.fates(stage, key), fates)

    def alive_documents(self, stage: str, key: str, documents: np.ndarray) -> np.ndarray:
        """Whether each of a shard's ``documents`` (indices) is alive after ``stage``."""
        packed = load_array(self.alive(stage, key))
        return (packed[documents >> 3] >> (7 - (documents & 7)).astype(np.uint8)) & 1 == 1

    def markers(self, phase: str) -> Path:
        return self.root / "done" / phase

    def fates_before(self, stage: str) -> str:
        """Whose fates ``stage`` (a kind or "write") starts from: the last round before it that removes documents,
        else the hash phase."""
        earlier = KINDS[:KINDS.index(stage)] if stage in KINDS else KINDS
        return next((kind for kind in reversed(earlier) if kind in REMOVED_BY and kind in self.kinds), "hash")

    def partition_items(self, key: str, kind: str, partition: int) -> np.ndarray:
        """Partition ``partition`` of a shard's items of ``kind`` (read alone, from a memory map)."""
        start, end = load_array(self.items(key, "offsets"))[KINDS.index(kind), partition:partition + 2]
        return np.array(load_array(self.items(key, kind), mmap=True)[start:end])


# --- the hash phase: one job per shard ----------------------------------------------------------------


@dataclass(frozen=True)
class HashJob:
    run: DedupRun
    source: str
    path: Path
    stem: str
    paragraphs: bool  # whether paragraph dedup applies to the source
    min_words: int | None  # decontamination: paragraphs of this many words are looked up (None: off)

    @property
    def key(self) -> str:
        return f"{self.source}/{self.stem}"


def _records(digests: np.ndarray, docs: Sequence[int], lines: Sequence[int] | int = 0) -> np.ndarray:
    items = np.empty(len(digests), dtype=ITEM)
    items["digest"], items["doc"], items["line"] = digests, docs, lines
    return items


def _paragraph_items(paragraph_lines: list[list[str]]) -> np.ndarray:
    """Every non-blank paragraph of the documents (their stripped lines), as items."""
    counts = np.array([len(stripped) for stripped in paragraph_lines], dtype=np.int64)
    paragraphs = [paragraph for stripped in paragraph_lines for paragraph in stripped]
    present = np.array([bool(paragraph) for paragraph in paragraphs], dtype=bool)
    docs = np.repeat(np.arange(len(counts)), counts)
    lines = np.arange(len(paragraphs)) - np.repeat(np.cumsum(counts) - counts, counts)
    digests = item_digests(list(itertools.compress(paragraphs, present)), "paragraph")
    return _records(digests, docs[present], lines[present])


def _contaminated(run: DedupRun, paragraph_lines: list[list[str]], min_words: int) -> np.ndarray:
    """The documents holding a long paragraph of an evaluation set."""
    owners, long = [], []
    for doc, stripped in enumerate(paragraph_lines):
        found = [paragraph for paragraph in stripped if is_long(paragraph, min_words)]
        owners += [doc] * len(found)
        long += found
    hits = contains(load_array(run.evaluation), item_digests(long, "paragraph"))
    return np.unique(np.array(owners, dtype=np.intp)[hits])


def _save_by_partition(run: DedupRun, key: str, items: dict[str, np.ndarray]) -> None:
    """Save each kind's items grouped by partition (digest mod partitions), in document order within each."""
    offsets = np.zeros((len(KINDS), run.partitions + 1), dtype=np.int64)
    for kind, records in items.items():
        partition = (records["digest"][:, 0] % np.uint64(run.partitions)).astype(np.intp)
        save_array(run.items(key, kind), records[np.argsort(partition, kind="stable")])
        offsets[KINDS.index(kind), 1:] = np.cumsum(np.bincount(partition, minlength=run.partitions))
    save_array(run.items(key, "offsets"), offsets)


def hash_shard(job: HashJob) -> dict[str, int]:
    """Read a shard once: save its items of every kind by partition, its documents' text sizes, and their fates
    (contaminated or alive). Returns documents_in and documents_without_url."""
    run = job.run
    docs = [doc for _, doc in read_documents(job.path)]
    texts = [doc["text"] for doc in docs]
    paragraph_lines = ([[line.strip() for line in text.split("\n")] for text in texts]
                       if job.paragraphs or job.min_words else [])
    fates = np.full(len(docs), ALIVE, dtype=np.uint8)
    if job.min_words:
        fates[_contaminated(run, paragraph_lines, job.min_words)] = CONTAMINATED
    items, without_url = {}, 0
    if "url" in run.kinds:
        urls = [(index, (doc.get("metadata") or {}).get("url")) for index, doc in enumerate(docs)]
        urls = [(index, str(url)) for index, url in urls if url is not None]
        items["url"] = _records(item_digests([url for _, url in urls], "url"), [index for index, _ in urls])
        without_url = len(docs) - len(urls)
    if "text" in run.kinds:
        items["text"] = _records(item_digests(texts, "text"), range(len(docs)))
    if "paragraph" in run.kinds:
        items["paragraph"] = _paragraph_items(paragraph_lines if job.paragraphs else [])
    _save_by_partition(run, job.key, items)
    save_array(run.items(job.key, "text_bytes"), np.array([len(text.encode("utf-8")) for text in texts], np.int64))
    run.save_fates("hash", job.key, fates)
    return {"documents_in": len(docs), "documents_without_url": without_url}


# --- the rounds: one job per partition and kind -------------------------------------------------------


@dataclass(frozen=True)
class PartitionJob:
    run: DedupRun
    kind: str
    partition: int

    @property
    def key(self) -> str:
        return f"{self.partition:05d}"


def decide_partition(job: PartitionJob) -> dict[str, int]:
    """Decide first occurrences among one partition's items of one kind, over the documents still alive, in
    global order; save the repeats. Returns the partition's items and how many are distinct."""
    run, kind, parts, shards = job.run, job.kind, [], []
    for shard, key in enumerate(run.shard_keys()):
        items = run.partition_items(key, kind, job.partition)
        items = items[run.alive_documents(run.fates_before(kind), key, items["doc"])]
        parts.append(items)
        shards.append(np.full(len(items), shard, dtype=np.uint32))
    items, shard_of = np.concatenate(parts), np.concatenate(shards)
    repeat = ~first_occurrences(items["digest"])
    repeats = np.empty(np.count_nonzero(repeat), dtype=REPEAT)
    repeats["shard"], repeats["doc"], repeats["line"] = shard_of[repeat], items["doc"][repeat], items["line"][repeat]
    save_array(run.repeats(kind, job.partition), repeats)
    return {"items": len(items), "distinct": len(items) - len(repeats)}


def all_repeats(run: DedupRun, kind: str) -> list[np.ndarray]:
    """Every partition's repeats of ``kind``, memory-mapped."""
    return [load_array(run.repeats(kind, partition), mmap=True) for partition in range(run.partitions)]


def shard_repeats(repeats: list[np.ndarray], shard: int) -> np.ndarray:
    """One shard's repeats, from every partition's (:func:`all_repeats`)."""
    bounds = [np.searchsorted(part["shard"], [shard, shard + 1]) for part in repeats]
    return np.concatenate([part[start:end] for part, (start, end) in zip(repeats, bounds)])


def settle_fates(run: DedupRun, kind: str) -> None:
    """Save each shard's fates after the ``kind`` round: those before it, with the documents whose item repeats
    marked removed. Derived from the round's outputs alone, so it may be redone."""
    before, repeats = run.fates_before(kind), all_repeats(run, kind)
    for shard, key in enumerate(run.shard_keys()):
        fates = load_array(run.fates(before, key))
        fates[shard_repeats(repeats, shard)["doc"]] = REMOVED_BY[kind]
        run.save_fates(kind, key, fates)


# --- the write phase: one job per shard ---------------------------------------------------------------


@dataclass(frozen=True)
class WriteJob:
    hashed: HashJob  # the same shard's hash job
    shard: int  # index in global order
    output: Path

    @property
    def key(self) -> str:
        return self.hashed.key


def _removed_lines(run: DedupRun, job: WriteJob) -> dict[int, set[int]]:
    """The lines each document loses to paragraph dedup."""
    removed: dict[int, set[int]] = {}
    if job.hashed.paragraphs and "paragraph" in run.kinds:
        repeats = shard_repeats(all_repeats(run, "paragraph"), job.shard)
        for doc, line in zip(repeats["doc"].tolist(), repeats["line"].tolist()):
            removed.setdefault(doc, set()).add(line)
    return removed


def _without_lines(line: bytes, drop: set[int]) -> tuple[bytes, int]:
    """A document's jsonl line without the text lines ``drop``, serialised as every stage writes; its text size."""
    doc = json.loads(line)
    doc["text"] = "\n".join(text for number, text in enumerate(doc["text"].split("\n")) if number not in drop)
    return encode_document(doc).encode("utf-8"), len(doc["text"].encode("utf-8"))


def _write_gz(path: Path, lines: list[bytes]) -> None:
    """Write jsonl lines as a deterministic gzip file (no timestamp), atomically; no lines leave no file."""
    if not lines:
        path.unlink(missing_ok=True)
        return
    data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=GZIP_LEVEL, mtime=0)
    with replacing(path) as handle:
        handle.write(data)


def write_shard(job: WriteJob) -> dict[str, int]:
    """Apply the decisions to a shard and write its kept documents: the lines of those kept whole as they were read,
    those that lost paragraphs serialised again. Returns the shard's stats but documents_without_url."""
    run = job.hashed.run
    fates = load_array(run.fates(run.fates_before("write"), job.key))
    removed = _removed_lines(run, job)
    alive = fates == ALIVE
    if job.hashed.paragraphs and "paragraph" in run.kinds:  # emptied: every non-blank paragraph removed (or none at all)
        paragraphs = np.bincount(load_array(run.items(job.key, "paragraph"))["doc"], minlength=len(fates))
        lost = np.zeros(len(fates), dtype=np.int64)
        lost[list(removed)] = [len(lines) for lines in removed.values()]
        emptied = alive & (paragraphs == lost)
    else:
        emptied = np.zeros(len(fates), dtype=bool)
    keep, text_bytes = (alive & ~emptied).tolist(), load_array(run.items(job.key, "text_bytes")).tolist()
    kept, bytes_kept, index = [], 0, 0
    with open_shard(str(job.hashed.path)) as shard:  # the lines read_documents reads: the non-blank ones
        for _, raw, _ in shard.lines():
            line = raw.strip()
            if not line:
                continue
            if keep[index]:
                size = text_bytes[index]
                if index in removed:
                    line, size = _without_lines(line, removed[index])
                kept.append(line)
                bytes_kept += size
            index += 1
    _write_gz(job.output, kept)
    return {"documents_in": len(fates), "removed_contaminated": int(np.count_nonzero(fates == CONTAMINATED)),
            "removed_url": int(np.count_nonzero(fates == REMOVED_URL)),
            "removed_exact": int(np.count_nonzero(fates == REMOVED_EXACT)),
            "paragraphs_removed": sum(len(lines) for lines in removed.values()),
            "documents_emptied": int(np.count_nonzero(emptied)), "documents_kept": len(kept), "bytes_kept": bytes_kept}
