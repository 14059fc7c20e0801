"""Counting document ids used more than once in a source, across all its input shards, in bounded memory.

Each input job writes the 64-bit digests of its documents' ids, sorted, to a ``.npy`` file; :func:`count_duplicates`
then counts, over all files, the digests seen before (an id used k times counts k - 1). Digests are
``blake2b`` truncated to 64 bits: two different ids share one with probability about n² / 2⁶⁵ for n ids
(under 3 in 10⁴ at 10⁸ ids), so the count is exact but for that. The files are read range by range of digest
values, so memory stays near ``RANGE_ITEMS`` digests whatever the source's size.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from steps.common.files import replacing

RANGE_ITEMS = 2**24  # digests held at once while counting (128 MiB)


def id_digest(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def write_digests(path: Path, digests: Iterable[int]) -> None:
    """Write the digests sorted, as a ``.npy`` file, atomically."""
    array = np.sort(np.fromiter(digests, dtype=np.uint64))
    with replacing(path) as handle:
        np.save(handle, array, allow_pickle=False)


def count_duplicates(paths: Iterable[Path]) -> int:
    """How many digests, over all the sorted digest files, repeat one seen before."""
    arrays = [np.load(path, mmap_mode="r", allow_pickle=False) for path in paths]
    total = sum(len(array) for array in arrays)
    if total == 0:
        return 0
    ranges = -(-total // RANGE_ITEMS)
    bounds = [int(i * (2**64 // ranges)) for i in range(ranges)] + [2**64]
    duplicates = 0
    for low, high in zip(bounds, bounds[1:]):
        parts = []
        for array in arrays:
            start = np.searchsorted(array, np.uint64(low), side="left")
            end = len(array) if high == 2**64 else np.searchsorted(array, np.uint64(high), side="left")
            parts.append(np.asarray(array[start:end]))
        values = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
        duplicates += int(np.count_nonzero(values[1:] == values[:-1]))
    return duplicates
