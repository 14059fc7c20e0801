"""Where each token came from: the per-document provenance of a token file, written and read.

Next to ``<name>.npy`` the tokenize step writes

- ``<name>.csv.gz``: one row per document, ``start,end,id,src,loc,source`` (dolma's five columns, then the
  document's source), as consecutive gzip members of :data:`BLOCK_ROWS` rows each: one valid gzip file
  for any reader, and a block can be decompressed on its own;
- ``<name>.ends.bin``: raw little-endian int64, every document's end (exclusive) token offset;
- ``<name>.blocks.bin``: raw little-endian int64 pairs, each gzip member's byte offset in the csv.gz and
  the number of its first row.

With the two sidecars, the documents of any token span cost a binary search of the ends and the
decompression of a block or two, so describing a batch of an OLMo-7B-sized plan reads kilobytes, not the
whole provenance. They are not ``.npy`` files, so globbing a folder for token files never picks them up.
Without them (files written by dolma, five columns) the whole csv.gz is read once.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

BLOCK_ROWS = 1024
CACHED_BLOCKS = 64
_ENDS_SUFFIX = ".ends.bin"
_BLOCKS_SUFFIX = ".blocks.bin"
_EXPECTED_ROW = "expected 'start,end,id,src,loc[,source]' with integer start, end, loc"


class InstanceDocument(NamedTuple):
    """A document in a token file: its id, source, shard (``src``), line there, and token span [start, end).

    ``source`` is None for provenance written by dolma, which has only the first five columns.
    """

    id: str
    source: str | None
    src: str
    loc: int
    start: int
    end: int


def sidecar_paths(provenance: Path) -> tuple[Path, Path]:
    """The ends and blocks files that go with a ``<name>.csv.gz``."""
    stem = provenance.name.removesuffix(".csv.gz")
    return provenance.with_name(stem + _ENDS_SUFFIX), provenance.with_name(stem + _BLOCKS_SUFFIX)


class ProvenanceWriter:
    """Writes a provenance csv.gz in blocks, and its ends and blocks sidecars, to the paths given."""

    def __init__(self, path: Path, ends_path: Path, blocks_path: Path, block_rows: int = BLOCK_ROWS):
        self._raw = open(path, "wb")
        self._ends = open(ends_path, "wb")
        self._blocks = open(blocks_path, "wb")
        self._block_rows = block_rows
        self._rows: list[list[object]] = []
        self._written = 0

    def write(self, start: int, end: int, doc_id: str, src: str, loc: int, source: str) -> None:
        self._rows.append([start, end, doc_id, src, loc, source])
        if len(self._rows) == self._block_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        self._blocks.write(np.asarray([self._raw.tell(), self._written], dtype="<i8").tobytes())
        self._written += len(self._rows)
        self._ends.write(np.asarray([row[1] for row in self._rows], dtype="<i8").tobytes())
        text = io.StringIO(newline="")
        csv.writer(text, lineterminator="\n").writerows(self._rows)
        self._raw.write(gzip.compress(text.getvalue().encode("utf-8"), mtime=0))  # deterministic: no time
        self._rows = []

    def close(self) -> None:
        self._flush()
        for handle in (self._raw, self._ends, self._blocks):
            handle.close()

    def __enter__(self) -> "ProvenanceWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_rows(path: Path, rows: Iterable[list[str]], first_line: int) -> Iterator[InstanceDocument]:
    for line, row in enumerate(rows, start=first_line):
        try:
            if len(row) not in (5, 6):
                raise ValueError
            start, end, doc_id, src, loc = row[:5]
            yield InstanceDocument(doc_id, row[5] if len(row) == 6 else None, src, int(loc), int(start), int(end))
        except ValueError:
            raise ValueError(f"{path}:{line}: {_EXPECTED_ROW}") from None


def read_documents(path: Path) -> Iterator[InstanceDocument]:
    """Every row of a provenance csv.gz (blocked or not), streamed in order."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        yield from _parse_rows(path, csv.reader(handle), first_line=1)


class ProvenanceFile:
    """The documents of one token file of ``num_tokens`` tokens, looked up by token span."""

    def __init__(self, path: Path, num_tokens: int):
        self.path = path
        ends_path, blocks_path = sidecar_paths(path)
        self._all: list[InstanceDocument] | None = None
        if ends_path.is_file() and blocks_path.is_file():
            self._ends = np.fromfile(ends_path, dtype="<i8") if ends_path.stat().st_size == 0 else (
                np.memmap(ends_path, dtype="<i8", mode="r"))
            blocks = np.fromfile(blocks_path, dtype="<i8").reshape(-1, 2)
            self._block_offsets = blocks[:, 0].tolist() + [path.stat().st_size]
            self._block_first_rows = blocks[:, 1]
            last = int(self._ends[-1]) if len(self._ends) else 0
            if last != num_tokens:
                raise ValueError(f"{ends_path}: ends at token {last}, its token file has {num_tokens} tokens")
        else:
            self._all = list(read_documents(path))
            self._ends = np.asarray([d.end for d in self._all], dtype=np.int64)
            starts = np.asarray([d.start for d in self._all], dtype=np.int64)
            if not (np.array_equal(starts, np.concatenate([[0], self._ends[:-1]])) and
                    (self._ends[-1] if len(self._ends) else 0) == num_tokens):
                raise ValueError(f"{path}: document spans do not tile the {num_tokens} tokens of the token file")
        self._blocks: OrderedDict[int, list[InstanceDocument]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ends)

    def document(self, row: int) -> InstanceDocument:
        """The document of row ``row`` (0-based)."""
        if self._all is not None:
            return self._all[row]
        block = int(np.searchsorted(self._block_first_rows, row, side="right")) - 1
        document = self._block(block)[row - int(self._block_first_rows[block])]
        if document.end != int(self._ends[row]) or document.start != (int(self._ends[row - 1]) if row else 0):
            raise ValueError(f"{self.path}:{row + 1}: the row's span disagrees with the ends sidecar")
        return document

    def _block(self, block: int) -> list[InstanceDocument]:
        """The documents of one gzip member (the most recently used :data:`CACHED_BLOCKS` are kept)."""
        if block not in self._blocks:
            start, end = self._block_offsets[block], self._block_offsets[block + 1]
            with open(self.path, "rb") as handle:
                handle.seek(start)
                text = gzip.decompress(handle.read(end - start)).decode("utf-8")
            rows = csv.reader(io.StringIO(text, newline=""))
            if len(self._blocks) >= CACHED_BLOCKS:
                self._blocks.popitem(last=False)
            self._blocks[block] = list(_parse_rows(self.path, rows, first_line=int(self._block_first_rows[block]) + 1))
        self._blocks.move_to_end(block)
        return self._blocks[block]

    def overlapping(self, start: int, end: int) -> list[InstanceDocument]:
        """The documents with at least one token in [start, end), in order."""
        if end <= start:
            return []
        first = int(np.searchsorted(self._ends, start, side="right"))
        last = min(int(np.searchsorted(self._ends, end - 1, side="right")), len(self) - 1)
        return [self.document(row) for row in range(first, last + 1)]

    def documents(self) -> Iterator[InstanceDocument]:
        """Every document, in order (streamed from the file unless it was read whole)."""
        return iter(self._all) if self._all is not None else read_documents(self.path)
