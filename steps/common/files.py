"""What stands for a file in a hash: the sha256 of its bytes, or, for a file behind an fsspec URL, its identity
(sha256 of a local file's bytes; a remote one's URL with its ETag-like keys, size and modification time). And
:func:`replacing`, how a job writes a file that must never be seen half-written."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import fsspec

logger = logging.getLogger(__name__)

# fs.info keys that identify a remote file's content, most specific first.
CONTENT_INFO_KEYS = ("sha256", "ETag", "etag", "e_tag", "md5Hash", "md5", "blob_id", "checksum")
TIME_INFO_KEYS = ("mtime", "LastModified", "last_modified", "updated", "created")


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A handle on ``<path>.tmp`` (folders made), renamed to ``path`` when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as handle:
        yield handle
    os.replace(partial, path)


def file_sha256(path: Path, chunk_size: int = 2**22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def shard_name(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How an input file is named everywhere: a local file by its absolute path, any other by its URL."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def file_identity(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """sha256 of a local file's bytes; for a remote one, its URL plus ETag-like keys, size and mtime."""
    if is_local(fs):
        digest = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            while chunk := handle.read(2**22):
                digest.update(chunk)
        return digest.hexdigest()
    info = fs.info(path)
    lfs = info.get("lfs") or {}  # hf:// files carry their content hash here
    identity = {key: info[key] for key in (*CONTENT_INFO_KEYS, *TIME_INFO_KEYS, "size") if info.get(key) is not None}
    if lfs.get("sha256"):
        identity["sha256"] = lfs["sha256"]
    if not set(identity) & {*CONTENT_INFO_KEYS, *TIME_INFO_KEYS}:
        logger.warning("%s: no ETag or modification time; its fingerprint covers only its size", shard_name(fs, path))
    return json.dumps({"url": fs.unstrip_protocol(path), **identity}, sort_keys=True, default=str)
