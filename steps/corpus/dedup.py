"""The dedup stage: URL, exact-document and paragraph deduplication through one Bloom filter.

Sources are read in sorted name order and their shards in sorted order, so the first occurrence of
a URL, a text or a paragraph in that order is the one kept, across all sources. A Bloom filter never
misses a repeat but may, at its configured false-positive rate, take a new item for a repeat.

Paragraphs are the lines of ``text.split("\n")``; blank ones are never removed. By default paragraph
dedup skips sources with "code" in their name, whose lines (``return None``, ``}``) repeat by nature.
Within a document the URL comes first, then the exact text, then the paragraphs: a document removed
by its URL adds neither its text nor its paragraphs to the filter, one removed as an exact copy adds
no paragraphs.

The filter decides a whole shard at once, with numpy: an item (its 128-bit blake2b digest) is a
repeat when the filter held all its bits before the shard, or when an equal item came earlier in the
shard; then the shard's new items are added. A filter updated item by item decides the same, except
that it may also take an item for a repeat because bits set by *other* new items of the same shard
happen to cover it. Deciding by shard never makes that kind of false positive, so its
false-positive rate can only be lower.

With a work folder the run survives a crash. Before a shard sets its bits, it saves which ones it
sets (its new items' digests and which of their bits were unset) as an undo log; once the shard's
output is in place, the filter is flushed, the shard's stats are stored as a marker and the undo log
is deleted. A re-run clears the bits of every shard without a marker (the latest first), which leaves
the filter as the finished shards left it, and skips the shards with a marker.

With ``num_workers > 1``, worker processes read and hash shards ahead and write the outputs, while
this process queries and updates the filter in shard order, so the output does not depend on
``num_workers``. Memory holds a few shards at a time, whatever the size of the corpus.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from collections import deque
from contextlib import nullcontext
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from steps.common.documents import read_documents, write_jsonl_gz
from steps.common.tasks import get_task_spec
from olmo_model.config import Config, ConfigError, require
from steps.corpus.config import Selector, check_selector, not_code, selects
from steps.corpus.decontamination import DEFAULT_MIN_WORDS, is_long, task_paragraphs
from steps.corpus.layout import DOCUMENTS_DIR, shard_stem, source_shards
from steps.corpus.stats import merge_stats, total_stats

logger = logging.getLogger(__name__)

ITEM_HASH = "blake2b-128"  # stored with a filter: a filter made with another hash cannot be reused
MAX_BITS = 2**63  # bit positions are computed in uint64 without overflow below this
STATE_FORMAT = 1  # of a work folder; a change starts the run over


def bloom_size(expected_items: int, false_positive_rate: float) -> tuple[int, int]:
    """``(bits m, hashes k)`` for ``n`` items at rate ``p``: m = -n ln p / (ln 2)^2, k = ceil(m/n ln 2)."""
    if expected_items < 1 or not 0 < false_positive_rate < 1:
        raise ValueError(f"need expected_items >= 1 and 0 < false_positive_rate < 1, "
                         f"got {expected_items} and {false_positive_rate}")
    bits = math.ceil(-expected_items * math.log(false_positive_rate) / math.log(2) ** 2)
    if bits >= MAX_BITS:
        raise ValueError(f"a filter for {expected_items} items at rate {false_positive_rate} needs {bits} bits, "
                         "more than the 2**63 supported")
    return bits, math.ceil(bits / expected_items * math.log(2))


def item_digests(items: Sequence[str], kind: str) -> np.ndarray:
    """The items' 128-bit blake2b digests as an ``(n, 2)`` uint64 array, personalised by ``kind``
    (so a URL never equals a paragraph); the same on every process and machine."""
    person, blake2b = kind.encode(), hashlib.blake2b
    packed = b"".join([blake2b(item.encode("utf-8", "surrogatepass"), digest_size=16, person=person).digest()
                       for item in items])
    return np.frombuffer(packed, dtype="<u8").reshape(-1, 2)


def first_occurrences(digests: np.ndarray) -> np.ndarray:
    """Whether each digest is the first of its equal digests in the array."""
    first = np.ones(len(digests), dtype=bool)
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # stable: equal digests stay in array order
    ordered = digests[order]
    first[order[1:]] = np.any(ordered[1:] != ordered[:-1], axis=1)
    return first


def _byte_and_shift(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte offset and the shift within the byte of each bit position."""
    return (positions >> np.uint64(3)).astype(np.intp), (positions & np.uint64(7)).astype(np.uint8)


