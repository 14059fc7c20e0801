"""Files under one URL (a local path or any fsspec URL), with the few operations a shared workspace needs:
atomic JSON records, an atomic create-if-absent (the basis of leases), and parallel directory transfers.

Keys are ``/``-separated paths relative to the store's root. Credentials and endpoints come from each
backend's usual environment and configuration (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.callbacks import Callback
from tqdm import tqdm

_S3 = {"s3", "s3a"}
_GCS = {"gs", "gcs"}
_TMP = ".store-tmp-"  # local temporary files; never listed


class _Bytes(Callback):
    """One tqdm bar in bytes, fed by any number of concurrent transfers (fsspec calls relative_update)."""

    def __init__(self, bar: tqdm):
        super().__init__()
        self.bar = bar
        self.lock = threading.Lock()

    def set_size(self, size: int | None) -> None:  # per-file sizes: the bar already has the total
        pass

    def relative_update(self, inc: int = 1) -> None:
        with self.lock:
            self.bar.update(inc)


class _PerFile(Callback):
    """The callback of a batch transfer (fsspec's ``put`` of many files): it counts files, which the bar does
    not show; each file's transfer reports its bytes to ``bytes_callback``."""

    def __init__(self, bytes_callback: _Bytes):
        super().__init__()
        self.bytes_callback = bytes_callback

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Callback:
        return self.bytes_callback

    def call(self, *args: Any, **kwargs: Any) -> None:
        pass


_Move = Callable[[list[str], _Bytes], None]  # moves a batch of files (by name) at once, reporting bytes


def _into_place(dest: Path, fill: Callable[[Path], None]) -> None:
    """Make ``dest`` by filling a temporary path beside it and renaming that into place, so that
    readers never see a partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{_TMP}{uuid.uuid4().hex}"
    try:
        fill(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dest)


class Store:
    """One place under a URL: a local path, file://, s3://bucket/prefix, gs://bucket/prefix, memory://...,
    any fsspec URL. ``fs`` is its fsspec filesystem."""

    block_size: int = 64 * 2**20
    """Part size of S3 multipart uploads and ranged downloads (a file of at least twice this is split)."""
    part_concurrency: int = 4
    """Parts of one S3 file in flight at once."""
    workers: int = 8
    """Files transferred at once by the tree operations (memory: up to workers x part_concurrency x block_size)."""

    def __init__(self, url: str):
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        # Remote instances are private and list without a cache, so that every call sees other processes' writes.
        options = {} if protocol in ("file", "local") else {"skip_instance_cache": True, "use_listings_cache": False}
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        self.is_local = "file" in protocols
        self._protocol = protocol
        self._root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self.url = self._root if self.is_local else f"{protocol}://{self._root.lstrip('/')}"

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- keys ---------------------------------------------------------------------------------------

    @staticmethod
    def _key(key: str) -> str:
        parts = [part for part in key.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"store keys may not leave the store: {key!r}")
        return "/".join(parts)

    def _path(self, key: str) -> str:
        key = self._key(key)
        return f"{self._root}/{key}" if key else self._root

    def _url(self, key: str) -> str:
        key = self._key(key)
        return f"{self.url}/{key}" if key else self.url

    def local_path(self, key: str = "") -> Path:
        """The path of ``key`` on this machine (local stores only)."""
        if not self.is_local:
            raise ValueError(f"{self.url} is not a local store")
        return Path(self._path(key))

    # -- files --------------------------------------------------------------------------------------

    def _missing(self, key: str) -> FileNotFoundError:
        """The error for a missing ``key``, naming its URL."""
        return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self._url(key))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise self._missing(key) from None

    def read_json(self, key: str) -> Any:
        """The JSON document at ``key``; anything else raises ValueError (nothing is ever unpickled)."""
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(f"{self._url(key)}: not JSON ({exc})") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write (or overwrite) ``key`` atomically: readers see the old or the new bytes, never a part."""
        if self.is_local:
            _into_place(self.local_path(key), lambda tmp: _write_synced(tmp, data))
        else:
            self.fs.pipe_file(self._path(key), data)

    def write_many(self, items: Mapping[str, bytes]) -> None:
        """Write (or overwrite) several keys at once, each atomically (see :meth:`write_bytes`)."""
        if isinstance(self.fs, AsyncFileSystem):
            self.fs.pipe({self._path(key): data for key, data in items.items()}, batch_size=self.workers)
        else:
            _in_threads(lambda key: self.write_bytes(key, items[key]), list(items), self.workers)

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2).encode())

    def create(self, key: str, data: bytes) -> bool:
        """Atomically create ``key`` if it is absent: True if this call created it, False if it existed.

        Local: the bytes go to a temporary file that is hard-linked into place (``link`` fails if the
        name exists, like ``O_EXCL``, and readers never see a partial file). S3: PutObject with
        ``If-None-Match: *`` (412 PreconditionFailed and 409 ConditionalRequestConflict, a concurrent
        conditional write, both mean False). GCS: an upload with ``ifGenerationMatch=0`` (untested here).
        A request retried after a lost response can report False for a create that succeeded: callers
        must treat False as "someone else may hold it", never as proof that it is complete.
        """
        if self.is_local:
            dest = self.local_path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f"{_TMP}{uuid.uuid4().hex}"
            try:
                _write_synced(tmp, data)
                os.link(tmp, dest)
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        if self._protocol not in _S3 | _GCS:
            raise NotImplementedError(f"{self.url}: no atomic create for protocol {self._protocol!r}")
        try:  # s3fs and gcsfs both turn the precondition failure into FileExistsError
            self.fs.pipe_file(self._path(key), data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            cause = getattr(exc.__cause__, "response", None) or {}
            if cause.get("Error", {}).get("Code") == "ConditionalRequestConflict":
                return False
            raise

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def delete(self, key: str, recursive: bool = False) -> None:
        """Delete ``key`` (with ``recursive``, everything under it); a missing key is fine."""
        if not self._key(key):
            raise ValueError(f"{self.url}: refusing to delete the store's root")
        try:
            self.fs.rm(self._path(key), recursive=recursive)
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        """The keys of all files under ``prefix`` (recursive), relative to the store's root, sorted."""
        return sorted(self._files(prefix))

    def size(self, key: str) -> int:
        try:
            return self.fs.size(self._path(key))
        except FileNotFoundError:
            raise self._missing(key) from None

    def _files(self, prefix: str) -> dict[str, int]:
        """Key -> size of every file under ``prefix``."""
        found = self.fs.find(self._path(prefix), detail=True)
        start = len(self._root) + 1
        return {
            path[start:]: info["size"]
            for path, info in found.items()
            if not (self.is_local and os.path.basename(path).startswith(_TMP))
        }

    def _tree(self, prefix: str) -> dict[str, int]:
        """Path relative to ``prefix`` -> size, of every file under ``prefix``."""
        prefix = self._key(prefix)
        return {key[len(prefix) + 1 :] if prefix else key: size for key, size in self._files(prefix).items()}

    # -- trees --------------------------------------------------------------------------------------

    def put_files(self, files: Mapping[str, Path], last: Collection[str] = (), progress: bool = False) -> int:
        """Upload local files (key -> local path), the keys in ``last`` only after all others (in one batch: an
        async backend such as s3fs takes them on its event loop, ``workers`` at a time). A local store takes
        hard links where it can (so the source files must not be modified in place afterwards), else copies.
        Returns the bytes moved."""
        sizes = {key: Path(path).stat().st_size for key, path in files.items()}

        def move(keys: list[str], cb: _Bytes) -> None:
            if isinstance(self.fs, AsyncFileSystem):
                self.fs.put(
                    [str(files[key]) for key in keys], [self._path(key) for key in keys], callback=_PerFile(cb),
                    batch_size=self.workers, **self._transfer_options(),
                )
            else:
                _in_threads(lambda key: self._put_file(Path(files[key]), key, cb), keys, self.workers)

        return _transfer(sizes, last, progress, move)

    def put_tree(self, local_dir: Path, prefix: str, last: str | None = None, progress: bool = False) -> int:
        """Upload every file under ``local_dir`` to ``prefix/<relative path>``, ``last`` (a relative path)
        only after all others (see :meth:`put_files`). Returns the bytes moved."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise NotADirectoryError(f"{local_dir}: not a directory")
        files = {f"{prefix}/{rel}": local_dir / rel for rel in local_files(local_dir)}
        return self.put_files(files, () if last is None else [f"{prefix}/{last}"], progress)

    def get_tree(self, prefix: str, local_dir: Path, progress: bool = False) -> int:
        """Download every file under ``prefix`` into ``local_dir``; returns the bytes moved."""
        return self._get_tree(prefix, Path(local_dir), None, progress)

    def copy_tree_to(
        self, prefix: str, other: Store, other_prefix: str, last: str | None = None, progress: bool = False
    ) -> int:
        """Copy every file under ``prefix`` to ``other_prefix`` in ``other``, ``last`` (relative to ``prefix``)
        after all others: directly between local paths or from/to a local side, server-side within one
        backend, else through a local temporary directory. Returns the bytes moved."""
        if self.is_local:
            return other.put_tree(self.local_path(prefix), other_prefix, last, progress)
        if other.is_local:
            return self._get_tree(prefix, other.local_path(other_prefix), last, progress)
        if type(self.fs) is type(other.fs) and self.fs.storage_options == other.fs.storage_options:
            sizes = self._tree(prefix)

            def copy(rel: str, cb: _Bytes) -> None:
                self.fs.cp_file(self._path(f"{prefix}/{rel}"), other._path(f"{other_prefix}/{rel}"))
                cb.relative_update(sizes[rel])

            return _transfer(sizes, _last(last), progress, _each(copy, self.workers))
        with tempfile.TemporaryDirectory(prefix="store-copy-") as tmp:
            moved = self.get_tree(prefix, Path(tmp), progress)
            other.put_tree(Path(tmp), other_prefix, last, progress)
            return moved

    def _get_tree(self, prefix: str, local_dir: Path, last: str | None, progress: bool) -> int:
        def get(rel: str, cb: _Bytes) -> None:
            self._get_file(f"{prefix}/{rel}", local_dir / rel, cb)

        return _transfer(self._tree(prefix), _last(last), progress, _each(get, self.workers))

    def _put_file(self, src: Path, key: str, cb: _Bytes) -> None:
        if self.is_local:
            _into_place(self.local_path(key), lambda tmp: _link_or_copy(src, tmp))
            cb.relative_update(src.stat().st_size)
        else:
            self.fs.put_file(str(src), self._path(key), callback=cb, **self._transfer_options())

    def _get_file(self, key: str, dest: Path, cb: _Bytes) -> None:
        if self.is_local:
            _into_place(dest, lambda tmp: shutil.copyfile(self._path(key), tmp))
            cb.relative_update(dest.stat().st_size)
        else:
            options = self._transfer_options()
            _into_place(dest, lambda tmp: self.fs.get_file(self._path(key), str(tmp), callback=cb, **options))

    def _transfer_options(self) -> dict[str, int]:
        return {"chunksize": self.block_size, "max_concurrency": self.part_concurrency} if self._protocol in _S3 else {}


def local_files(directory: Path) -> list[str]:
    """The relative paths of the files under a local ``directory`` (not the store's temporary files)."""
    return [
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and not path.name.startswith(_TMP)
    ]


def _last(name: str | None) -> list[str]:
    return [] if name is None else [name]


def _in_threads(move_one: Callable[[str], None], names: list[str], workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(move_one, names))


def _each(move_one: Callable[[str, _Bytes], None], workers: int) -> _Move:
    """A batch move that runs ``move_one(name, callback)`` for each name, ``workers`` at a time."""
    return lambda names, cb: _in_threads(lambda name: move_one(name, cb), names, workers)


def _transfer(sizes: dict[str, int], last: Collection[str], progress: bool, move: _Move) -> int:
    """Move every file of ``sizes`` (name -> size) in one batch, then those in ``last`` in another; returns
    the bytes moved."""
    missing = sorted(set(last) - set(sizes))
    if missing:
        raise FileNotFoundError(f"{missing} (to be moved last) not among the files to move")
    total = sum(sizes.values())
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress, file=sys.stderr) as bar:
        cb = _Bytes(bar)
        first = [name for name in sizes if name not in set(last)]
        for batch in (first, list(last)):
            if batch:
                move(batch, cb)
    return total
