"""Reading the input shards of a files source: every record, or a :class:`BadRecord` saying why it is not one.

The pipeline's own shards are read by :func:`steps.common.documents.read_records`; input shards come from
anywhere, so this reader trusts less:

- the compression is told by the file's first bytes, never by its name: gzip (``1f 8b``), zstd
  (``28 b5 2f fd``, or a skippable frame), else plain text; a name that says otherwise gets a warning;
- a UTF-8 byte order mark at the start of the file is skipped (Dolma's readers and ``json.loads`` reject it);
- a truncated or corrupt compressed shard yields every record before the damage, then one
  :class:`TruncatedShard` record that says how many compressed bytes could not be turned into records:
  the file's size minus the fewest leading bytes that decode to every record recovered. The records in
  those bytes are lost and cannot be counted (a zstd block decodes only whole; a gzip stream cut short
  has no end), so the bytes are what the accounts show.

Lines, blank lines, ``max_document_bytes`` and the checks of each record are those of
:func:`~steps.common.documents.read_records`.
"""
from __future__ import annotations

import io
import logging
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import fsspec
import zstandard

from steps.common.compressed import CHUNK_BYTES, CORRUPT_SHARD_ERRORS, _ChunkStream
from steps.common.documents import (
    DEFAULT_MAX_DOCUMENT_BYTES, BadRecord, DocumentLocation, _preview, _record, _truncated,
)

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UTF8_BOM = b"\xef\xbb\xbf"
PIECE_BYTES = 2**16  # compressed bytes read and decoded at a time
SUFFIX_COMPRESSION = {".gz": "gzip", ".zst": "zstd"}


