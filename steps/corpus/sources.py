"""Corpus sources: where the documents of a pipeline come from, as validated config objects.

A source is a config dict with a ``name`` (the Dolma ``source`` value of its documents) and a
``type``:

- ``embedded``: an offline corpus made from what any machine with Python has (``kind``:
  ``python-docs``, ``python-code``, ``package-metadata`` or ``system-docs``);
- ``files``: Dolma jsonl(.gz/.zst) shards at fsspec URLs or globs;
- ``huggingface``: a dataset loaded with ``datasets`` (a local ``save_to_disk`` folder works offline).

:func:`source_fingerprint` hashes exactly what :func:`iter_source_documents` reads, so a change of
content changes the fingerprint and nothing else does.

Bad input (invalid JSON or UTF-8, a missing, non-string or blank ``text``, a missing ``id``, a
document over ``max_document_bytes``, a truncated compressed shard) never stops the run silently:
each bad record is quarantined with its file and line and counted by reason, or, with
``strict: true``, fails the run naming file and line. Input shards are read by
:func:`steps.common.documents.read_records` (compression told by magic bytes, a leading UTF-8 BOM
skipped, the records before the damage in a truncated shard kept). Every input file is named one way
everywhere (quarantine rows, messages, logs): a local file by its absolute path, any other by its URL.

Ids are kept as given, as Dolma does (dedup is a stage of its own, by URL and text): a record whose id
another record of the same source already used is kept, and counted (``duplicate_ids``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from array import array
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Union

import fsspec

from steps.common.documents import (
    DEFAULT_MAX_DOCUMENT_BYTES, PREVIEW_BYTES, BadRecord, DocumentLocation, Quarantine, ShardWriter, TruncatedShard,
    list_shards, read_documents, read_records,
)
from steps.common.files import file_identity, shard_name
from olmo_model.config import Config, ConfigError, build_config, require
from steps.corpus.duplicate_ids import count_duplicates, id_digest, write_digests
from steps.corpus.embedded import ADDED, EmbeddedSource, embedded_documents, embedded_fingerprint
from steps.corpus.layout import DOCUMENTS_DIR, QUARANTINE_DIR, SHARD_SUFFIXES
from steps.common.engine import Engine, LocalEngine
from steps.corpus.shards import run_shard_jobs
from steps.corpus.stats import merge_stats

logger = logging.getLogger(__name__)

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class FilesSource(Config):
    """Dolma shards at fsspec URLs: files, folders (every shard below) or globs, read in the given order."""

    name: str
    type: Literal["files"]
    paths: tuple[str, ...]
    strict: bool = False
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES

    def check(self) -> None:
        require(len(self.paths) > 0, f"source {self.name!r}.paths", "at least one path", self.paths)
        require(self.max_document_bytes > 0, f"source {self.name!r}.max_document_bytes", "a positive integer",
                self.max_document_bytes)


@dataclass(frozen=True)
class HuggingFaceSource(Config):
    """A Hugging Face dataset split; ``dataset`` may be a local folder written by ``save_to_disk``."""

    name: str
    type: Literal["huggingface"]
    dataset: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    streaming: bool = True
    max_documents: int | None = None
    strict: bool = False

    def check(self) -> None:
        require(self.max_documents is None or self.max_documents > 0, f"source {self.name!r}.max_documents",
                "a positive integer or null", self.max_documents)

    @property
    def is_local(self) -> bool:
        return Path(self.dataset).is_dir()


SourceSpec = Union[EmbeddedSource, FilesSource, HuggingFaceSource]
SOURCE_TYPES: dict[str, type] = {"embedded": EmbeddedSource, "files": FilesSource, "huggingface": HuggingFaceSource}


def validate_source(spec: Mapping[str, Any] | SourceSpec, where: str = "source") -> SourceSpec:
    """The typed source of a source config block; errors name the source and the key."""
    if isinstance(spec, tuple(SOURCE_TYPES.values())):
        return spec
    require(isinstance(spec, Mapping), where, "a mapping with 'name' and 'type'", spec)
    name = spec.get("name")
    require(isinstance(name, str) and bool(SOURCE_NAME.match(name)), f"{where}.name",
            "a folder-safe name (letters, digits, '.', '_', '-')", name)
    source_type = spec.get("type")
    if source_type not in SOURCE_TYPES:
        raise ConfigError(f"{where} {name!r}.type: expected one of {', '.join(SOURCE_TYPES)}, got {source_type!r}")
    return build_config(SOURCE_TYPES[source_type], spec, f"{where} {name!r}")


# ---------------------------------------------------------------------------------------------
# Files sources: Dolma shards through fsspec.


def _expand_paths(spec: FilesSource) -> list[tuple[fsspec.AbstractFileSystem, str]]:
    """Every shard named by ``spec.paths``, as ``(filesystem, path)``: globs and folders sorted."""
    shards: list[tuple[fsspec.AbstractFileSystem, str]] = []
    for index, url in enumerate(spec.paths):
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            raise ImportError(f"source {spec.name!r}.paths[{index}]: {url} needs an fsspec backend that is not "
                              f"installed ({exc}); for s3:// and gs:// run .venv/bin/pip install -e '.[cloud]'") from None
        if fsspec.core.has_magic(path):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.endswith(SHARD_SUFFIXES))
        elif fs.exists(path):
            found = [path]
        else:
            raise FileNotFoundError(f"source {spec.name!r}.paths[{index}]: {url} does not exist")
        if not found:
            raise FileNotFoundError(f"source {spec.name!r}.paths[{index}]: {url} matched no shard")
        for match in found:
            if not match.endswith(SHARD_SUFFIXES):
                raise ValueError(f"source {spec.name!r}: {match} is not a shard ({', '.join(SHARD_SUFFIXES)})")
            if (fs, match) not in shards:
                shards.append((fs, match))
    return shards


def _as_source(doc: dict[str, Any], name: str, location: DocumentLocation) -> dict[str, Any] | BadRecord:
    """The document with ``source`` set to the source's name (a different original goes to metadata)."""
    if doc.get("source") == name:
        return doc
    metadata = doc.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        return BadRecord(location, "metadata_not_object", "field 'metadata' must be an object or null", "")
    if "source" in doc:
        metadata = {**metadata, "original_source": doc["source"]}
    return {**doc, "source": name, "metadata": metadata}


