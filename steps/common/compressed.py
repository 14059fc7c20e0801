"""Reading the lines of a shard through fsspec, whatever it is:

- the compression is told by the file's first bytes, never by its name: gzip (``1f 8b``), zstd
  (``28 b5 2f fd``, or a skippable frame), else plain text; a name that says otherwise gets a warning;
- a UTF-8 byte order mark at the start of the file is skipped (``json.loads`` of a str rejects it);
- a line over a limit is measured whole without being held;
- decompression runs one step at a time, so a truncated or corrupt shard gives every line before the
  damage, then raises one of :data:`CORRUPT_SHARD_ERRORS`; :meth:`ShardReader.unreadable_bytes` then says
  how many compressed bytes decode to none of the lines read: the file's size minus the fewest leading
  bytes that decode to them all. The lines in those bytes are lost and cannot be counted (a zstd block
  decodes only whole; a gzip stream cut short has no end), so the bytes are what can be reported.
"""
from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections import deque
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple

import fsspec
import zstandard

logger = logging.getLogger(__name__)

CHUNK_BYTES = 2**20  # the most decompressed bytes one step gives
PIECE_BYTES = 2**16  # compressed bytes read and decoded at a time
# What reading a truncated or corrupt shard raises.
CORRUPT_SHARD_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError)
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UTF8_BOM = b"\xef\xbb\xbf"
SUFFIX_COMPRESSION = {".gz": "gzip", ".zst": "zstd"}


def compression_of(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``plain``, from a file's first four bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and int.from_bytes(head[:4], "little") >> 4 == 0x184D2A5):
        return "zstd"  # a zstd frame, or a skippable frame (magic 0x184D2A5?)
    return "plain"


class _ChunkStream(io.RawIOBase):
    """A readable raw stream over byte chunks, so that io.BufferedReader gives a bounded readline."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


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
    block, frame checksum and skippable frame ends, and whether the bytes so far end between frames
    (python-zstandard's decoder is silent when a stream is cut inside a frame)."""

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

    def _expect(self, header_bytes: int, step: Callable[[int], None], skip: int = 0) -> None:
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


_DECODERS = {"plain": _Plain, "gzip": _Gzip, "zstd": _Zstd}


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

    def __init__(self, handle: BinaryIO, head: bytes, decoder: Any):
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


def _file_size(path: str, handle: BinaryIO) -> int:
    """The size of the open file at ``path``: from its filesystem, or else by reading it to the end."""
    try:
        fs, fs_path = fsspec.core.url_to_fs(path)
        size = fs.size(fs_path)
    except Exception:  # a filesystem that cannot say (each raises its own errors)
        size = None
    if size is None:
        size = handle.tell() + sum(map(len, iter(lambda: handle.read(PIECE_BYTES), b"")))
    return size


class ShardReader:
    """The lines of an open shard (see the module docstring); ``compression`` is what its first bytes say,
    ``line_number`` the number of the last line begun. Iterating it gives each line without its newline."""

    def __init__(self, path: str, handle: BinaryIO):
        self._path, self._handle = path, handle
        head = handle.read(4)
        self.compression = compression_of(head)
        self._decoded = _Decoded(handle, head, _DECODERS[self.compression]())
        self._stream = io.BufferedReader(_ChunkStream(self._decoded.chunks()), buffer_size=CHUNK_BYTES)
        self._used = 0  # decompressed bytes of the lines begun
        self.line_number = 0

    def __iter__(self) -> Iterator[bytes]:
        return (line for _, line, _ in self.lines())

    def lines(self, max_line_bytes: int | None = None) -> Iterator[tuple[int, bytes, int]]:
        """Yield ``(line number, line without its newline, its size in bytes)``. A line over ``max_line_bytes``
        is never held whole: only its first ``max_line_bytes + 1`` bytes come, with its full size."""
        limit = -1 if max_line_bytes is None else max_line_bytes + 1
        read = -1 if max_line_bytes is None else limit + len(UTF8_BOM)  # the first line may start with a BOM
        while raw := self._stream.readline(read):
            self.line_number += 1
            self._used += len(raw)
            complete = raw.endswith(b"\n")
            start = len(UTF8_BOM) if self.line_number == 1 and raw.startswith(UTF8_BOM) else 0
            line = raw[start:len(raw) - complete]
            size = len(line)
            if not complete and len(raw) == read:  # over max_line_bytes: its first bytes, and its size
                rest, newline = self._skip_rest_of_line()
                size, self._used = size + rest, self._used + rest + newline
            read = limit
            self._decoded.consumed(self._used)
            yield self.line_number, line, size

    def _skip_rest_of_line(self) -> tuple[int, int]:
        """Read past the end of the current line in bounded chunks; return how many bytes it had left before its
        newline, and 1 if it had a newline (0 at the end of the file)."""
        skipped = 0
        while chunk := self._stream.readline(CHUNK_BYTES):
            if chunk.endswith(b"\n"):
                return skipped + len(chunk) - 1, 1
            skipped += len(chunk)
        return skipped, 0

    def unreadable_bytes(self) -> tuple[int, int]:
        """After one of :data:`CORRUPT_SHARD_ERRORS`: how many of the file's compressed bytes decode to no line
        read (its size minus the fewest leading bytes that decode to every line begun), and its size."""
        total = _file_size(self._path, self._handle)
        return total - self._decoded.compressed_offset(self._used), total


@contextmanager
def open_shard(path: str) -> Iterator[ShardReader]:
    """Open a shard (a local path or any fsspec URL, which names it in the warnings) for reading its lines."""
    with fsspec.open(path, "rb") as handle:
        shard = ShardReader(path, handle)
        named = next((kind for suffix, kind in SUFFIX_COMPRESSION.items() if path.endswith(suffix)), "plain")
        if named != shard.compression:
            logger.warning("%s: the name says %s but the bytes are %s; read as %s", path, named, shard.compression,
                           shard.compression)
        yield shard