def compression_of(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``plain``, from a file's first four bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and int.from_bytes(head[:4], "little") >> 4 == 0x184D2A5):
        return "zstd"  # a zstd frame, or a skippable frame (magic 0x184D2A5?)
    return "plain"


@dataclass(frozen=True)
class TruncatedShard(BadRecord):
    """The ``truncated_shard`` record of a damaged compressed shard: ``records_recovered`` records (good or
    bad) were read before the damage; ``unreadable_bytes`` of its ``compressed_bytes`` decode to no record."""

    records_recovered: int = 0
    unreadable_bytes: int = 0
    compressed_bytes: int = 0


# --- decoders: feed(compressed bytes) gives (end of a part of them, what the part decodes to) for each part ---


class _Plain:
    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        return [(len(data), data)]  # at most PIECE_BYTES

    def finish(self) -> None:
        pass


class _Gzip:
    """gzip members one after another, zero padding between or after them allowed (as ``gzip`` reads them).
    Each part decodes to at most ``CHUNK_BYTES``; ``before`` is the decoder as it was before the last part."""

    exact = False  # zlib decodes bit by bit: where within a part some output begins is found by search

    def __init__(self) -> None:
        self._member: Any = zlib.decompressobj(wbits=31)
        self.before: _Gzip | None = None

    def copy(self) -> "_Gzip":
        other = _Gzip.__new__(_Gzip)
        other._member = None if self._member is None else self._member.copy()
        other.before = None
        return other

    def feed(self, data: bytes, snapshots: bool = True) -> Iterator[tuple[int, bytes]]:
        size = len(data)
        while data:
            if snapshots:
                self.before = self.copy()
            if self._member is None:  # between members: padding, or the next member
                data = data.lstrip(b"\0")
                if not data:
                    return
                self._member = zlib.decompressobj(wbits=31)
            output = self._member.decompress(data, CHUNK_BYTES)
            if self._member.eof:
                data, self._member = self._member.unused_data, None
            else:
                data = self._member.unconsumed_tail
            yield size - len(data), output

    def decoded_length(self, data: bytes) -> int:
        """How many bytes ``data`` decodes to from this state (which it leaves as it is)."""
        return sum(len(output) for _, output in self.copy().feed(data, snapshots=False))

    def finish(self) -> None:
        if self._member is not None:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")


class _ZstdWalker:
    """Follows zstd frame and block headers through compressed bytes, without decompressing them: where each
    block, frame checksum and skippable frame ends, and whether the bytes so far end between frames."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._wanted, self._step, self._skip = 4, self._magic, 0
        self._checksum_bytes = 0

    @property
    def between_frames(self) -> bool:
        return self._step == self._magic and not self._header and not self._skip

    def ends(self, data: bytes, found: list[int]) -> None:
        """Append to ``found`` the offsets in ``data`` just past the end of a block, checksum or skippable frame."""
        position = 0
        while position < len(data):
            if self._skip:
                step = min(self._skip, len(data) - position)
                self._skip -= step
                position += step
                if not self._skip:
                    found.append(position)
                continue
            take = min(self._wanted - len(self._header), len(data) - position)
            self._header += data[position:position + take]
            position += take
            if len(self._header) == self._wanted:
                value = int.from_bytes(self._header, "little")
                self._header.clear()
                self._step(value)

    def _expect(self, header_bytes: int, step, skip: int = 0) -> None:
        self._wanted, self._step, self._skip = header_bytes, step, skip

    def _magic(self, magic: int) -> None:
        if magic == 0xFD2FB528:
            self._expect(1, self._descriptor)
        elif magic >> 4 == 0x184D2A5:  # a skippable frame: its size, then that many bytes
            self._expect(4, lambda size: self._expect(4, self._magic, skip=size))
        else:
            raise zstandard.ZstdError(f"not a zstd frame (magic number 0x{magic:08x})")

    def _descriptor(self, descriptor: int) -> None:
        single_segment = descriptor >> 5 & 1
        content_size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
        rest = (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes
        self._checksum_bytes = 4 if descriptor & 4 else 0
        self._expect(3, self._block, skip=rest)

    def _block(self, header: int) -> None:
        size = 1 if (header >> 1 & 3) == 1 else header >> 3  # an RLE block stores one byte
        if not header & 1:
            self._expect(3, self._block, skip=size)
        elif self._checksum_bytes:  # the frame's last block, then its checksum
            self._expect(0, lambda _: self._expect(4, self._magic, skip=self._checksum_bytes), skip=size)
        else:
            self._expect(4, self._magic, skip=size)


class _Zstd:
    """zstd frames one after another. A block decodes only whole, so the bytes are fed up to each block end,
    and every such end is a part: its output is exactly what the bytes up to it decode to."""

    exact = True

    def __init__(self) -> None:
        self._walker = _ZstdWalker()
        self._frame: Any = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        ends: list[int] = []
        try:
            self._walker.ends(data, ends)
        except zstandard.ZstdError:
            yield from self._parts(data, ends)  # the blocks before the bad header
            raise
        yield from self._parts(data, [*ends, len(data)])

    def _parts(self, data: bytes, ends: list[int]) -> Iterator[tuple[int, bytes]]:
        start = 0
        for end in ends:
            if end > start:
                yield end, self._decompress(data[start:end])
                start = end

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data = self._frame.unused_data
            self._frame = zstandard.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def finish(self) -> None:
        if not self._walker.between_frames:
            raise zstandard.ZstdError("the compressed stream ends inside a frame")


DECODERS = {"plain": _Plain, "gzip": _Gzip, "zstd": _Zstd}


class _Part(NamedTuple):
    """Compressed bytes ``[compressed_start, compressed_start + len(data))`` of a shard, which decode to its
    decompressed bytes ``[decoded_start, decoded_end)``; ``before`` is the decoder as it was just before them
    (kept only where the decoder is not exact)."""

    compressed_start: int
    decoded_start: int
    decoded_end: int
    data: bytes
    before: Any


class _Decoded:
    """A shard's decompressed bytes as chunks, with the parts of the compressed file the chunks not yet
    consumed came from, so that a decompressed offset maps back to a compressed one."""

    def __init__(self, handle, head: bytes, decoder: Any):
        self._handle, self._head, self._decoder = handle, head, decoder
        self._parts: deque[_Part] = deque()
        self.compressed = self.decoded = 0

    def chunks(self) -> Iterator[bytes]:
        exact = getattr(self._decoder, "exact", True)
        while piece := self._head or self._handle.read(PIECE_BYTES):
            self._head = b""
            start = 0
            try:
                for end, output in self._decoder.feed(piece):
                    self._add(start, piece[start:end], output, None if exact else self._decoder.before)
                    start = end
                    if output:
                        yield output
            except CORRUPT_SHARD_ERRORS:
                if exact:
                    raise
                # a corrupt gzip part: decode it again a byte at a time, to keep what precedes the damage
                yield from self._salvage(self._decoder.before, piece, start)
                raise
            self.compressed += len(piece)
        self._decoder.finish()

    def _add(self, start: int, data: bytes, output: bytes, before: Any) -> None:
        self._parts.append(_Part(self.compressed + start, self.decoded, self.decoded + len(output), data, before))
        self.decoded += len(output)

    def _salvage(self, decoder: Any, piece: bytes, start: int) -> Iterator[bytes]:
        for index in range(start, len(piece)):
            try:
                output = b"".join(out for _, out in decoder.feed(piece[index:index + 1], snapshots=False))
            except CORRUPT_SHARD_ERRORS:
                return
            self._add(index, piece[index:index + 1], output, None)  # one byte: exact
            if output:
                yield output

    def consumed(self, decoded: int) -> None:
        """The reader has used the decompressed bytes before ``decoded``: forget the parts wholly before them."""
        while self._parts and self._parts[0].decoded_end < decoded:
            self._parts.popleft()

    def compressed_offset(self, decoded: int) -> int:
        """The fewest leading compressed bytes that decode to the first ``decoded`` decompressed bytes
        (``decoded`` must not be before what :meth:`consumed` was last told)."""
        if decoded <= 0:
            return 0
        for part in self._parts:
            if part.decoded_end >= decoded:
                if part.before is None:
                    return part.compressed_start + len(part.data)
                wanted = decoded - part.decoded_start
                low, high = 0, len(part.data)  # the fewest bytes of the part that give ``wanted`` bytes
                while low < high:
                    middle = (low + high) // 2
                    low, high = ((middle + 1, high) if part.before.decoded_length(part.data[:middle]) < wanted
                                 else (low, middle))
                return part.compressed_start + low
        return self.compressed


def _file_size(path: str, handle) -> int:
    """The size of the open file at ``path``: from its filesystem, or else by reading it to the end."""
    try:
        fs, fs_path = fsspec.core.url_to_fs(path)
        size = fs.size(fs_path)
    except Exception:  # a filesystem that cannot say (each raises its own errors)
        size = None
    if size is None:
        size = handle.tell() + sum(map(len, iter(lambda: handle.read(PIECE_BYTES), b"")))
    return size


def read_source_records(
    path: str, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
) -> Iterator[tuple[DocumentLocation, dict[str, Any] | BadRecord]]:
    """Yield ``(location, document or BadRecord)`` for every record of an input shard; never raises on bad
    input. ``path`` (a local path or an fsspec URL) names the shard in every location and message."""
    path = str(path)
    with fsspec.open(path, "rb") as handle:
        head = handle.read(4)
        compression = compression_of(head)
        named = next((kind for suffix, kind in SUFFIX_COMPRESSION.items() if path.endswith(suffix)), "plain")
        if named != compression:
            logger.warning("%s: the name says %s but the bytes are %s; read as %s", path, named, compression,
                           compression)
        decoded = _Decoded(handle, head, DECODERS[compression]())
        stream = io.BufferedReader(_ChunkStream(decoded.chunks()), buffer_size=CHUNK_BYTES)
        number = used = records = 0
        limit = max_document_bytes + 1 + len(UTF8_BOM)  # the first line may start with a byte order mark
        try:
            while raw := stream.readline(limit):
                number += 1
                used += len(raw)
                complete = raw.endswith(b"\n")
                start = len(UTF8_BOM) if number == 1 and raw.startswith(UTF8_BOM) else 0
                line = raw[start:len(raw) - complete]
                size = len(line)
                if not complete and len(raw) == limit:  # over max_document_bytes: its first bytes and its size
                    rest, newline = _skip_rest_of_line(stream)
                    size, used = size + rest, used + rest + newline
                limit = max_document_bytes + 1
                decoded.consumed(used)
                location = DocumentLocation(path, number)
                if size > max_document_bytes:
                    records += 1
                    expected = f"document of {size} bytes exceeds max_document_bytes={max_document_bytes}"
                    yield location, BadRecord(location, "too_large", expected, _preview(line))
                elif line.strip():
                    records += 1
                    yield location, _record(location, line)
        except CORRUPT_SHARD_ERRORS as exc:
            total = _file_size(path, handle)
            unreadable = total - decoded.compressed_offset(used)
            location = DocumentLocation(path, number + 1)
            expected = (f"{compression} {_truncated(number, exc)}; {unreadable} of {total} compressed bytes decode "
                        f"to no record (the records in them are lost; {records} recovered before)")
            logger.warning("%s: %s", path, expected)
            yield location, TruncatedShard(location, "truncated_shard", expected, "", records_recovered=records,
                                           unreadable_bytes=unreadable, compressed_bytes=total)


def _skip_rest_of_line(stream: io.BufferedReader) -> tuple[int, int]:
    """Read past the end of the current line in bounded chunks; return how many bytes it had left before its
    newline, and 1 if it had a newline (0 at the end of the file)."""
    skipped = 0
    while chunk := stream.readline(CHUNK_BYTES):
        if chunk.endswith(b"\n"):
            return skipped + len(chunk) - 1, 1
        skipped += len(chunk)
    return skipped, 0
