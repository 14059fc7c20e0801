"""The mix stage: per-source sampling factors and a held-out split, decided by a seeded hash of the id.

Each source's factor is given (``sampling``) or derived from target shares of the training mix's
bytes (``proportions``): factor = share × total / the source's training bytes, where total is
``total_bytes`` or, by default, the largest mix no source has to be repeated for. A document goes
to the held-out set when ``u_heldout < heldout_fraction``; otherwise it is written
``floor(f)`` times plus once more when ``u_sample < f - floor(f)``, for its source's factor ``f``.
``u_heldout`` and ``u_sample`` are independent uniform numbers in [0, 1) hashed from (seed, purpose,
source, id), so the mix is the same on every machine. Copy k >= 1 of a document gets the id
``<id>#repeat<k>`` and is written in pass k, after every document's earlier copies, so repeats are
spread over the shards rather than adjacent.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from steps.common.documents import ShardWriter, read_documents
from olmo_model.config import Config, ConfigError, require
from steps.corpus.layout import DOCUMENTS_DIR, source_shards
from steps.common.engine import Engine, LocalEngine
from steps.corpus.shards import run_shard_jobs
from steps.corpus.stats import total_stats

HELDOUT_DIR = "heldout"


def unit_hash(seed: int, purpose: str, source: str, doc_id: str) -> float:
    """A uniform number in [0, 1) that depends only on its arguments."""
    key = "\x1f".join((str(seed), purpose, source, doc_id)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class MixConfig(Config):
    WHERE = "mix"

    sampling: dict[str, float] = field(default_factory=dict)  # source name -> factor (default 1.0)
    proportions: dict[str, float] = field(default_factory=dict)  # source name -> share of training bytes
    total_bytes: int | None = None  # size of the training mix with ``proportions`` (default: no repeats)
    seed: int = 0
    max_shard_bytes: int = 256 * 2**20
    heldout_fraction: float = 0.0

    def check(self) -> None:
        for source, factor in self.sampling.items():
            require(factor >= 0, f"mix.sampling.{source}", "a non-negative factor", factor)
        for source, share in self.proportions.items():
            require(share >= 0, f"mix.proportions.{source}", "a non-negative share", share)
        if self.proportions:
            require(not self.sampling, "mix", "either sampling or proportions, not both", "both")
            total = sum(self.proportions.values())
            require(abs(total - 1) < 1e-6, "mix.proportions", "shares summing to 1", total)
        require(self.total_bytes is None or (self.proportions and self.total_bytes > 0), "mix.total_bytes",
                "a positive integer, with proportions", self.total_bytes)
        require(self.max_shard_bytes > 0, "mix.max_shard_bytes", "a positive integer", self.max_shard_bytes)
        require(0 <= self.heldout_fraction < 1, "mix.heldout_fraction", "a number in [0, 1)", self.heldout_fraction)

    def is_heldout(self, source: str, doc_id: str) -> bool:
        return unit_hash(self.seed, "heldout", source, doc_id) < self.heldout_fraction


def _copies(config: MixConfig, factor: float, source: str, doc_id: str) -> int:
    """How many times a training document goes into the mix at its source's ``factor``."""
    whole = math.floor(factor)
    return whole + (unit_hash(config.seed, "sample", source, doc_id) < factor - whole)


def sampling_factors(config: MixConfig, sources: dict[str, list[Path]]) -> dict[str, float]:
    """Each source's factor: as configured, or derived from ``proportions`` and the sources' training bytes."""
    if not config.proportions:
        return {source: config.sampling.get(source, 1.0) for source in sources}
    missing = sorted(set(sources) - set(config.proportions))
    if missing:
        raise ConfigError(f"mix.proportions: no share for source(s) {', '.join(missing)}; give every source one")
    available = {source: sum(len(doc["text"].encode("utf-8")) for doc in _documents(shards)
                             if not config.is_heldout(source, doc["id"]))
                 for source, shards in sources.items()}
    wanted = {source: share for source, share in config.proportions.items() if share > 0}
    empty = sorted(source for source in wanted if available[source] == 0)
    if empty:
        raise ConfigError(f"mix.proportions: source(s) {', '.join(empty)} have no training bytes to sample from")
    total = config.total_bytes or min(available[source] / share for source, share in wanted.items())
    return {source: config.proportions[source] * total / available[source] if available[source] else 0.0
            for source in sources}


