"""Instances: fixed-length token windows cut from the token files, as OLMo cuts them.

Each token file is cut into consecutive ``seq_len``-token instances; the tail of a file that does not fill
an instance is dropped (and counted), so an instance never spans two files. Instances are numbered file
after file in the order of the tokenize summary. The index holds only per-file counts; token files are
read instance by instance (positioned reads), and provenance looked up through its sidecars (see
:mod:`steps.data.provenance`).

Label masks (optional; OLMo reads its ``label_mask`` from boolean memmaps): tokens whose id is in
``ignore_token_ids`` (say the PII placeholders, or padding) are inputs but never targets. Here the mask is a
function of the token ids, so it needs no files of its own; it is part of the index and its fingerprint
(so, like any change to the instances, it also gives another data order).

Instance filter (optional, :mod:`steps.data.instance_filter`): OLMo 2's repeated n-gram filter. The instances
it flags are found once, when the index is built, and listed in it (``filtered_instances``, in the index's
fingerprint); they stay instances, trained on in their place in the data order with every label masked
(OLMo-core's ``instance_mask``), so the data order, batches and their regeneration read the flags from the
index alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from steps.common.artifacts import Artifact
from steps.data.instance_filter import InstanceFilterConfig, repetitive_rows
from steps.data.provenance import InstanceDocument, ProvenanceFile
from steps.data.tokenize import SUMMARY_FILE, TOKEN_DTYPES

INDEX_FILE = "index.json"  # an instances artifact's InstanceIndex
_FILTER_CHUNK_TOKENS = 1 << 22  # tokens read at a time when the instance filter scans a token file


@dataclass(frozen=True)
class TokenFile:
    """One token file of the index; paths are relative to the tokenize output directory."""

    path: str
    dtype: str
    num_tokens: int
    num_instances: int
    first_instance: int
    provenance: str | None = None
    sha256: str | None = None


class OpenFiles:
    """Read-only file descriptors for positioned reads; beyond ``limit`` the least recently used is closed."""

    def __init__(self, limit: int | None = None):
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.limit = limit or max(16, min(4096, soft_limit // 4))
        self._descriptors: OrderedDict[Path, int] = OrderedDict()

    def read(self, path: Path, offset: int, size: int) -> bytes:
        """``size`` bytes of ``path`` from byte ``offset``."""
        descriptor = self._descriptors.pop(path, None)
        if descriptor is None:
            descriptor = os.open(path, os.O_RDONLY)
            if len(self._descriptors) >= self.limit:
                os.close(self._descriptors.popitem(last=False)[1])
        self._descriptors[path] = descriptor
        data = os.pread(descriptor, size, offset)
        if len(data) != size:
            raise ValueError(f"{path}: {len(data)} bytes at offset {offset}, expected {size} (file truncated?)")
        return data

    def close(self) -> None:
        while self._descriptors:
            os.close(self._descriptors.popitem()[1])

    def __del__(self) -> None:
        if hasattr(self, "_descriptors"):
            self.close()

    def __reduce__(self) -> tuple:
        """A copy (pickled or deep-copied) opens files of its own: descriptors are never shared."""
        return OpenFiles, (self.limit,)


@dataclass
class InstanceIndex:
    """Where every instance lives: ``files[k]`` holds instances ``first_instance .. + num_instances``.

    With an ``instance_filter``, ``filtered_instances`` (ascending) are the instances it flagged: their labels
    are all masked (:meth:`label_mask` given the instances).
    """

    seq_len: int
    files: tuple[TokenFile, ...]
    dropped_tokens: int
    ignore_token_ids: tuple[int, ...] = ()
    instance_filter: InstanceFilterConfig | None = None
    filtered_instances: tuple[int, ...] = ()
    _offsets: np.ndarray = field(init=False, repr=False, compare=False)
    _filtered: np.ndarray = field(init=False, repr=False, compare=False)
    _paths: dict[tuple[str, int], Path] = field(default_factory=dict, init=False, repr=False, compare=False)
    _open_files: OpenFiles = field(default_factory=OpenFiles, init=False, repr=False, compare=False)
    _provenance: dict[tuple[str, int], ProvenanceFile] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._offsets = np.asarray([f.first_instance for f in self.files], dtype=np.int64)
        self._filtered = np.asarray(self.filtered_instances, dtype=np.int64)
        if self.filtered_instances:
            if self.instance_filter is None:
                raise ValueError("instance index: filtered_instances without an instance_filter")
            ascending = not (np.diff(self._filtered) <= 0).any()
            if not ascending or self._filtered[0] < 0 or self._filtered[-1] >= self.num_instances:
                raise ValueError(f"instance index: filtered_instances must be ascending instances in "
                                 f"[0, {self.num_instances})")

    @property
    def num_instances(self) -> int:
        return self.files[-1].first_instance + self.files[-1].num_instances if self.files else 0

    def to_dict(self) -> dict[str, Any]:
        data = {
            "seq_len": self.seq_len,
            "num_instances": self.num_instances,
            "dropped_tokens": self.dropped_tokens,
            "ignore_token_ids": list(self.ignore_token_ids),
            "files": [dict(vars(f)) for f in self.files],
        }
        if self.instance_filter is not None:  # (absent without one: an unfiltered index reads as it always has)
            data["instance_filter"] = self.instance_filter.to_dict()
            data["filtered_instances"] = list(self.filtered_instances)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InstanceIndex":
        try:
            index = _cut(data["seq_len"], data["files"], data["ignore_token_ids"])
            if "instance_filter" in data:
                index = replace(
                    index,
                    instance_filter=InstanceFilterConfig.from_dict(data["instance_filter"]),
                    filtered_instances=tuple(data["filtered_instances"]),
                )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"instance index: malformed dict ({exc!r})") from None
        if index.to_dict() != dict(data):
            raise ValueError("instance index: fields, counts or offsets do not match seq_len and the files' tokens")
        return index

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form (covers the token files' content hashes when known)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def locate(self, instance: int) -> tuple[int, int]:
        """``(file number, first token offset in that file)`` of an instance."""
        if not 0 <= instance < self.num_instances:
            raise IndexError(f"instance {instance} out of range [0, {self.num_instances})")
        k = int(np.searchsorted(self._offsets, instance, side="right")) - 1
        return k, (instance - self.files[k].first_instance) * self.seq_len

    def _token_path(self, root_dir: str | Path, k: int) -> Path:
        """Path of token file ``k``, its size checked against the index on first use."""
        key = (str(root_dir), k)
        if key not in self._paths:
            f = self.files[k]
            path = Path(root_dir, f.path)
            size = path.stat().st_size
            if size != f.num_tokens * TOKEN_DTYPES[f.dtype].itemsize:
                raise ValueError(f"{path}: {size} bytes, expected {f.num_tokens} {f.dtype} tokens")
            self._paths[key] = path
        return self._paths[key]

    def read_instance(self, root_dir: str | Path, instance: int) -> np.ndarray:
        """The ``seq_len`` token ids of one instance, as int64."""
        return self.read_instances(root_dir, [instance])[0]

    def read_instances(self, root_dir: str | Path, instances: Sequence[int] | np.ndarray) -> np.ndarray:
        """Token ids of several instances, shape ``[len(instances), seq_len]``, int64.

        Each instance is one positioned read of its file (random access: no read-ahead, no memory map).
        """
        instances = np.asarray(instances, dtype=np.int64).reshape(-1)
        if instances.size and (instances.min() < 0 or instances.max() >= self.num_instances):
            bad = instances[(instances < 0) | (instances >= self.num_instances)][0]
            raise IndexError(f"instance {bad} out of range [0, {self.num_instances})")
        files = np.searchsorted(self._offsets, instances, side="right") - 1
        offsets = (instances - self._offsets[files]) * self.seq_len
        out = np.empty((len(instances), self.seq_len), dtype=np.int64)
        for row, (k, offset) in enumerate(zip(files.tolist(), offsets.tolist())):
            dtype = TOKEN_DTYPES[self.files[k].dtype]
            data = self._open_files.read(self._token_path(root_dir, k), offset * dtype.itemsize,
                                         self.seq_len * dtype.itemsize)
            out[row] = np.frombuffer(data, dtype=dtype)
        return out

    @property
    def masks_labels(self) -> bool:
        """Whether some label is masked: ids to ignore, or instances the filter flagged."""
        return bool(self.ignore_token_ids or self.filtered_instances)

    def is_filtered(self, instances: Sequence[int] | np.ndarray) -> np.ndarray:
        """True for each of ``instances`` that the instance filter flagged (same shape)."""
        instances = np.asarray(instances, dtype=np.int64)
        if not self._filtered.size:
            return np.zeros(instances.shape, dtype=bool)
        at = np.minimum(np.searchsorted(self._filtered, instances), self._filtered.size - 1)
        return self._filtered[at] == instances

    def label_mask(self, tokens: np.ndarray, instances: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """True where a token is a training target: every token whose id is not in ``ignore_token_ids``, and,
        given the instances the rows of ``tokens`` [n, seq_len] are, none of a filtered instance's."""
        mask = ~np.isin(tokens, self.ignore_token_ids)
        if instances is not None and self.filtered_instances:
            mask &= ~self.is_filtered(instances).reshape(-1, *([1] * (mask.ndim - 1)))
        return mask

    def provenance(self, root_dir: str | Path, k: int) -> ProvenanceFile:
        """The documents of token file ``k`` (opened once, then cached)."""
        key = (str(root_dir), k)
        if key not in self._provenance:
            f = self.files[k]
            if f.provenance is None:
                raise ValueError(f"{f.path}: the index has no provenance file for this token file")
            self._provenance[key] = ProvenanceFile(Path(root_dir, f.provenance), f.num_tokens)
        return self._provenance[key]

    def instance_documents(self, root_dir: str | Path, instance: int) -> list[InstanceDocument]:
        """The documents with at least one token in the instance, in token order (spans in file tokens)."""
        k, offset = self.locate(instance)
        return self.provenance(root_dir, k).overlapping(offset, offset + self.seq_len)

    def document_instances(self, root_dir: str | Path, doc_id: str) -> list[int]:
        """Every instance holding a token of a document with this id (none if all its tokens were dropped).

        This reads every provenance file through (an id has no index).
        """
        found = False
        instances: list[int] = []
        for k, f in enumerate(self.files):
            for document in self.provenance(root_dir, k).documents():
                if document.id != doc_id:
                    continue
                found = True
                first = document.start // self.seq_len
                last = min((document.end - 1) // self.seq_len, f.num_instances - 1)
                instances.extend(range(f.first_instance + first, f.first_instance + last + 1))
        if not found:
            raise KeyError(f"document {doc_id!r} is not in any provenance file of the index")
        return instances


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_ignore_token_ids(ignore_token_ids: Any) -> None:
    """Fail unless ``ignore_token_ids`` is a list (or tuple) of non-negative integer token ids."""
    if not isinstance(ignore_token_ids, (list, tuple)) or not all(_is_count(t) for t in ignore_token_ids):
        raise ValueError(f"ignore_token_ids: expected non-negative integer token ids, got {ignore_token_ids!r}")


def _cut(seq_len: int, files: Sequence[Mapping[str, Any]], ignore_token_ids: Sequence[int] = ()) -> InstanceIndex:
    if not _is_count(seq_len) or seq_len < 1:
        raise ValueError(f"seq_len: expected a positive integer, got {seq_len!r}")
    check_ignore_token_ids(ignore_token_ids)
    token_files: list[TokenFile] = []
    first_instance = dropped = 0
    for f in files:
        num_instances = f["num_tokens"] // seq_len
        token_files.append(
            TokenFile(
                path=f["path"],
                dtype=f["dtype"],
                num_tokens=f["num_tokens"],
                num_instances=num_instances,
                first_instance=first_instance,
                provenance=f.get("provenance"),
                sha256=f.get("sha256"),
            )
        )
        first_instance += num_instances
        dropped += f["num_tokens"] - num_instances * seq_len
    return InstanceIndex(seq_len, tuple(token_files), dropped, tuple(sorted(set(ignore_token_ids))))


def find_filtered_instances(root_dir: str | Path, index: InstanceIndex, config: InstanceFilterConfig) -> np.ndarray:
    """The instances of ``index`` that ``config`` filters (ascending), read from the token files under
    ``root_dir`` a few million tokens at a time."""
    found = []
    for k, f in enumerate(index.files):
        if not f.num_instances:
            continue
        path, dtype = index._token_path(root_dir, k), TOKEN_DTYPES[f.dtype]
        rows = max(1, _FILTER_CHUNK_TOKENS // index.seq_len)
        for first in range(0, f.num_instances, rows):
            count = min(rows, f.num_instances - first)
            tokens = np.fromfile(path, dtype=dtype, count=count * index.seq_len,
                                 offset=first * index.seq_len * dtype.itemsize)
            if tokens.size != count * index.seq_len:
                raise ValueError(f"{path}: {tokens.size} tokens at instance {first}, expected {count * index.seq_len}")
            flagged = repetitive_rows(tokens.reshape(count, index.seq_len), config)
            found.append(f.first_instance + first + np.flatnonzero(flagged))
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def build_instances(
    tokens: Mapping[str, Any] | str | Path,
    seq_len: int,
    ignore_token_ids: Sequence[int] = (),
    instance_filter: InstanceFilterConfig | None = None,
    root_dir: str | Path | None = None,
) -> InstanceIndex:
    """Cut the token files of a tokenize summary (or of a tokenize output directory) into instances;
    ``ignore_token_ids`` are masked out of the labels. With an ``instance_filter`` the token files (under
    ``root_dir``, by default the tokenize output directory given as ``tokens``) are read to list the
    instances it flags."""
    if not isinstance(tokens, Mapping):
        root_dir = tokens if root_dir is None else root_dir
        tokens = json.loads(Path(tokens, SUMMARY_FILE).read_text())
    for f in tokens["files"]:
        if f["dtype"] not in TOKEN_DTYPES:
            raise ValueError(f"{f['path']}: dtype {f['dtype']!r}, expected one of {sorted(TOKEN_DTYPES)}")
    files = [{**f, "num_tokens": f["tokens"]} for f in tokens["files"]]
    index = _cut(seq_len, files, ignore_token_ids)
    if instance_filter is None:
        return index
    if root_dir is None:
        raise ValueError("instance_filter: the token files' directory (root_dir) is needed to read them")
    filtered = find_filtered_instances(root_dir, index, instance_filter)
    return replace(index, instance_filter=instance_filter, filtered_instances=tuple(filtered.tolist()))


def load_instances(artifact: Artifact) -> tuple[InstanceIndex, Path]:
    """The instance index of an instances artifact and the directory its token files are under."""
    index = InstanceIndex.from_dict(json.loads((artifact.path / INDEX_FILE).read_text()))
    return index, artifact.path