def _files_records(spec: FilesSource, url: str) -> Iterator[tuple[DocumentLocation, dict[str, Any] | BadRecord]]:
    for location, record in read_records(url, spec.max_document_bytes):
        if isinstance(record, TruncatedShard):  # quarantine rows are output: they name the compression first
            record = replace(record, expected=f"{record.compression} {record.expected}")
            logger.warning("%s", record.message)
        yield location, record if isinstance(record, BadRecord) else _as_source(record, spec.name, location)


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets.


@lru_cache(maxsize=None)
def _resolved_revision(dataset: str, revision: str | None) -> str | None:
    """The commit sha a hub dataset's revision points to now, or None when the hub cannot be asked."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(dataset, revision=revision).sha
    except Exception as exc:  # offline, missing package, private dataset...: fall back to the name
        logger.warning("could not resolve revision of %s (%s); fingerprinting by name only", dataset, exc)
        return None


def _load_local_split(spec: HuggingFaceSource):
    import datasets

    loaded = datasets.load_from_disk(spec.dataset)
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise ConfigError(f"source {spec.name!r}.split: {spec.split!r} not in {spec.dataset} ({', '.join(loaded)})")
        loaded = loaded[spec.split]
    return loaded


def _huggingface_fingerprint(spec: HuggingFaceSource) -> str:
    selection = ["huggingface", spec.split, spec.text_field, spec.id_field, spec.url_field, spec.max_documents]
    if spec.is_local:
        content = _load_local_split(spec)._fingerprint
    else:
        content = [spec.dataset, spec.config, spec.revision, _resolved_revision(spec.dataset, spec.revision)]
    return hashlib.sha256(json.dumps([selection, content]).encode()).hexdigest()


def _huggingface_records(spec: HuggingFaceSource) -> Iterator[tuple[DocumentLocation, dict[str, Any] | BadRecord]]:
    if spec.is_local:
        rows = _load_local_split(spec)
    else:
        import datasets

        revision = _resolved_revision(spec.dataset, spec.revision) or spec.revision
        rows = datasets.load_dataset(
            spec.dataset, spec.config, split=spec.split, revision=revision, streaming=spec.streaming
        )
    where = f"{Path(spec.dataset).resolve() if spec.is_local else spec.dataset} [{spec.split}]"
    for index, row in enumerate(rows):
        if spec.max_documents is not None and index >= spec.max_documents:
            break
        location = DocumentLocation(where, index + 1)
        for field in (spec.text_field, spec.id_field, spec.url_field):
            if field is not None and field not in row:
                raise ConfigError(f"source {spec.name!r}: {where} has no field {field!r} (has {', '.join(row)})")
        text = row[spec.text_field]
        if not isinstance(text, str):
            yield location, BadRecord(location, "text_not_string", f"field {spec.text_field!r} must be a string",
                                      repr(text)[:PREVIEW_BYTES])
            continue
        if not text.strip():
            yield location, BadRecord(location, "empty_text", f"field {spec.text_field!r} must not be blank", text)
            continue
        metadata: dict[str, Any] = {"split": spec.split, "row": index}
        if spec.url_field is not None:
            metadata["url"] = row[spec.url_field]
        doc_id = str(row[spec.id_field]) if spec.id_field is not None else f"{spec.name}/{index}"
        yield location, {"id": doc_id, "text": text, "source": spec.name, "added": ADDED, "metadata": metadata}


# ---------------------------------------------------------------------------------------------
# Public entry points.


def source_fingerprint(spec: Mapping[str, Any] | SourceSpec) -> str:
    """A hash of exactly what the source will read (contents, or remote ETag/size/mtime) and how."""
    spec = validate_source(spec)
    if isinstance(spec, EmbeddedSource):
        return embedded_fingerprint(spec)
    if isinstance(spec, FilesSource):
        return _files_fingerprint(spec)
    return _huggingface_fingerprint(spec)


def _files_fingerprint(spec: FilesSource) -> str:
    """Content identity of every shard; for remote storage that cannot be reached (offline, no
    credentials, no fsspec backend installed) the spec alone, marked unverified, with a warning.
    An unverified id never equals a verified one, so going online recomputes rather than reuses."""
    digest = hashlib.sha256(b"files")
    try:
        for fs, path in _expand_paths(spec):
            digest.update(file_identity(fs, path).encode() + b"\0")
    except FileNotFoundError:
        raise
    except Exception as exc:  # each fsspec backend raises its own errors (ImportError, botocore, aiohttp...)
        if all(fsspec.core.split_protocol(url)[0] in (None, "file", "local") for url in spec.paths):
            raise
        logger.warning("source %r: cannot reach %s (%s); its fingerprint covers the paths only", spec.name,
                       ", ".join(spec.paths), exc)
        return hashlib.sha256(json.dumps(["unverified", list(spec.paths)]).encode()).hexdigest()
    return digest.hexdigest()


@dataclass(frozen=True)
class SourceJob:
    """One input of a source: a shard of a files source, or the whole of any other source."""

    spec: SourceSpec
    index: int
    url: str | None
    output_dir: str
    max_shard_bytes: int
    ids_dir: str

    @property
    def key(self) -> str:
        return f"{self.spec.name}/{self.index:05d}"

    @property
    def prefix(self) -> str:
        return f"{self.spec.name}-{self.index:05d}"

    @property
    def ids_path(self) -> Path:
        """The sorted digests of the ids of the documents this input wrote (:mod:`steps.corpus.duplicate_ids`)."""
        return Path(self.ids_dir, self.spec.name, f"{self.prefix}.npy")

    @property
    def documents_dir(self) -> Path:
        return Path(self.output_dir, DOCUMENTS_DIR, self.spec.name)


def _records(
    spec: SourceSpec, url: str | None, skipped: Counter
) -> Iterator[tuple[DocumentLocation, dict[str, Any] | BadRecord]]:
    """The records of one input of a source: the shard at ``url`` of a files source, else the whole source."""
    if isinstance(spec, FilesSource):
        yield from _files_records(spec, url)
    elif isinstance(spec, HuggingFaceSource):
        yield from _huggingface_records(spec)
    else:
        for index, doc in enumerate(embedded_documents(spec, skipped)):
            yield DocumentLocation(spec.kind, index + 1), doc


def write_source_input(job: SourceJob) -> dict[str, Any]:
    """Copy one input's documents into ``documents/<name>/<prefix>-NNNNN.jsonl.gz``, its bad records into
    ``quarantine/<name>/<prefix>.jsonl.gz`` and its documents' id digests to ``job.ids_path``; return
    ``{records_in, documents, bytes, quarantined, skipped, records_recovered, unreadable_bytes}``
    (``records_in == documents + sum(quarantined)``; the last two are of a truncated shard: the records read
    before the damage, and the compressed bytes after them)."""
    name, out = job.spec.name, Path(job.output_dir)
    for stale in job.documents_dir.glob(f"{job.prefix}-*"):  # left by an interrupted run
        stale.unlink()
    skipped: Counter = Counter()
    documents = size = records = recovered = unreadable = 0
    digests = array("Q")
    strict = getattr(job.spec, "strict", False)
    with ShardWriter(job.documents_dir, job.prefix, job.max_shard_bytes) as writer, \
            Quarantine(out / QUARANTINE_DIR / name / f"{job.prefix}.jsonl.gz", strict) as quarantine:
        for _, record in _records(job.spec, job.url, skipped):
            records += 1
            if isinstance(record, BadRecord):
                quarantine.add(record)
                if isinstance(record, TruncatedShard):
                    recovered += record.records_recovered
                    unreadable += record.unreadable_bytes
                continue
            writer.write(record)
            digests.append(id_digest(record["id"]))
            documents += 1
            size += len(record["text"].encode("utf-8"))
    write_digests(job.ids_path, digests)
    return {"records_in": records, "documents": documents, "bytes": size,
            "quarantined": dict(sorted(quarantine.counts.items())), "skipped": dict(sorted(skipped.items())),
            "records_recovered": recovered, "unreadable_bytes": unreadable}


def _ids_of_finished(job: SourceJob) -> Path:
    """The id digests of a job finished by an earlier run; rebuilt from its documents if they were not kept."""
    if not job.ids_path.exists():
        shards = [p for p in list_shards(job.documents_dir) if p.name.startswith(f"{job.prefix}-")]
        write_digests(job.ids_path, (id_digest(doc["id"]) for shard in shards for _, doc in read_documents(shard)))
    return job.ids_path


def source_inputs(spec: SourceSpec) -> list[str | None]:
    """The inputs of a source: each shard of a files source, by :func:`shard_name`; one unnamed input otherwise."""
    if isinstance(spec, FilesSource):
        return [shard_name(fs, path) for fs, path in _expand_paths(spec)]
    return [None]


def quarantine_summary(name: str, stats: Mapping[str, Any], out_dir: str | Path) -> str:
    """One line saying how many of a source's records were quarantined, why, and where they are."""
    quarantined, records = stats["quarantined"], stats["records_in"]
    total = sum(quarantined.values())
    if total == 0:
        line = f"source {name!r}: {records} records, none quarantined"
    else:
        reasons = ", ".join(f"{reason} {count}" for reason, count in
                            sorted(quarantined.items(), key=lambda item: (-item[1], item[0])))
        line = f"source {name!r}: {total} of {records} records quarantined: {reasons}"
        if quarantined.get("truncated_shard"):
            line += (f" ({stats.get('unreadable_bytes', 0)} compressed bytes of truncated shards unreadable, the "
                     f"records in them lost; {stats.get('records_recovered', 0)} records read before the damage)")
    if stats.get("duplicate_ids"):
        line += f"; {stats['duplicate_ids']} kept records reuse an id seen before in this source"
    if total:
        line += f"; see {QUARANTINE_DIR}/{name}/ in {out_dir}"
    return line


