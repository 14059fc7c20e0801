"""Paloma-style perplexity: bits per byte of held-out documents, per source and domain.

Each document is scored on its own. Its token sequence is ``S = [EOS] + tokens(text)``; the model
predicts every token of ``S`` after the EOS exactly once, in non-overlapping windows of ``L`` =
max_sequence_length predictions: window ``k`` feeds ``S[kL : kL+L]`` and scores ``S[kL+1 : kL+L+1]``,
so a window sees no token before it except the one it starts from (the EOS for the first window,
the previous window's last token afterwards). No EOS is appended at the end.

bits per byte = Σ −log p (nats) / (ln 2 × UTF-8 bytes of the texts), micro-averaged over the
documents of a group; perplexity = exp(Σ −log p / Σ tokens).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import fsspec
import torch

from steps.common.compressed import open_shard
from steps.common.documents import list_shards, read_documents
from steps.evaluation.scorer import encode, prepare_model, sum_target_logprobs

BUFFERED_BATCHES = 64  # batches of windows gathered before scoring (bounds memory while streaming)


def document_windows(token_ids: list[int], eos_token_id: int, window: int) -> list[list[int]]:
    """Windows of at most ``window + 1`` tokens over ``[EOS] + token_ids``, sharing one boundary token."""
    sequence = [eos_token_id, *token_ids]
    return [sequence[start:start + window + 1] for start in range(0, len(sequence) - 1, window)]


@dataclass
class Totals:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    nll_nats: float = 0.0

    def add(self, other: "Totals") -> None:
        self.documents += other.documents
        self.tokens += other.tokens
        self.bytes += other.bytes
        self.nll_nats += other.nll_nats

    def summary(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "nll_nats": self.nll_nats,
            "bits_per_byte": self.nll_nats / (math.log(2) * self.bytes) if self.bytes else None,
            "perplexity": math.exp(self.nll_nats / self.tokens) if self.tokens else None,
        }


def group_keys(doc: dict[str, Any]) -> tuple[str, str | None]:
    """A document's source and, when its metadata names one, its domain."""
    metadata = doc.get("metadata") or {}
    domain = metadata.get("domain") if isinstance(metadata, dict) else None
    return str(doc["source"]), None if domain is None else str(domain)


def bits_per_byte(
    model: torch.nn.Module,
    tokenizer: Any,
    documents: Iterable[dict[str, Any]],
    device: str | torch.device | None = "cpu",
    batch_size: int = 4,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Bits per byte and token perplexity: ``{"overall", "sources": {s}, "domains": {s: {d}}}``.

    ``device`` as in :func:`~steps.evaluation.scorer.prepare_model`.
    """
    model, device = prepare_model(model, device)
    window = max_length or model.config.max_sequence_length
    overall, sources = Totals(), defaultdict(Totals)
    domains: dict[str, dict[str, Totals]] = defaultdict(lambda: defaultdict(Totals))
    pending: list[tuple[Totals, tuple[str, str | None], int]] = []  # per document: totals, keys, windows
    windows: list[list[int]] = []

    def flush() -> None:
        nll = [-total for total in sum_target_logprobs(model, [(w, 1) for w in windows], device, batch_size)]
        start = 0
        for totals, (source, domain), count in pending:
            totals.nll_nats = math.fsum(nll[start:start + count])
            start += count
            for group in (overall, sources[source], *([domains[source][domain]] if domain is not None else [])):
                group.add(totals)
        pending.clear()
        windows.clear()

    for number, doc in enumerate(documents):
        try:
            text, keys = doc["text"], group_keys(doc)
        except (KeyError, TypeError):
            raise ValueError(f"document {number}: expected a dict with 'text' and 'source', got {doc!r:.200}") from None
        token_ids = encode(tokenizer, text)
        doc_windows = document_windows(token_ids, model.config.eos_token_id, window)
        pending.append((Totals(1, len(token_ids), len(text.encode("utf-8"))), keys, len(doc_windows)))
        windows.extend(doc_windows)
        if len(windows) >= batch_size * BUFFERED_BATCHES:
            flush()
    flush()
    return {
        "overall": overall.summary(),
        "sources": {name: totals.summary() for name, totals in sorted(sources.items())},
        "domains": {
            source: {name: totals.summary() for name, totals in sorted(by_domain.items())}
            for source, by_domain in sorted(domains.items())
        },
    }


def read_heldout(directory: str | Path) -> Iterator[dict[str, Any]]:
    """The documents of a documents directory (``<source>/*.jsonl.gz`` shards), shard by shard."""
    shards = list_shards(directory)
    if not shards:
        raise FileNotFoundError(f"{directory}: no document shards (*.jsonl, *.jsonl.gz, *.jsonl.zst) found")
    for shard in shards:
        for _, doc in read_documents(shard):
            yield doc


PALOMA_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


def paloma_files(url: str | Path) -> list[str]:
    """The jsonl(.gz/.zst) files of a Paloma-format set: the file itself, or those under a folder (fsspec)."""
    fs, path = fsspec.core.url_to_fs(str(url))
    if fs.isfile(path):
        files = [path]
    elif fs.isdir(path):
        files = sorted(p for p in fs.find(path) if p.endswith(PALOMA_SUFFIXES))
    else:
        raise FileNotFoundError(f"{url}: no such Paloma-format file or folder")
    if not files:
        raise FileNotFoundError(f"{url}: no {', '.join('*' + s for s in PALOMA_SUFFIXES)} files under it")
    return [fs.unstrip_protocol(p) for p in files]


def paloma_document(line: bytes, set_name: str, where: str) -> dict[str, Any]:
    """One Paloma record as a document of source ``set_name``, its ``subdomain`` as the domain."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: expected a JSON object with a string 'text' ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ValueError(f"{where}: expected a JSON object with a string 'text', got {line[:120]!r}")
    metadata = record.get("metadata")
    domain = record.get("subdomain") or (metadata.get("domain") if isinstance(metadata, dict) else None)
    return {"text": record["text"], "source": set_name, "metadata": {"domain": domain} if domain else {}}


def read_paloma_documents(url: str | Path, set_name: str) -> Iterator[dict[str, Any]]:
    """The documents of a Paloma-format set (jsonl records with ``text``, optional ``subdomain``), any fsspec URL.

    Every document gets ``source`` = ``set_name``, so the set's bits per byte is its one source's,
    and its ``subdomain`` (or ``metadata.domain``) groups it by domain. Blank lines are skipped; any
    other line that is not such a record is an error naming the file and line.
    """
    for path in paloma_files(url):
        with open_shard(path) as stream:
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    yield paloma_document(line, set_name, f"{path}:{number}")