def _documents(shards: list[Path]) -> Iterator[dict[str, Any]]:
    for shard in shards:
        for _, doc in read_documents(shard):
            yield doc


@dataclass(frozen=True)
class MixJob:
    """One source of the mix, with the factor it is sampled at."""

    source: str
    shards: tuple[str, ...]
    output_dir: str
    config: MixConfig
    factor: float

    @property
    def key(self) -> str:
        return self.source


def mix_source(job: MixJob) -> dict[str, Any]:
    """Write one source's training and held-out shards; return its stats."""
    config, source, output_dir = job.config, job.source, Path(job.output_dir)
    for folder in (output_dir / DOCUMENTS_DIR / source, output_dir / HELDOUT_DIR / source):
        for stale in folder.glob("*.jsonl.gz"):  # left by an interrupted run
            stale.unlink()
    stats = dict.fromkeys(("documents_in", "documents_out", "bytes_out", "heldout_documents", "heldout_bytes"), 0)
    shards = [Path(shard) for shard in job.shards]
    with ShardWriter(output_dir / DOCUMENTS_DIR / source, "mix", config.max_shard_bytes) as train, \
            ShardWriter(output_dir / HELDOUT_DIR / source, "heldout", config.max_shard_bytes) as heldout:
        for copy in range(max(1, math.ceil(job.factor))):
            for doc in _documents(shards):
                held_out = config.is_heldout(source, doc["id"])
                size = len(doc["text"].encode("utf-8"))
                if copy == 0:
                    stats["documents_in"] += 1
                    if held_out:
                        heldout.write(doc)
                        stats["heldout_documents"] += 1
                        stats["heldout_bytes"] += size
                if not held_out and copy < _copies(config, job.factor, source, doc["id"]):
                    train.write(doc if copy == 0 else {**doc, "id": f"{doc['id']}#repeat{copy}"})
                    stats["documents_out"] += 1
                    stats["bytes_out"] += size
    return stats


def mix_sources(
    input_dir: str | Path,
    output_dir: str | Path,
    config: MixConfig,
    engine: Engine = LocalEngine(),
    markers: Path | None = None,
) -> dict[str, Any]:
    """Mix the documents directory ``input_dir`` into ``output_dir``, one source per worker.

    Writes ``documents/<source>/mix-NNNNN.jsonl.gz`` (training) and
    ``heldout/<source>/heldout-NNNNN.jsonl.gz``. Returns ``{"sources": {source: stats}, "total":
    stats}`` with documents_in, documents_out, bytes_out, heldout_documents and heldout_bytes (and
    each source's ``factor``). With ``markers``, sources finished by an interrupted run are kept.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    sources = source_shards(input_dir)
    for key in ("sampling", "proportions"):
        unknown = sorted(set(getattr(config, key)) - set(sources))
        if unknown:
            raise ConfigError(f"mix.{key} names source(s) {', '.join(unknown)} not in {input_dir} "
                              f"(has {', '.join(sources) or 'none'})")
    factors = sampling_factors(config, sources)
    jobs = [MixJob(source, tuple(map(str, shards)), str(output_dir), config, factors[source])
            for source, shards in sources.items()]
    stats = run_shard_jobs(jobs, mix_source, engine, markers, "mix", "sources")
    per_source = {job.source: source_stats for job, source_stats in zip(jobs, stats)}
    return {"sources": {source: {**stats, "factor": factors[source]} for source, stats in per_source.items()},
            "total": total_stats(per_source)}
