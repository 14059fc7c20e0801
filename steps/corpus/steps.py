"""Tango steps of the corpus: source → tag → filter → dedup → mix, each a directory of Dolma shards."""
from __future__ import annotations

from pathlib import Path

from tango import Step

from steps.common.artifacts import Artifact
from steps.common.execution import Execution
from steps.common.step import ArtifactStep, ContentHash
from steps.common.tasks import tasks_content_hash
from steps.corpus.dedup import DedupConfig, deduplicate
from steps.corpus.filter import filter_documents
from steps.corpus.layout import DOCUMENTS_DIR
from steps.corpus.mix import MixConfig, mix_sources
from steps.corpus.sources import SourceSpec, source_fingerprint, validate_source, write_source
from steps.corpus.tag import ATTRIBUTES_DIR, tag_documents
from steps.corpus.taggers import FilterConfig, TagConfig


def documents_dir(artifact: Artifact) -> Path:
    return artifact.path / DOCUMENTS_DIR


class ShardedStage(ArtifactStep):
    """A corpus stage that resumes after a crash: its output and per-shard markers stay in its work
    dir until it finishes."""

    def merged_sources(self, sources: list[Artifact]) -> Path:
        """One documents directory in the work dir holding every source's folder (symlinks, no copies)."""
        staging = self.work_dir / "inputs"
        if staging.exists():
            for link in staging.iterdir():
                link.unlink()
        staging.mkdir(parents=True, exist_ok=True)
        for artifact in sources:
            for folder in sorted(documents_dir(artifact).iterdir()):
                link = staging / folder.name
                if link.exists() or link.is_symlink():
                    raise ValueError(f"two sources are both named {folder.name!r}; source names must be unique")
                link.symlink_to(folder.resolve(), target_is_directory=True)
        return staging

    @property
    def markers(self) -> Path:
        return self.work_dir / "done"


@Step.register("corpus_source")
class CorpusSource(ShardedStage):
    """One stream of documents (embedded default, fsspec shards or a HF dataset), fingerprinted by content."""

    VERSION = "003"
    CONTENT_HASHED = {"source": ContentHash(source_fingerprint, location_keys=("paths",))}
    CONFIGS = {"source": validate_source}

    def run(self, source: SourceSpec, max_shard_bytes: int = 64 * 2**20, execution: Execution = Execution()) -> Artifact:
        out = self.output_dir(fresh=False)  # inputs finished before a crash are not read again
        stats = write_source(source, out, max_shard_bytes, self.shard_engine(execution), self.markers,
                             ids_dir=self.work_dir / "ids")
        return self.artifact(out, {"source": source.name, "content_hash": self.content_hash("source"), **stats})


@Step.register("tag_documents")
class TagDocuments(ShardedStage):
    """Language, code, Gopher, C4, toxicity and PII attributes of every document, as Dolma attribute files."""

    VERSION = "002"  # 002: PII rules 'dolma_v1_fixed' by default (tag.pii.rules)
    CONFIGS = {"config": TagConfig.from_dict}

    def run(self, sources: list[Artifact], config: TagConfig, execution: Execution = Execution()) -> Artifact:
        out = self.output_dir(fresh=False)
        stats = tag_documents(self.merged_sources(sources), out, config, self.shard_engine(execution), self.markers)
        return self.artifact(out, stats)


@Step.register("filter_documents")
class FilterDocuments(ShardedStage):
    """The taggers' rules applied to their attributes; every removed document counted under its rule."""

    VERSION = "002"
    CONFIGS = {"config": FilterConfig.from_dict}

    def run(
        self, sources: list[Artifact], attributes: Artifact, config: FilterConfig, execution: Execution = Execution()
    ) -> Artifact:
        out = self.output_dir(fresh=False)
        stats = filter_documents(self.merged_sources(sources), attributes.path / ATTRIBUTES_DIR, out, config,
                                 self.shard_engine(execution), self.markers)
        return self.artifact(out, stats)


@Step.register("deduplicate_documents")
class DeduplicateDocuments(ArtifactStep):
    """URL, exact-text and paragraph dedup across all sources, first occurrence kept: jobs on the shard engine,
    rounds of ``execution.dedup_partitions`` partitions by key hash with exact digests (the output does not depend
    on the engine or the partition count). The items and job markers live in the work dir, so a re-run after a
    crash redoes only unfinished jobs. ``config.decontaminate`` names tasks whose long paragraphs remove a
    document (their data is hashed)."""

    VERSION = "004"  # 004: exact digests by partition, not a Bloom filter; documents kept whole keep their line
    CONTENT_HASHED = {"config": ContentHash(lambda config: tasks_content_hash(config.get("decontaminate", ())))}
    CONFIGS = {"config": DedupConfig.from_dict}

    def run(self, documents: Artifact, config: DedupConfig, execution: Execution = Execution()) -> Artifact:
        out = self.output_dir(fresh=False)
        stats = deduplicate(documents_dir(documents), out, config, work_dir=self.work_dir / "dedup",
                            engine=self.shard_engine(execution), partitions=execution.dedup_partitions)
        return self.artifact(out, stats)


@Step.register("mix_sources")
class MixSources(ShardedStage):
    """Per-source sampling (factors or target proportions) by seed into output shards, and a held-out split."""

    VERSION = "002"
    CONFIGS = {"config": MixConfig.from_dict}

    def run(self, documents: Artifact, config: MixConfig, execution: Execution = Execution()) -> Artifact:
        out = self.output_dir(fresh=False)  # sources finished before a crash are kept
        stats = mix_sources(documents_dir(documents), out, config, self.shard_engine(execution), self.markers)
        return self.artifact(out, stats)
