"""The documents-directory layout every corpus stage reads and writes: ``<dir>/<source>/<shard>.jsonl.gz``."""
from __future__ import annotations

from pathlib import Path

from steps.common.documents import list_shards

SHARD_SUFFIXES = (".jsonl.gz", ".jsonl.zst", ".jsonl")
DOCUMENTS_DIR = "documents"
QUARANTINE_DIR = "quarantine"  # bad input records, kept with their file and line


def source_shards(documents_dir: str | Path) -> dict[str, list[Path]]:
    """``{source name: shard paths}``, both sorted, for the source subfolders of ``documents_dir``.

    Hidden folders and folders without shards are ignored. A shard lying directly in
    ``documents_dir`` (outside any source folder) is an error, since its source would be unknown.
    """
    documents_dir = Path(documents_dir)
    if not documents_dir.is_dir():
        raise FileNotFoundError(f"{documents_dir}: expected a documents directory (<source>/<shard>.jsonl.gz)")
    stray = [p for p in documents_dir.iterdir() if p.is_file() and p.name.endswith(SHARD_SUFFIXES)]
    if stray:
        raise ValueError(f"{stray[0]}: shard outside a source folder; expected {documents_dir}/<source>/<shard>")
    folders = [f for f in sorted(documents_dir.iterdir()) if f.is_dir() and not f.name.startswith(".")]
    shards = {folder.name: list_shards(folder) for folder in folders}
    return {source: paths for source, paths in shards.items() if paths}


def shard_stem(shard: Path, source_dir: Path) -> str:
    """The shard's path below its source folder without the jsonl suffix (``sub/web-00001``)."""
    relative = shard.relative_to(source_dir).as_posix()
    for suffix in SHARD_SUFFIXES:
        if relative.endswith(suffix):
            return relative[: -len(suffix)]
    raise ValueError(f"{shard}: expected a name ending in one of {', '.join(SHARD_SUFFIXES)}")