def write_source(
    spec: SourceSpec,
    out_dir: str | Path,
    max_shard_bytes: int = 256 * 2**20,
    engine: Engine = LocalEngine(),
    markers: Path | None = None,
    ids_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the source's documents to ``<out_dir>/documents/<name>/`` and its bad records to
    ``<out_dir>/quarantine/<name>/``, one input shard per job, in parallel and resumable; log
    :func:`quarantine_summary`.

    Returns ``{inputs, records_in, documents, bytes (of text, UTF-8), quarantined: {reason: count},
    skipped: {reason: count}, records_recovered, unreadable_bytes, duplicate_ids}``; ``skipped`` counts
    embedded candidates that make no document; ``duplicate_ids`` the documents (kept) whose id an earlier
    document of the source has. The jobs' id digests go to ``ids_dir`` (keep it with ``markers`` to resume;
    a temporary folder of this machine when not given: on a cluster, give one every node sees).
    """
    with tempfile.TemporaryDirectory(prefix="source-ids-") as scratch:
        ids = str(ids_dir if ids_dir is not None else scratch)
        jobs = [SourceJob(spec, index, url, str(out_dir), max_shard_bytes, ids)
                for index, url in enumerate(source_inputs(spec))]
        totals: dict[str, Any] = {"records_in": 0, "documents": 0, "bytes": 0, "quarantined": {}, "skipped": {},
                                  "records_recovered": 0, "unreadable_bytes": 0}
        # a source of files runs on the engine; any other is one job, run here, where its fingerprint was taken
        # (an embedded source reads this machine's files, which another node may not have)
        here = engine if isinstance(spec, FilesSource) else LocalEngine()
        for stats in run_shard_jobs(jobs, write_source_input, here, markers, f"source {spec.name}"):
            totals = merge_stats(totals, stats)
        totals["duplicate_ids"] = count_duplicates(_ids_of_finished(job) for job in jobs)
    summary = quarantine_summary(spec.name, totals, out_dir)
    logger.log(logging.WARNING if sum(totals["quarantined"].values()) or totals["duplicate_ids"] else logging.INFO,
               summary)
    return {"inputs": len(jobs), **totals}


def iter_source_documents(spec: SourceSpec) -> Iterator[dict[str, Any]]:
    """The source's good documents in order (bad records left out; :func:`write_source` counts them)."""
    for url in source_inputs(spec):
        for _, record in _records(spec, url, Counter()):
            if not isinstance(record, BadRecord):
                yield record
