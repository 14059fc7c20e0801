"""Checksummed directories written atomically: what model directories (``steps.common.models``) and the sharded
training checkpoints (``steps.train.sharded_checkpoint``) are made of.

A directory is filled in a temporary sibling that is renamed into place once complete (``atomic_directory``)
and carries ``checksums.sha256`` (``sha256sum -c`` format), which readers verify (``verify_checksums``).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from steps.common.files import file_sha256

CHECKSUM_FILE = "checksums.sha256"


class CheckpointError(RuntimeError):
    """A model directory or checkpoint that is incomplete, corrupted or does not fit the model."""


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not valid JSON (not UTF-8 text)") from None


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file in ``directory``."""
    return {name: file_sha256(directory / name) for name in names}


def write_checksums(directory: Path, hashes: dict[str, str] | None = None) -> None:
    """Write ``checksums.sha256`` from ``hashes`` (default: hash every other file in ``directory``)."""
    if hashes is None:
        hashes = file_hashes(directory, [p.name for p in directory.iterdir() if p.is_file() and p.name != CHECKSUM_FILE])
    lines = [f"{digest}  {name}\n" for name, digest in sorted(hashes.items())]
    (directory / CHECKSUM_FILE).write_text("".join(lines), encoding="utf-8")


def listed_checksums(directory: str | Path) -> list[tuple[str, str]]:
    """The ``(file name, sha256)`` pairs of ``checksums.sha256``; fails if it is missing or malformed."""
    directory = Path(directory)
    listing = directory / CHECKSUM_FILE
    if not listing.is_file():
        raise CheckpointError(f"{directory}: no {CHECKSUM_FILE}; not a complete model directory or checkpoint")
    try:
        text = listing.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{listing}: expected '<sha256>  <file name>' lines (not UTF-8 text)") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        expected, _, name = line.partition("  ")
        if not name:
            raise CheckpointError(f"{listing}:{number}: expected '<sha256>  <file name>'")
        pairs.append((name, expected))
    return pairs


def verify_checksums(directory: str | Path, part: tuple[int, int] = (0, 1)) -> None:
    """Fail unless every file listed in ``checksums.sha256`` exists with the listed hash.

    ``part`` ``(i, n)`` checks only every n-th listed file starting at the i-th, so n ranks can share the work.
    """
    directory = Path(directory)
    index, count = part
    for name, expected in listed_checksums(directory)[index::count]:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {CHECKSUM_FILE} but missing")
        if file_sha256(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match {CHECKSUM_FILE} (file corrupted or changed)")


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target``.

    Temporary names start with a dot, so readers scanning for complete directories skip them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        write_checksums(staging)
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
