"""Dolma-format documents: one JSON object per line, in jsonl, jsonl.gz or jsonl.zst shards.

Every document has ``id``, ``text`` and ``source``; ``added``, ``created`` and ``metadata``
are optional. Shards are read by :func:`steps.common.compressed.open_shard`: a local path or any
fsspec URL, its compression told by its first bytes, a leading UTF-8 byte order mark skipped.

Two readers: :func:`read_documents` raises :class:`DocumentFormatError` at the first bad line;
:func:`read_records` never raises on bad input and yields a :class:`BadRecord` in its place, for a
:class:`Quarantine` to keep (or, in strict mode, to raise). :func:`read_records` never holds a line
over ``max_document_bytes``: its peak memory is about twice that, whatever the shard holds. Of a
truncated or corrupt shard both give the documents before the damage, then say where it is.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from steps.common.compressed import CORRUPT_SHARD_ERRORS, open_shard

REQUIRED_FIELDS = ("id", "text", "source")
DEFAULT_MAX_DOCUMENT_BYTES = 32 * 2**20
PREVIEW_BYTES = 1024
BAD_RECORD_REASONS = (
    "invalid_utf8", "invalid_json", "not_an_object", "missing_text", "text_not_string",
    "missing_id", "id_not_string", "metadata_not_object", "empty_text", "too_large", "truncated_shard",
)
# Every corpus stage rewrites its documents, so written shards trade size for speed: on English
# jsonl, level 3 compresses about 2.5x faster than level 6 for files about 10% larger.
GZIP_LEVEL = 3
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class DocumentFormatError(ValueError):
    """A shard holds a line that is not a valid Dolma document."""

    def __init__(self, path: str, line: int, expected: str):
        super().__init__(f"{path}:{line}: {expected}")
        self.path, self.line, self.expected = path, line, expected

    def __reduce__(self):  # so that it crosses from a worker process intact
        return type(self), (self.path, self.line, self.expected)


@dataclass(frozen=True)
class DocumentLocation:
    """Where a document was read from: shard path and 1-based line number."""

    path: str
    line: int


@dataclass(frozen=True)
class BadRecord:
    """A line of a shard that is not a usable document, with why (``reason``, one of
    :data:`BAD_RECORD_REASONS`), what was expected instead, and a preview of at most
    :data:`PREVIEW_BYTES` of the line (undecodable bytes shown as ``\\xNN``)."""

    location: DocumentLocation
    reason: str
    expected: str
    raw: str

    def __post_init__(self):
        if self.reason not in BAD_RECORD_REASONS:
            raise ValueError(f"unknown bad-record reason {self.reason!r} (known: {', '.join(BAD_RECORD_REASONS)})")

    @property
    def message(self) -> str:
        return f"{self.location.path}:{self.location.line}: {self.expected}"


@dataclass(frozen=True)
class TruncatedShard(BadRecord):
    """The ``truncated_shard`` record that ends a truncated or corrupt shard: ``records_recovered`` records
    (good or bad) were read before the damage; ``unreadable_bytes`` of its ``compressed_bytes`` (of
    ``compression``: ``gzip``, ``zstd`` or ``plain``) decode to no record."""

    compression: str
    records_recovered: int
    unreadable_bytes: int
    compressed_bytes: int


# --- reading -------------------------------------------------------------------------------------


def _preview(raw: bytes) -> str:
    return raw[:PREVIEW_BYTES].decode("utf-8", errors="backslashreplace")


def _invalid_utf8(exc: UnicodeDecodeError) -> str:
    return f"expected UTF-8 text (byte 0x{exc.object[exc.start]:02x} at byte offset {exc.start} of the line: {exc.reason})"


def _truncated(line: int, exc: Exception) -> str:
    return f"shard is truncated or corrupt after line {line}: {type(exc).__name__}: {exc}"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _lone_surrogate(doc: dict[str, Any], raw: bytes) -> bool:
    r"""Whether the parsed document holds a ``\udXXX`` escape that cannot be written as UTF-8."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _record(location: DocumentLocation, raw: bytes) -> dict[str, Any] | BadRecord:
    """The document on one line, or a BadRecord saying what is wrong with it."""

    def bad(reason: str, expected: str) -> BadRecord:
        return BadRecord(location, reason, expected, _preview(raw))

    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return bad("invalid_utf8", _invalid_utf8(exc))
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        return bad("invalid_json", f"expected a JSON object (column {exc.colno}: {exc.msg})")
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits, nesting too deep
        return bad("invalid_json", f"expected a JSON object ({type(exc).__name__}: {exc})")
    if not isinstance(doc, dict):
        return bad("not_an_object", f"expected a JSON object, not {_json_type(doc)}")
    if "text" not in doc:
        return bad("missing_text", "expected a field 'text'")
    if not isinstance(doc["text"], str):
        return bad("text_not_string", f"expected field 'text' to be a string, not {_json_type(doc['text'])}")
    if "id" not in doc:
        return bad("missing_id", "expected a field 'id'")
    if isinstance(doc["id"], int) and not isinstance(doc["id"], bool):
        doc["id"] = str(doc["id"])
    elif not isinstance(doc["id"], str):
        return bad("id_not_string", f"expected field 'id' to be a string or an integer, not {_json_type(doc['id'])}")
    if not doc["text"].strip():
        return bad("empty_text", "expected a non-empty field 'text' (it is empty or only whitespace)")
    if _lone_surrogate(doc, raw):
        return bad("invalid_utf8", "expected text encodable as UTF-8 (it escapes a lone surrogate, \\udXXX)")
    return doc


