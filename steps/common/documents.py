"""Dolma-format documents: one JSON object per line, in jsonl, jsonl.gz or jsonl.zst shards.

Every document has ``id``, ``text`` and ``source``; ``added``, ``created`` and ``metadata``
are optional. Readers go through fsspec, so a shard may be a local path or any fsspec URL.
"""
from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import fsspec

REQUIRED_FIELDS = ("id", "text", "source")


class DocumentFormatError(ValueError):
    """A shard holds a line that is not a valid Dolma document."""

    def __init__(self, path: str, line: int, expected: str):
        super().__init__(f"{path}:{line}: {expected}")
        self.path, self.line = path, line


@dataclass(frozen=True)
class DocumentLocation:
    """Where a document was read from: shard path and 1-based line number."""

    path: str
    line: int


def _open_text(path: str, mode: str = "rt"):
    """Open a (possibly compressed) shard for text reading or writing via fsspec."""
    compression = None
    if path.endswith(".gz"):
        compression = "gzip"
    elif path.endswith(".zst"):
        compression = "zstd"
    return fsspec.open(path, mode, compression=compression, encoding="utf-8")


def parse_document(line: str, path: str, line_number: int) -> dict[str, Any]:
    """Parse one jsonl line into a document, naming file and line when it is not one."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DocumentFormatError(path, line_number, f"expected a JSON object ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise DocumentFormatError(path, line_number, "expected a JSON object with id, text, source")
    missing = [field for field in REQUIRED_FIELDS if field not in doc]
    if missing:
        raise DocumentFormatError(path, line_number, f"document lacks field(s) {', '.join(missing)}")
    if not isinstance(doc["text"], str):
        raise DocumentFormatError(path, line_number, "field 'text' must be a string")
    return doc


def read_documents(path: str | Path) -> Iterator[tuple[DocumentLocation, dict[str, Any]]]:
    """Yield ``(location, document)`` for every non-blank line of a shard."""
    path = str(path)
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                yield DocumentLocation(path, line_number), parse_document(line, path, line_number)


def write_jsonl_gz(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as a deterministic jsonl.gz file (no timestamp in the gzip header); return the count."""
    count = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8") as text:
            for row in rows:
                text.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
                text.write("\n")
                count += 1
    return count


class ShardWriter:
    """Writes documents into numbered jsonl.gz shards of at most ``max_shard_bytes`` of text each."""

    def __init__(self, directory: str | Path, prefix: str, max_shard_bytes: int = 256 * 2**20):
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self.paths: list[Path] = []
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0

    def write(self, doc: dict[str, Any]) -> None:
        size = len(doc["text"].encode("utf-8"))
        if self._buffer and self._buffer_bytes + size > self.max_shard_bytes:
            self.flush()
        self._buffer.append(doc)
        self._buffer_bytes += size

    def flush(self) -> None:
        if not self._buffer:
            return
        path = self.directory / f"{self.prefix}-{len(self.paths):05d}.jsonl.gz"
        write_jsonl_gz(path, self._buffer)
        self.paths.append(path)
        self._buffer, self._buffer_bytes = [], 0

    def close(self) -> list[Path]:
        self.flush()
        return self.paths

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_shards(directory: str | Path) -> list[Path]:
    """All document shards under a directory, in a deterministic order."""
    directory = Path(directory)
    patterns = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst")
    return sorted(p for pattern in patterns for p in directory.rglob(pattern))
