"""This project's side of the corpus benchmark, run in the project's virtualenv by ``corpus.py``.

``python benchmarks/corpus_ours.py <stage> <documents_dir> <output_dir> '<json options>'`` runs one
stage over the documents directory and prints its stats as one JSON line:

- ``filter``: tag with Gopher + C4 + PII, then apply the rules and write the kept documents
  (options: ``workers``);
- ``dedup``: URL + exact-text + paragraph dedup (options: ``config``, a dedup config, and ``workers``);
- ``mix``: every source at factor 1 into shards (options: a mix config);
- ``startup``: nothing but the imports every stage makes (the fixed cost of a run);
- ``decisions`` (not timed): per document, the Gopher rules that remove it (from the attribute
  files ``filter`` wrote, judged by our default thresholds) and its number of PII spans, as
  ``{"gopher": {id: [rule, ...]}, "pii_spans": {id: count}}``;
- ``pii`` (not timed): per document, the number of PII spans our PII tagger finds under the rule set
  ``rules`` (option), as ``{"rules": rules, "pii_spans": {id: count}}``.

``filter``, ``dedup`` and ``mix`` run on the Ray cluster at the option ``ray`` (an address) when it is given.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.common.documents import read_documents  # noqa: E402
from steps.corpus.dedup import DedupConfig, deduplicate  # noqa: E402
from steps.corpus.filter import filter_documents  # noqa: E402
from steps.corpus.layout import shard_stem, source_shards  # noqa: E402
from steps.corpus.mix import MixConfig, mix_sources  # noqa: E402
from steps.corpus.pii import PiiTagging, tag_pii  # noqa: E402
from steps.corpus.spans import document_value  # noqa: E402
from steps.corpus.tag import ATTRIBUTES_DIR, attribute_shard, read_attribute_rows, tag_documents  # noqa: E402
from steps.corpus.taggers import TAGGERS, FilterConfig, TagConfig  # noqa: E402
from steps.common.engine import Engine, LocalEngine, RayEngine  # noqa: E402

TAGGED = ("gopher", "c4", "pii")  # what dolma runs: gopher_v1, c4_v1, pii_regex_v1


def engine(options: dict[str, Any]) -> Engine:
    """Where a stage's jobs run: on the Ray cluster at ``options["ray"]`` (an address) when given, else in
    ``options["workers"]`` local processes (default 1). Every stage takes these two options."""
    return RayEngine(options["ray"]) if options.get("ray") else LocalEngine(options.get("workers", 1))


def run_filter(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Everything our pipeline does for Gopher + C4 + PII: tag, apply the rules, write the kept documents."""
    tag_config = TagConfig.from_dict({name: {"enabled": name in TAGGED} for name in TAGGERS})
    start = time.perf_counter()
    tag_documents(documents_dir, output_dir, tag_config, engine=engine(options))
    tagged = time.perf_counter()
    stats = filter_documents(documents_dir, output_dir / ATTRIBUTES_DIR, output_dir / "filtered", FilterConfig(),
                             engine=engine(options))["total"]
    return {**stats, "tag_s": tagged - start, "filter_s": time.perf_counter() - tagged}


def run_dedup(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    config = DedupConfig.from_dict(options["config"])
    return deduplicate(documents_dir, output_dir, config, engine=engine(options))["total"]


def run_mix(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    config = MixConfig.from_dict({key: value for key, value in options.items() if key not in ("workers", "ray")})
    return mix_sources(documents_dir, output_dir, config, engine(options))["total"]


def startup(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    return {}


def pipeline(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The stages ``options`` names (``{stage: its options}``) one after the other in this one process, as
    ``tango run`` runs a workflow's steps, each into ``output_dir/<stage>``: each one's wall-clock seconds
    (imports excluded; an engine's start, e.g. connecting to Ray, included) and stats."""
    found = {}
    for stage, stage_options in options.items():
        start = time.perf_counter()
        stats = STAGES[stage](documents_dir, output_dir / stage, stage_options)
        found[stage] = {"seconds": time.perf_counter() - start, "stats": stats}
    return found


def _attributes(documents_dir: Path, output_dir: Path, tagger: str) -> Iterator[tuple[dict, dict[str, Any]]]:
    """Each document with its attributes from ``tagger`` (names without the tagger prefix)."""
    for source, shards in source_shards(documents_dir).items():
        for shard in shards:
            stem = shard_stem(shard, documents_dir / source)
            rows = read_attribute_rows(attribute_shard(output_dir / ATTRIBUTES_DIR, tagger, source, stem))
            for (_, doc), row in zip(read_documents(shard), rows, strict=True):
                yield doc, {name.split("__", 1)[1]: spans for name, spans in row["attributes"].items()}


def decisions(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    gopher, rules = TAGGERS["gopher"], FilterConfig().gopher
    return {
        "gopher": {doc["id"]: gopher.flags(attributes, rules, doc["text"])
                   for doc, attributes in _attributes(documents_dir, output_dir, "gopher")},
        "pii_spans": {doc["id"]: document_value(attributes, "span_count")
                      for doc, attributes in _attributes(documents_dir, output_dir, "pii")},
    }


def pii_spans(documents_dir: Path, output_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    tagging = PiiTagging(rules=options["rules"])
    counts = {}
    for shards in source_shards(documents_dir).values():
        for shard in shards:
            docs = [doc for _, doc in read_documents(shard)]
            for doc, attributes in zip(docs, tag_pii([doc["text"] for doc in docs], tagging)):
                counts[doc["id"]] = document_value(attributes, "span_count")
    return {"rules": tagging.rules, "pii_spans": counts}


STAGES: dict[str, Callable[[Path, Path, dict[str, Any]], dict[str, Any]]] = {
    "filter": run_filter, "dedup": run_dedup, "mix": run_mix, "startup": startup, "decisions": decisions,
    "pii": pii_spans, "pipeline": pipeline,
}

if __name__ == "__main__":
    stage, documents, output, options = sys.argv[1:]
    print(json.dumps(STAGES[stage](Path(documents), Path(output), json.loads(options))))