def read_records(
    path: str | Path, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
) -> Iterator[tuple[DocumentLocation, dict[str, Any] | BadRecord]]:
    """Yield ``(location, document or BadRecord)`` for every record of a shard; never raises on bad input.

    A document has a non-blank string ``text`` and an ``id`` (an integer id becomes a string);
    ``source`` and the rest are passed through unchecked. Blank lines are not records: they are
    skipped, and the lines after them keep their true numbers. A line over ``max_document_bytes``
    is a ``too_large`` BadRecord and is never held in memory. A truncated or corrupt compressed
    shard yields its records up to the break, then one :class:`TruncatedShard`, and ends.
    """
    path = str(path)
    records = 0
    with open_shard(path) as shard:
        try:
            for number, raw, size in shard.lines(max_document_bytes):
                location = DocumentLocation(path, number)
                if size > max_document_bytes:
                    records += 1
                    expected = f"document of {size} bytes exceeds max_document_bytes={max_document_bytes}"
                    yield location, BadRecord(location, "too_large", expected, _preview(raw))
                elif raw.strip():
                    records += 1
                    yield location, _record(location, raw)
        except CORRUPT_SHARD_ERRORS as exc:
            unreadable, total = shard.unreadable_bytes()
            location = DocumentLocation(path, shard.line_number + 1)
            expected = (f"{_truncated(shard.line_number, exc)}; {unreadable} of {total} compressed bytes decode to "
                        f"no record (the records in them are lost; {records} recovered before)")
            yield location, TruncatedShard(location, "truncated_shard", expected, "", shard.compression, records,
                                           unreadable, total)


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
    """Yield ``(location, document)`` for every non-blank line of a shard; raise
    :class:`DocumentFormatError` at the first line that is not a document."""
    path = str(path)
    with open_shard(path) as shard:
        try:
            for number, raw, _ in shard.lines():
                if raw.strip():
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise DocumentFormatError(path, number, _invalid_utf8(exc)) from None
                    yield DocumentLocation(path, number), parse_document(line, path, number)
        except CORRUPT_SHARD_ERRORS as exc:
            raise DocumentFormatError(path, shard.line_number + 1, _truncated(shard.line_number, exc)) from exc


# --- writing -------------------------------------------------------------------------------------


def encode_document(row: dict[str, Any]) -> str:
    """A row as one jsonl line (without its newline), as every stage writes it: keys sorted, text as is."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


class JsonlGzWriter:
    """Streams rows into a deterministic jsonl.gz file (no timestamp in the gzip header).

    Rows go to ``<name>.tmp``, renamed to ``<name>`` on :meth:`close`; leaving the ``with`` block
    by an exception deletes it instead, so a half-written file never looks finished.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".tmp")
        self._raw = open(self._partial, "wb")
        gz = gzip.GzipFile(self.path.name, mode="wb", compresslevel=GZIP_LEVEL, fileobj=self._raw, mtime=0)
        self._text = io.TextIOWrapper(gz, encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._text.write(encode_document(row))
        self._text.write("\n")
        self.count += 1

    def close(self) -> Path:
        self._text.close()
        self._raw.close()
        os.replace(self._partial, self.path)
        return self.path

    def discard(self) -> None:
        self._text.close()
        self._raw.close()
        self._partial.unlink()

    def __enter__(self) -> "JsonlGzWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_jsonl_gz(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as a deterministic jsonl.gz file (no timestamp in the gzip header); return the count."""
    with JsonlGzWriter(path) as writer:
        for row in rows:
            writer.write(row)
    return writer.count


class ShardWriter:
    """Streams documents into numbered jsonl.gz shards of at most ``max_shard_bytes`` of text each.

    ``paths`` lists the finished shards. Leaving the ``with`` block by an exception discards the
    shard being written (finished shards stay).
    """

    def __init__(self, directory: str | Path, prefix: str, max_shard_bytes: int = 256 * 2**20):
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self.paths: list[Path] = []
        self._shard: JsonlGzWriter | None = None
        self._shard_bytes = 0

    def write(self, doc: dict[str, Any]) -> None:
        size = len(doc["text"].encode("utf-8"))
        if self._shard is not None and self._shard_bytes + size > self.max_shard_bytes:
            self.flush()
        if self._shard is None:
            self._shard = JsonlGzWriter(self.directory / f"{self.prefix}-{len(self.paths):05d}.jsonl.gz")
        self._shard.write(doc)
        self._shard_bytes += size

    def flush(self) -> None:
        """Finish the shard being written, if any; the next document starts a new one."""
        if self._shard is not None:
            self.paths.append(self._shard.close())
            self._shard, self._shard_bytes = None, 0

    def close(self) -> list[Path]:
        self.flush()
        return self.paths

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        elif self._shard is not None:
            self._shard.discard()
            self._shard = None


class Quarantine:
    """Keeps bad records: counted by reason and written, one row each, to a jsonl.gz file
    (``{file, line, reason, message, raw}``), opened only when the first one arrives.
    In ``strict`` mode the first bad record raises :class:`DocumentFormatError` instead.
    """

    def __init__(self, path: str | Path, strict: bool = False):
        self.path = Path(path)
        self.strict = strict
        self.counts: dict[str, int] = {}
        self._writer: JsonlGzWriter | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, bad: BadRecord) -> None:
        if self.strict:
            raise DocumentFormatError(bad.location.path, bad.location.line, bad.expected)
        if self._writer is None:
            self._writer = JsonlGzWriter(self.path)
        self._writer.write({"file": bad.location.path, "line": bad.location.line, "reason": bad.reason,
                            "message": bad.message, "raw": bad.raw})
        self.counts[bad.reason] = self.counts.get(bad.reason, 0) + 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.discard()
            self._writer = None


def list_shards(directory: str | Path) -> list[Path]:
    """All document shards under a directory, in a deterministic order."""
    directory = Path(directory)
    patterns = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst")
    return sorted(p for pattern in patterns for p in directory.rglob(pattern))