class BloomFilter:
    """A Bloom filter whose bit array is a file (numpy memmap) of ``ceil(bits / 8)`` bytes, so it can
    outgrow memory and be reused. Parameters live next to the bits in ``<path>.json``.

    Items are digests from :func:`item_digests`, queried and added in batches. An item's bit
    positions come by double hashing from the digest's 64-bit halves: (h1 + i * (h2 | 1)) mod bits.
    """

    def __init__(self, path: str | Path, bits: int, hashes: int, mode: str = "r+"):
        if not 0 < bits < MAX_BITS or hashes < 1:
            raise ValueError(f"need 0 < bits < 2**63 and hashes >= 1, got {bits} and {hashes}")
        self.path, self.bits, self.hashes = Path(path), bits, hashes
        self._array = np.memmap(self.path, dtype=np.uint8, mode=mode, shape=((bits + 7) // 8,))

    @classmethod
    def create(cls, path: str | Path, expected_items: int, false_positive_rate: float) -> "BloomFilter":
        bits, hashes = bloom_size(expected_items, false_positive_rate)
        params = {"bits": bits, "hashes": hashes, "expected_items": expected_items,
                  "false_positive_rate": false_positive_rate, "item_hash": ITEM_HASH}
        Path(f"{path}.json").write_text(json.dumps(params, sort_keys=True))
        return cls(path, bits, hashes, mode="w+")

    @classmethod
    def open(cls, path: str | Path, read_only: bool = True) -> "BloomFilter":
        params = json.loads(Path(f"{path}.json").read_text())
        if params.get("item_hash") != ITEM_HASH:
            raise ValueError(f"{path}: expected a filter of {ITEM_HASH} items, got {params.get('item_hash')!r}")
        return cls(path, params["bits"], params["hashes"], mode="r" if read_only else "r+")

    def positions(self, digests: np.ndarray) -> np.ndarray:
        """The ``(n, hashes)`` bit positions of the items."""
        modulus = np.uint64(self.bits)
        position = digests[:, 0] % modulus
        step = (digests[:, 1] | np.uint64(1)) % modulus
        positions = np.empty((len(digests), self.hashes), dtype=np.uint64)
        positions[:, 0] = position
        for i in range(1, self.hashes):
            position = position + step  # both terms are below bits < 2**63: no overflow
            position = np.where(position >= modulus, position - modulus, position)
            positions[:, i] = position
        return positions

    def unset_bits(self, digests: np.ndarray) -> np.ndarray:
        """``(n, hashes)`` bools: which bits of each item are not set yet (those adding it would set)."""
        offsets, shifts = _byte_and_shift(self.positions(digests))
        return (self._array[offsets] >> shifts) & 1 == 0

    def contains(self, digests: np.ndarray) -> np.ndarray:
        """Whether each item's bits are all set: it was added (or is a false positive)."""
        return ~self.unset_bits(digests).any(axis=1)

    def new_items(self, digests: np.ndarray) -> np.ndarray:
        """Whether each item is new: not in the filter, and not equal to an earlier item of the batch."""
        return ~self.contains(digests) & first_occurrences(digests)

    def set_bits(self, digests: np.ndarray, which: np.ndarray) -> None:
        """Set the items' bits chosen by ``which`` (``(n, hashes)`` bools, e.g. from :meth:`unset_bits`)."""
        offsets, shifts = _byte_and_shift(self.positions(digests)[which])
        np.bitwise_or.at(self._array, offsets, np.left_shift(np.uint8(1), shifts))

    def clear_bits(self, digests: np.ndarray, which: np.ndarray) -> None:
        """Clear the items' bits chosen by ``which``: undoes :meth:`set_bits` of bits that were unset."""
        offsets, shifts = _byte_and_shift(self.positions(digests)[which])
        np.bitwise_and.at(self._array, offsets, ~np.left_shift(np.uint8(1), shifts))

    def flush(self) -> None:
        self._array.flush()


@dataclass(frozen=True)
class DedupConfig(Config):
    WHERE = "dedup"

    url: bool = True
    exact: bool = True
    paragraph: bool = True
    paragraph_sources: Selector = None  # default: sources without "code" in the name (code lines repeat)
    expected_items: int = 1_000_000  # documents (per enabled document key) plus paragraphs
    false_positive_rate: float = 1e-6
    decontaminate: tuple[str, ...] = ()  # tasks whose long paragraphs remove a document (none: off)
    decontamination_min_words: int = DEFAULT_MIN_WORDS

    def check(self) -> None:
        check_selector(self.paragraph_sources, "dedup.paragraph_sources")
        for name in self.decontaminate:
            try:
                get_task_spec(name)
            except ValueError as exc:
                raise ConfigError(f"dedup.decontaminate: {exc}") from None
        require(self.decontamination_min_words >= 1, "dedup.decontamination_min_words", "a positive integer",
                self.decontamination_min_words)
        require(self.expected_items >= 1, "dedup.expected_items", "a positive integer", self.expected_items)
        require(0 < self.false_positive_rate < 1, "dedup.false_positive_rate", "a number in (0, 1)",
                self.false_positive_rate)

    def dedups_paragraphs(self, source: str) -> bool:
        return self.paragraph and selects(self.paragraph_sources, source, not_code)


def _empty_stats() -> dict[str, int]:
    return dict.fromkeys(("documents_in", "removed_contaminated", "documents_without_url", "removed_url", "removed_exact",
                          "paragraphs_removed", "documents_emptied", "documents_kept", "bytes_kept"), 0)


@dataclass(frozen=True)
class ShardJob:
    """One input shard of a source."""

    source: str
    path: Path
    stem: str  # the shard's name below its source folder, without suffix

    @property
    def key(self) -> str:
        return f"{self.source}/{self.stem}"


@dataclass(frozen=True)
class ShardItems:
    """A shard's documents and the digests of their items; a disabled kind has none."""

    docs: list[dict[str, Any]]
    url_docs: np.ndarray  # the documents that have a URL
    urls: np.ndarray  # their URLs' digests
    texts: np.ndarray  # each document's text digest
    paragraph_docs: np.ndarray  # the document of each non-blank paragraph
    paragraph_lines: np.ndarray  # its line in text.split("\n")
    paragraphs: np.ndarray  # its digest, stripped
    long_paragraph_docs: np.ndarray  # with decontamination: the document of each long paragraph
    long_paragraphs: np.ndarray  # its digest


def _read_shard(job: ShardJob, config: DedupConfig) -> ShardItems:
    """Parse a shard and hash its items (in a worker process when there are several)."""
    docs = [doc for _, doc in read_documents(job.path)]
    urls = [(index, (doc.get("metadata") or {}).get("url")) for index, doc in enumerate(docs)] if config.url else []
    urls = [(index, str(url)) for index, url in urls if url is not None]
    dedups_paragraphs = config.dedups_paragraphs(job.source)
    stripped_lines = [[line.strip() for line in doc["text"].split("\n")] if dedups_paragraphs or config.decontaminate
                      else [] for doc in docs]  # each document's paragraphs, split once for both uses
    counts, lines, paragraphs = [0] * len(docs), [], []  # per document; then of every non-blank paragraph
    if dedups_paragraphs:
        for index, stripped in enumerate(stripped_lines):
            present = [line for line, text in enumerate(stripped) if text]
            counts[index] = len(present)
            lines += present
            paragraphs += [stripped[line] for line in present]
    long = [[p for p in stripped if is_long(p, config.decontamination_min_words)] if config.decontaminate else []
            for stripped in stripped_lines]
    return ShardItems(
        docs=docs,
        url_docs=np.array([index for index, _ in urls], dtype=np.intp),
        urls=item_digests([url for _, url in urls], "url"),
        texts=item_digests([doc["text"] for doc in docs] if config.exact else [], "text"),
        paragraph_docs=np.repeat(np.arange(len(docs)), counts),
        paragraph_lines=np.array(lines, dtype=np.intp),
        paragraphs=item_digests(paragraphs, "paragraph"),
        long_paragraph_docs=np.repeat(np.arange(len(docs)), [len(found) for found in long]),
        long_paragraphs=item_digests([p for found in long for p in found], "paragraph"),
    )


@dataclass(frozen=True)
class ShardDecision:
    """What dedup makes of a shard."""

    kept: list[dict[str, Any]]
    stats: dict[str, int]
    added: np.ndarray  # the digests the shard adds to the filter


def _drop_repeats(seen: BloomFilter, digests: np.ndarray, owners: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Mark the owners of repeated items as removed; return the new items' mask."""
    new = seen.new_items(digests)
    alive[owners[~new]] = False
    return new


def _decide(
    items: ShardItems, seen: BloomFilter, config: DedupConfig, source: str, evaluation: BloomFilter | None
) -> ShardDecision:
    """Decontamination against the ``evaluation`` paragraphs, then URL, exact-text and paragraph decisions
    for a shard against the filter as earlier shards left it."""
    docs, stats = items.docs, _empty_stats()
    stats["documents_in"] = len(docs)
    alive = np.ones(len(docs), dtype=bool)
    if evaluation is not None and len(items.long_paragraphs):
        alive[items.long_paragraph_docs[evaluation.contains(items.long_paragraphs)]] = False
        stats["removed_contaminated"] = int(np.count_nonzero(~alive))
    added = []
    if config.url:
        candidates = np.flatnonzero(alive[items.url_docs])
        new = _drop_repeats(seen, items.urls[candidates], items.url_docs[candidates], alive)
        stats["documents_without_url"] = len(docs) - len(items.url_docs)
        stats["removed_url"] = int(np.count_nonzero(~new))
        added.append(items.urls[candidates[new]])
    if config.exact:
        candidates = np.flatnonzero(alive)
        new = _drop_repeats(seen, items.texts[candidates], candidates, alive)
        stats["removed_exact"] = int(np.count_nonzero(~new))
        added.append(items.texts[candidates[new]])
    texts = [doc["text"] for doc in docs]
    if config.dedups_paragraphs(source):
        candidates = np.flatnonzero(alive[items.paragraph_docs])
        new = seen.new_items(items.paragraphs[candidates])
        added.append(items.paragraphs[candidates[new]])
        removed = candidates[~new]
        stats["paragraphs_removed"] = len(removed)
        removed_lines = zip(items.paragraph_docs[removed].tolist(), items.paragraph_lines[removed].tolist())
        for index, group in itertools.groupby(removed_lines, key=lambda pair: pair[0]):
            drop = {line for _, line in group}
            texts[index] = "\n".join(p for line, p in enumerate(texts[index].split("\n")) if line not in drop)
        kept_paragraphs = np.bincount(items.paragraph_docs[candidates[new]], minlength=len(docs))
        emptied = alive & (kept_paragraphs == 0)  # every line a repeat or blank
        stats["documents_emptied"] = int(np.count_nonzero(emptied))
        alive &= ~emptied
    kept = [{**docs[index], "text": texts[index]} for index in np.flatnonzero(alive).tolist()]
    stats["documents_kept"] = len(kept)
    stats["bytes_kept"] = sum(len(doc["text"].encode("utf-8")) for doc in kept)
    return ShardDecision(kept, stats, np.concatenate(added) if added else np.empty((0, 2), dtype=np.uint64))


def _write_output(path: Path, docs: list[dict[str, Any]]) -> None:
    """Write a shard's kept documents (in a worker process when there are several); none leaves no file."""
    if docs:
        write_jsonl_gz(path, docs)
    else:
        path.unlink(missing_ok=True)


def _write_file(path: Path, write: Callable[[BinaryIO], Any], sync: bool = True) -> None:
    """Write a file through ``write(handle)`` (and fsync it), then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as handle:
        write(handle)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
    os.replace(partial, path)


class _WorkFolder:
    """The filter, undo logs and finished-shard markers of one run of the stage. A folder that is not
    ``durable`` (a scratch folder, never resumed) keeps no undo logs and skips fsync."""

    def __init__(self, root: Path, config: DedupConfig, durable: bool):
        self.root, self.config, self.durable = root, config, durable
        self.bloom = root / "seen.bloom"
        self.state = root / "dedup.json"

    def marker(self, job: ShardJob) -> Path:
        return self.root / "done" / f"{job.key}.json"

    def undo_log(self, job: ShardJob) -> Path:
        return self.root / "undo" / f"{job.key}.npz"

    def open_filter(self, jobs: Sequence[ShardJob]) -> BloomFilter:
        """The filter as the finished shards left it: new, or reopened with unfinished shards' bits cleared."""
        identity = {"format": STATE_FORMAT, "config": json.loads(json.dumps(dataclasses.asdict(self.config)))}
        self.root.mkdir(parents=True, exist_ok=True)
        if self.state.exists() and json.loads(self.state.read_text()) != identity:
            logger.warning("%s holds a dedup run with other settings (%s); starting over",
                           self.root, self.state.read_text())
            self.state.unlink()
        if not self.state.exists():
            for folder in ("done", "undo"):
                shutil.rmtree(self.root / folder, ignore_errors=True)
            seen = BloomFilter.create(self.bloom, self.config.expected_items, self.config.false_positive_rate)
            _write_file(self.state, lambda handle: handle.write(json.dumps(identity).encode()), self.durable)
            return seen
        seen = BloomFilter.open(self.bloom, read_only=False)
        for job in reversed(jobs):  # undo the latest shard first
            undo_log = self.undo_log(job)
            if undo_log.exists():
                if not self.marker(job).exists():
                    with np.load(undo_log) as undo:
                        which = np.unpackbits(undo["bits"], axis=1, count=seen.hashes).astype(bool)
                        seen.clear_bits(undo["digests"], which)
                    seen.flush()
                undo_log.unlink()
        return seen

    def add(self, job: ShardJob, seen: BloomFilter, digests: np.ndarray) -> None:
        """Add a shard's new items to the filter, first saving which bits they set, for a re-run to clear."""
        unset = seen.unset_bits(digests)
        if self.durable:
            bits = np.packbits(unset, axis=1)
            _write_file(self.undo_log(job), lambda handle: np.savez(handle, digests=digests, bits=bits))
        seen.set_bits(digests, unset)

    def finish(self, job: ShardJob, seen: BloomFilter, marker: dict[str, Any]) -> None:
        """Record a shard whose output is in place as finished."""
        if self.durable:
            seen.flush()
        _write_file(self.marker(job), lambda handle: handle.write(json.dumps(marker, sort_keys=True).encode()),
                    self.durable)
        if self.durable:
            self.undo_log(job).unlink()


class _InlineExecutor(Executor):
    """Runs each task at once in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _executor(num_workers: int) -> Executor:
    if num_workers == 1:
        return _InlineExecutor()
    return ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"))


def _evaluation_filter(paragraphs: Sequence[str], path: Path, false_positive_rate: float) -> BloomFilter:
    """A filter holding the evaluation paragraphs, sized for them at the dedup's false-positive rate."""
    evaluation = BloomFilter.create(path, max(1, len(paragraphs)), false_positive_rate)
    digests = item_digests(paragraphs, "paragraph")
    evaluation.set_bits(digests, evaluation.unset_bits(digests))
    return evaluation


def _dedup_shards(
    jobs: Sequence[ShardJob], work: _WorkFolder, output_dir: Path, num_workers: int, evaluation: BloomFilter | None
) -> list[dict[str, Any]]:
    """Every job's marker (stats and items added), in job order; jobs an earlier run finished are skipped."""
    config, seen = work.config, work.open_filter(jobs)
    pending = [job for job in jobs if not work.marker(job).exists()]
    if len(pending) < len(jobs):
        logger.info("dedup resumes: %d of %d shards already done", len(jobs) - len(pending), len(jobs))
    upcoming = iter(pending)
    window = 1 if num_workers == 1 else 2 * num_workers  # shards read ahead, and written behind
    reads: deque[tuple[ShardJob, Future]] = deque()
    writes: deque[tuple[ShardJob, Future, dict[str, Any]]] = deque()
    with _executor(num_workers) as executor:

        def read_ahead() -> None:
            while len(reads) < window and (job := next(upcoming, None)) is not None:
                reads.append((job, executor.submit(_read_shard, job, config)))

        def finish_write() -> None:
            job, written, marker = writes.popleft()
            written.result()
            work.finish(job, seen, marker)

        read_ahead()
        while reads:
            job, read = reads.popleft()
            decision = _decide(read.result(), seen, config, job.source, evaluation)
            work.add(job, seen, decision.added)
            output = output_dir / DOCUMENTS_DIR / job.source / f"{job.stem}.jsonl.gz"
            writes.append((job, executor.submit(_write_output, output, decision.kept),
                           {"stats": decision.stats, "items": len(decision.added)}))
            read_ahead()
            while writes and (writes[0][1].done() or len(writes) >= window):
                finish_write()
        while writes:
            finish_write()
    return [json.loads(work.marker(job).read_text()) for job in jobs]


def deduplicate(
    input_dir: str | Path,
    output_dir: str | Path,
    config: DedupConfig,
    work_dir: str | Path | None = None,
    num_workers: int = 1,
) -> dict[str, Any]:
    """Deduplicate the documents directory ``input_dir`` into ``output_dir/documents/<source>/<shard>``.

    Returns ``{"sources": {source: stats}, "total": stats, "bloom": {items, expected_items, bits,
    hashes}, "decontamination": {tasks, min_words, paragraphs}}``. Stats: documents_in,
    removed_contaminated (a paragraph of an evaluation set, see :mod:`steps.corpus.decontamination`),
    documents_without_url (passed through URL dedup), removed_url, removed_exact, paragraphs_removed,
    documents_emptied (every paragraph a repeat) and documents_kept and bytes_kept (UTF-8 bytes of
    their text), with documents_in == removed_contaminated + removed_url + removed_exact +
    documents_emptied + documents_kept. A contaminated document adds nothing to the dedup filter.

    With ``work_dir``, the filter and the per-shard markers live there and a re-run after a crash
    skips the shards already finished; without it they live in a scratch folder, removed at the end.
    ``num_workers`` processes read, hash and write shards; the result does not depend on it.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    jobs = [ShardJob(source, shard, shard_stem(shard, input_dir / source))
            for source, shards in source_shards(input_dir).items() for shard in shards]
    output_dir.mkdir(parents=True, exist_ok=True)
    folder = nullcontext(work_dir) if work_dir else tempfile.TemporaryDirectory(dir=output_dir, prefix=".bloom-")
    paragraphs = task_paragraphs(config.decontaminate, config.decontamination_min_words)
    with folder as root:
        work = _WorkFolder(Path(root), config, durable=work_dir is not None)
        Path(root).mkdir(parents=True, exist_ok=True)
        evaluation = (_evaluation_filter(paragraphs, Path(root) / "evaluation.bloom", config.false_positive_rate)
                      if config.decontaminate else None)
        markers = _dedup_shards(jobs, work, output_dir, num_workers, evaluation)
    per_source: dict[str, dict[str, int]] = {}
    for job, marker in zip(jobs, markers):
        per_source[job.source] = merge_stats(per_source.get(job.source, _empty_stats()), marker["stats"])
    items = sum(marker["items"] for marker in markers)
    bits, hashes = bloom_size(config.expected_items, config.false_positive_rate)
    if items > config.expected_items:
        logger.warning("dedup saw %d items, more than expected_items=%d: the false-positive rate is above %g",
                       items, config.expected_items, config.false_positive_rate)
    bloom = {"items": items, "expected_items": config.expected_items, "bits": bits, "hashes": hashes}
    decontamination = {"tasks": list(config.decontaminate), "min_words": config.decontamination_min_words,
                       "paragraphs": len(paragraphs)}
    return {"sources": per_source, "total": total_stats(per_source), "bloom": bloom,
            "decontamination": decontamination}
