"""Documents -> OLMo token files: raw memmap ``.npy`` (no header) plus dolma-style provenance ``.csv.gz``.

For every document shard ``<documents_dir>/<source>/<name>.jsonl.gz`` this writes

- ``tokens/<source>/<name>.npy``: the documents' token ids, each ending in one EOS, concatenated, as raw
  little-endian ``uint16`` (when every id of the tokenizer fits) or ``uint32``;
- ``tokens/<source>/<name>.csv.gz``: one row per document, ``start,end,id,src,loc,source``: dolma's five
  columns (token span with ``end`` exclusive and the EOS at ``end - 1``; ``src`` the shard path relative to
  ``documents_dir``; ``loc`` the document's 1-based line in that shard), then the document's ``source``
  field; no header; with ``<name>.ends.bin`` and ``<name>.blocks.bin`` beside it for random access
  (:mod:`steps.data.provenance`);
- ``done/<source>/<name>.json``: written last; a shard with its marker and both files is skipped on re-run.

As ``dolma tokens`` does, a document's text is stripped of leading and trailing whitespace before it is
encoded, a document with nothing left is skipped and counted (``empty_documents``), and EOS is appended
unless the document's last token already is EOS (a text ending in the literal ``<|endoftext|>``), so the
token ids equal dolma's for the same documents and tokenizer.

Shards are processed in parallel on the step's engine (:mod:`steps.common.engine`); the bytes written do not depend on it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

import fsspec
import numpy as np
from tokenizers import Tokenizer

from steps.common.artifacts import TOKENIZER_DIR, Artifact
from steps.common.engine import Engine, LocalEngine
from steps.common.files import replacing
from steps.common.documents import list_shards, read_documents
from steps.data.provenance import ProvenanceWriter, sidecar_paths
from steps.corpus.shards import run_shard_jobs
from steps.data.tokenizer import parse_tokenizer

TOKENS_DIR = "tokens"
DONE_DIR = "done"
SUMMARY_FILE = "summary.json"
TOKENIZER_FILE = "tokenizer.json"
SHARD_SUFFIXES = (".jsonl.gz", ".jsonl.zst", ".jsonl")
TOKEN_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}

T = TypeVar("T")


def tokenizer_file(artifact: Artifact) -> Path:
    """The tokenizer file of a tokenizer, tokens or instances artifact, or of a model imported with its tokenizer
    (``import_hf``: in its ``tokenizer/`` folder)."""
    own = artifact.path / TOKENIZER_FILE
    imported = artifact.path / TOKENIZER_DIR / TOKENIZER_FILE
    return imported if not own.is_file() and imported.is_file() else own


def token_dtype(max_token_id: int) -> str:
    """Name of the narrowest stored dtype that holds ids up to ``max_token_id``: uint16 below 65,536."""
    if max_token_id < 0:
        raise ValueError(f"max_token_id must be non-negative, got {max_token_id}")
    for name, dtype in TOKEN_DTYPES.items():
        if max_token_id <= np.iinfo(dtype).max:
            return name
    raise ValueError(f"token id {max_token_id} does not fit in uint32")


@dataclass(frozen=True)
class ShardJob:
    """Everything one worker needs to tokenize one shard."""

    shard: str  # absolute path of the document shard
    source_shard: str  # shard path relative to documents_dir (the provenance ``src``)
    stem: str  # output name relative to tokens/ and done/, without extension
    output_dir: str
    tokenizer_file: str
    tokenizer_sha256: str
    eos_token_id: int
    dtype: str
    batch_size: int

    @property
    def tokens_path(self) -> Path:
        return Path(self.output_dir, TOKENS_DIR, f"{self.stem}.npy")

    @property
    def provenance_path(self) -> Path:
        return Path(self.output_dir, TOKENS_DIR, f"{self.stem}.csv.gz")

    @property
    def marker_path(self) -> Path:
        return Path(self.output_dir, DONE_DIR, f"{self.stem}.json")

    @property
    def settings(self) -> dict[str, Any]:
        """What the output bytes depend on; a done marker with other settings is not trusted."""
        return {
            "source_shard": self.source_shard,
            "tokenizer_sha256": self.tokenizer_sha256,
            "eos_token_id": self.eos_token_id,
            "dtype": self.dtype,
        }


def _shard_stem(relative: Path) -> str:
    name = relative.name
    suffix = next(s for s in SHARD_SUFFIXES if name.endswith(s))
    return (relative.parent / name[: -len(suffix)]).as_posix()


def _plan_jobs(documents_dir: Path, output_dir: Path, **settings: Any) -> list[ShardJob]:
    shards = list_shards(documents_dir)
    if not shards:
        raise ValueError(f"{documents_dir}: no document shards (*.jsonl, *.jsonl.gz, *.jsonl.zst) found")
    jobs: dict[str, ShardJob] = {}
    for shard in shards:
        relative = shard.relative_to(documents_dir)
        stem = _shard_stem(relative)
        if stem in jobs:
            other = jobs[stem].source_shard
            raise ValueError(f"shards {other} and {relative.as_posix()} would write the same token file")
        jobs[stem] = ShardJob(
            shard=str(shard), source_shard=relative.as_posix(), stem=stem, output_dir=str(output_dir), **settings
        )
    return list(jobs.values())


def with_eos(ids: list[int], eos_token_id: int) -> list[int]:
    """A document's token ids ending in exactly the one EOS dolma gives it: appended unless the last id is
    already EOS (dolma's ``add_special_tokens``). Unlike dolma, an empty encoding also gets one, so every
    document keeps at least its EOS."""
    return ids if ids and ids[-1] == eos_token_id else [*ids, eos_token_id]


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


_TOKENIZERS: dict[str, Tokenizer] = {}


def _cached_tokenizer(path: str) -> Tokenizer:
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = parse_tokenizer(Path(path).read_bytes(), path)
    return _TOKENIZERS[path]


def _write_shard(job: ShardJob) -> dict[str, Any]:
    """Tokenize one shard batch by batch into temporary files, then move them into place."""
    tokenizer = _cached_tokenizer(job.tokenizer_file)
    dtype = TOKEN_DTYPES[job.dtype]
    job.tokens_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_tokens = job.tokens_path.with_name(job.tokens_path.name + ".tmp")
    outputs = [job.provenance_path, *sidecar_paths(job.provenance_path)]
    temporary = [path.with_name(path.name + ".tmp") for path in outputs]
    digest = hashlib.sha256()
    num_tokens = num_documents = num_empty = 0
    with open(tmp_tokens, "wb") as token_out, ProvenanceWriter(*temporary) as provenance:
        for batch in _batched(read_documents(job.shard), job.batch_size):
            texts = [(location, doc, doc["text"].strip()) for location, doc in batch]
            kept = [(location, doc, text) for location, doc, text in texts if text]
            encodings = tokenizer.encode_batch([text for _, _, text in kept], add_special_tokens=False)
            ids: list[int] = []
            for (location, doc, _), encoding in zip(kept, encodings):
                start = num_tokens + len(ids)
                ids.extend(with_eos(encoding.ids, job.eos_token_id))
                end = num_tokens + len(ids)
                provenance.write(start, end, doc["id"], job.source_shard, location.line, doc["source"])
            data = np.asarray(ids, dtype=dtype).tobytes()
            token_out.write(data)
            digest.update(data)
            num_tokens += len(ids)
            num_documents += len(kept)
            num_empty += len(batch) - len(kept)
    os.replace(tmp_tokens, job.tokens_path)
    for done, path in zip(temporary, outputs):
        os.replace(done, path)
    return {
        "path": Path(TOKENS_DIR, f"{job.stem}.npy").as_posix(),
        "provenance": Path(TOKENS_DIR, f"{job.stem}.csv.gz").as_posix(),
        "source_shard": job.source_shard,
        "tokens": num_tokens,
        "documents": num_documents,
        "empty_documents": num_empty,
        "dtype": job.dtype,
        "sha256": digest.hexdigest(),
    }


def _finished_record(job: ShardJob) -> dict[str, Any] | None:
    """The record of a shard finished by an earlier run with the same settings, if any."""
    outputs = [job.tokens_path, job.provenance_path, *sidecar_paths(job.provenance_path)]
    if not (job.marker_path.is_file() and all(path.is_file() for path in outputs)):
        return None
    marker = json.loads(job.marker_path.read_text())
    return marker["file"] if marker.get("settings") == job.settings else None


def tokenize_shard(job: ShardJob) -> dict[str, Any]:
    """Tokenize one shard unless an earlier run finished it; return its file record."""
    record = _finished_record(job)
    if record is None:
        record = _write_shard(job)
        with replacing(job.marker_path) as handle:
            handle.write(json.dumps({"settings": job.settings, "file": record}, sort_keys=True).encode())
    return record


def tokenize_documents(
    documents_dir: str | Path,
    tokenizer_file: str | Path,
    output_dir: str | Path,
    eos_token_id: int,
    engine: Engine = LocalEngine(),
    batch_size: int = 512,
) -> dict[str, Any]:
    """Tokenize every shard of ``documents_dir`` into ``output_dir``; return (and write) the summary.

    ``batch_size`` is the number of documents encoded at once, which bounds memory per worker. The
    tokenizer file is copied to ``output_dir/tokenizer.json`` so the token files travel with it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    documents_dir, output_dir = Path(documents_dir), Path(output_dir)
    with fsspec.open(str(tokenizer_file), "rb") as handle:
        tokenizer_bytes = handle.read()
    tokenizer = parse_tokenizer(tokenizer_bytes, str(tokenizer_file))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if tokenizer.id_to_token(eos_token_id) is None:
        raise ValueError(f"{tokenizer_file}: eos_token_id {eos_token_id} is outside the vocabulary ({vocab_size})")
    dtype = token_dtype(max(vocab_size - 1, eos_token_id))

    output_dir.mkdir(parents=True, exist_ok=True)
    local_tokenizer = output_dir / TOKENIZER_FILE
    local_tokenizer.write_bytes(tokenizer_bytes)
    tokenizer_sha256 = hashlib.sha256(tokenizer_bytes).hexdigest()
    jobs = _plan_jobs(
        documents_dir,
        output_dir,
        tokenizer_file=str(local_tokenizer),
        tokenizer_sha256=tokenizer_sha256,
        eos_token_id=eos_token_id,
        dtype=dtype,
        batch_size=batch_size,
    )
    records = run_shard_jobs(jobs, tokenize_shard, engine, label="tokenize")

    summary = {
        "tokenizer_sha256": tokenizer_sha256,
        "eos_token_id": eos_token_id,
        "dtype": dtype,
        "files": records,
        "total_tokens": sum(r["tokens"] for r in records),
        "total_documents": sum(r["documents"] for r in records),
        "total_empty_documents": sum(r["empty_documents"] for r in records),
    }
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
