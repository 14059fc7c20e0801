"""Reading shards that may be compressed (gzip, zstd) as a buffered binary stream with a bounded
``readline``, through fsspec. Decompression runs one step at a time, so when a shard is truncated or
corrupt every byte before the break is still delivered before the error is raised."""
from __future__ import annotations

import gzip
import io
import zlib
from contextlib import contextmanager
from typing import Callable, Iterator

import fsspec
import zstandard

CHUNK_BYTES = 2**20
# What reading a truncated or corrupt shard raises.
CORRUPT_SHARD_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError)


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


class _ZstdFrames:
    """Follows zstd frame and block headers through compressed bytes, without decompressing them,
    to tell whether a stream ends between frames: python-zstandard's reader ends silently when a
    stream is cut inside a frame."""

    def __init__(self):
        self._header = bytearray()
        self._expect(4, self._magic)
        self._checksum_bytes = 0

    @property
    def between_frames(self) -> bool:
        return self._step == self._magic and not self._header and not self._skip

    def feed(self, data: bytes) -> bytes:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            step = self._wanted - len(self._header)
            self._header += view[:step]
            view = view[step:]
            if len(self._header) == self._wanted:
                header = int.from_bytes(self._header, "little")
                self._header.clear()
                self._step(header)
        return data

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
        if header & 1:  # the frame's last block
            self._expect(4, self._magic, skip=size + self._checksum_bytes)
        else:
            self._expect(3, self._block, skip=size)


class _Watched:
    """A file whose bytes are shown to ``watch`` as they are read."""

    def __init__(self, handle, watch: Callable[[bytes], bytes]):
        self._handle, self._watch = handle, watch

    def read(self, size: int = -1) -> bytes:
        return self._watch(self._handle.read(size))


def _zstd_chunks(compressed) -> Iterator[bytes]:
    frames = _ZstdFrames()
    source = _Watched(compressed, frames.feed)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    while chunk := reader.read1(CHUNK_BYTES):
        yield chunk
    if not frames.between_frames:
        raise zstandard.ZstdError("the compressed stream ends inside a frame")


@contextmanager
def open_shard(path: str) -> Iterator[io.BufferedReader]:
    """Open a (possibly compressed) shard for bounded binary reading via fsspec."""
    with fsspec.open(path, "rb") as handle:
        if path.endswith(".gz"):
            decompressed = gzip.GzipFile(fileobj=handle, mode="rb")
            chunks = iter(lambda: decompressed.read1(CHUNK_BYTES), b"")
        elif path.endswith(".zst"):
            chunks = _zstd_chunks(handle)
        else:
            chunks = iter(lambda: handle.read(CHUNK_BYTES), b"")
        # read1 returns what one step of decompression gives, so a break loses none of the data before it
        yield io.BufferedReader(_ChunkStream(chunks), buffer_size=CHUNK_BYTES)


