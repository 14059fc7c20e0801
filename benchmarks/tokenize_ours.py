"""This project's side of the tokenize benchmark, run in the project's virtualenv by ``tokenize.py``.

``python benchmarks/tokenize_ours.py <mode> '<json options>'`` prints one JSON line:

- ``tokenize``: :func:`steps.data.tokenize.tokenize_documents` over ``documents`` into ``output``
  (options: ``documents``, ``tokenizer``, ``output``, ``eos``, ``workers``); prints tokens and documents;
- ``startup``: nothing but the imports ``tokenize`` makes (the fixed cost of a run);
- ``compare`` (not timed): every document's token ids in our output against dolma's ``part-*.npy`` +
  ``part-*.csv.gz`` (options: ``documents``, ``tokenizer``, ``ours``, ``peer``, ``eos``), keyed by document id;
  a document that differs is checked against our tokenizer run on its whitespace-stripped text;
- ``batch_regen`` (options: ``tokens``, ``steps``, ``seed``): the instance indices and token ids of random
  global batches of an OLMo-7B-shaped plan (token ids read from a small token file, reused).
"""
from __future__ import annotations

import csv
import gzip
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.common.documents import read_documents  # noqa: E402
from steps.data.order import DataOrder  # noqa: E402
from steps.data.tokenize import SUMMARY_FILE, tokenize_documents  # noqa: E402
from steps.data.tokenizer import parse_tokenizer  # noqa: E402

# OLMo-7B's plan: 2T tokens in 2048-token instances, global batch 2048 instances (4M tokens)
PLAN_TOKENS = 2 * 10**12
SEQ_LEN = 2048
GLOBAL_BATCH = 2048
PLAN_FINGERPRINT = "olmo-7b-shaped-plan"  # stands in for an instances artifact's fingerprint


def run_tokenize(options: dict[str, Any]) -> dict[str, Any]:
    summary = tokenize_documents(options["documents"], options["tokenizer"], options["output"],
                                 eos_token_id=options["eos"], num_workers=options["workers"])
    return {"tokens": summary["total_tokens"], "documents": summary["total_documents"]}


def provenance_rows(path: Path) -> Iterator[list[str]]:
    """``start,end,id,src,loc`` rows of a csv.gz written by either tool."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        yield from csv.reader(handle)


def documents_of(token_file: Path, provenance: Path) -> Iterator[tuple[str, np.ndarray]]:
    tokens = np.fromfile(token_file, dtype="<u2")
    for start, end, doc_id, *_ in provenance_rows(provenance):
        yield doc_id, tokens[int(start):int(end)]


def ours_documents(output: Path) -> dict[str, np.ndarray]:
    summary = json.loads((output / SUMMARY_FILE).read_text())
    return {doc_id: ids for f in summary["files"]
            for doc_id, ids in documents_of(output / f["path"], output / f["provenance"])}


def peer_documents(output: Path) -> dict[str, np.ndarray]:
    return {doc_id: ids for npy in sorted(output.glob("part-*.npy"))
            for doc_id, ids in documents_of(npy, npy.with_suffix(".csv.gz"))}


def read_documents_of(documents: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    for shard in sorted(documents.glob("*/*.jsonl.gz")):
        yield from read_documents(shard)


def compare(options: dict[str, Any]) -> dict[str, Any]:
    """Per-document equality; a difference is explained when dolma's ids are those of the stripped text."""
    ours, peer = ours_documents(Path(options["ours"])), peer_documents(Path(options["peer"]))
    differing = sorted(doc_id for doc_id in ours.keys() & peer.keys() if not np.array_equal(ours[doc_id], peer[doc_id]))
    texts = {doc["id"]: doc["text"] for _, doc in read_documents_of(Path(options["documents"])) if doc["id"] in differing}
    tokenizer = parse_tokenizer(Path(options["tokenizer"]).read_bytes(), options["tokenizer"])
    stripped = [doc_id for doc_id in differing if texts[doc_id] != texts[doc_id].strip() and np.array_equal(
        tokenizer.encode(texts[doc_id].strip(), add_special_tokens=False).ids + [options["eos"]], peer[doc_id])]
    return {
        "documents_ours": len(ours), "documents_peer": len(peer),
        "only_ours": sorted(ours.keys() - peer.keys())[:20], "only_peer": sorted(peer.keys() - ours.keys())[:20],
        "differing": len(differing), "differing_explained_by_strip": len(stripped),
        "unexplained": [doc_id for doc_id in differing if doc_id not in stripped][:20],
        "tokens_ours": int(sum(map(len, ours.values()))), "tokens_peer": int(sum(map(len, peer.values()))),
    }


def measured(function: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall-clock ms of ``function`` over ``repeats`` calls, and its peak traced memory in MB (one call)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def batch_regen(options: dict[str, Any]) -> dict[str, Any]:
    """Regenerate random global batches of a plan shaped like OLMo-7B's, from scratch each time.

    The order maths run at full size (a fresh DataOrder over 976,562,500 instances per batch, round keys
    included); the tokens come from a small token file reused: instance ``i`` reads that file's instance
    ``i mod (instances in the file)``.
    """
    tokens = np.memmap(options["tokens"], dtype="<u2", mode="r")
    file_instances = len(tokens) // SEQ_LEN
    num_instances = PLAN_TOKENS // SEQ_LEN
    steps_per_epoch = num_instances // GLOBAL_BATCH
    rng = np.random.default_rng(options["seed"])
    steps = iter(rng.integers(0, steps_per_epoch, size=2 * options["steps"] + 2).tolist())

    def indices() -> np.ndarray:
        return DataOrder(num_instances, PLAN_FINGERPRINT, options["seed"]).global_batch(next(steps), GLOBAL_BATCH)

    def batch() -> np.ndarray:
        out = np.empty((GLOBAL_BATCH, SEQ_LEN), dtype=np.int64)
        for row, instance in enumerate((indices() % file_instances).tolist()):
            out[row] = tokens[instance * SEQ_LEN:(instance + 1) * SEQ_LEN]
        return out

    indices_ms, indices_mb = measured(indices, options["steps"])
    batch_ms, batch_mb = measured(batch, options["steps"])
    return {"instances": num_instances, "steps_per_epoch": steps_per_epoch, "steps_measured": options["steps"],
            "indices_ms": indices_ms, "indices_mb": indices_mb, "batch_ms": batch_ms, "batch_mb": batch_mb,
            "file_instances": file_instances}


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tokenize": run_tokenize, "startup": lambda options: {}, "compare": compare, "batch_regen": batch_regen,
}

if __name__ == "__main__":
    print(json.dumps(MODES[sys.argv[1]](json.loads(sys.argv[2]))))
