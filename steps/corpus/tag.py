"""The tag stage: run every configured tagger over every document shard, writing Dolma attribute files.

For each shard ``<documents>/<source>/<stem>.jsonl.gz`` and each tagger that applies to the source,
this writes ``attributes/<tagger>/<source>/<stem>.jsonl.gz``: one row per document, in document
order, ``{id, source, attributes: {"<tagger>__<name>": [[start, end, value], ...]}}`` with spans
into the document's text. Nothing is removed here; :mod:`steps.corpus.filter` applies the rules.
Shards run in parallel on an engine (:mod:`steps.common.engine`); the output does not depend on it.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from steps.common.documents import read_documents, write_jsonl_gz
from steps.common.engine import Engine, LocalEngine
from steps.corpus.shards import run_over_documents
from steps.corpus.stats import total_stats
from steps.corpus.taggers import TAGGERS, TagConfig

ATTRIBUTES_DIR = "attributes"


def attribute_shard(attributes_dir: Path, tagger: str, source: str, stem: str) -> Path:
    return attributes_dir / tagger / source / f"{stem}.jsonl.gz"


def read_attribute_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an attribute file, in order."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: expected a JSON attribute row ({exc.msg}); "
                                 "re-run the tag step") from None


@dataclass(frozen=True)
class TagJob:
    source: str
    shard: str
    stem: str
    output_dir: str
    config: TagConfig

    @property
    def key(self) -> str:
        return f"{self.source}/{self.stem}"


def tag_shard(job: TagJob) -> dict[str, Any]:
    """Tag one shard with every applicable tagger; return ``{documents, bytes, taggers}``."""
    docs = [doc for _, doc in read_documents(job.shard)]
    texts = [doc["text"] for doc in docs]
    taggers = job.config.taggers_for(job.source)
    for name in taggers:
        tagged = TAGGERS[name].tag(texts, getattr(job.config, name))
        rows = (
            {"id": doc["id"], "source": doc["source"],
             "attributes": {f"{name}__{key}": spans for key, spans in attributes.items()}}
            for doc, attributes in zip(docs, tagged)
        )
        write_jsonl_gz(attribute_shard(Path(job.output_dir) / ATTRIBUTES_DIR, name, job.source, job.stem), rows)
    return {"documents": len(docs), "bytes": sum(len(t.encode("utf-8")) for t in texts),
            "taggers": dict.fromkeys(taggers, len(docs))}


def tag_documents(
    documents_dir: str | Path,
    output_dir: str | Path,
    config: TagConfig,
    engine: Engine = LocalEngine(),
    markers: Path | None = None,
) -> dict[str, Any]:
    """Tag every shard of ``documents_dir`` into ``output_dir/attributes``.

    Returns ``{"sources": {source: {documents, bytes, taggers: {tagger: documents tagged}}}, "total": ...}``.
    With ``markers`` (a folder), shards finished by an interrupted run are not tagged again.
    """

    def job(source: str, shard: Path, stem: str) -> TagJob:
        return TagJob(source, str(shard), stem, str(output_dir), config)

    per_source = run_over_documents(Path(documents_dir), job, tag_shard, engine, markers, "tag")
    return {"sources": per_source, "total": total_stats(per_source)}
