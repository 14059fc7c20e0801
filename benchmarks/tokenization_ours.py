"""This project's side of the tokenization benchmark, run in the project's virtualenv by ``tokenization.py``.

``python benchmarks/tokenization_ours.py <mode> '<json options>'`` prints one JSON line:

- ``tokenize``: :func:`steps.data.tokenize.tokenize_documents` over ``documents`` into ``output``
  (options: ``documents``, ``tokenizer``, ``output``, ``eos``, ``workers``); prints tokens and documents;
- ``startup``: nothing but the imports ``tokenize`` makes (the fixed cost of a run);
- ``compare`` (not timed): every document's token ids in our output against dolma's ``part-*.npy`` +
  ``part-*.csv.gz`` (options: ``ours``, ``peer``), keyed by document id;
- ``batch_regen`` (options: ``plan``, ``steps``, ``seed``; ``total_tokens`` and ``files`` for a smaller plan): the
  instance indices, token ids and hash of random global batches of an OLMo-7B-shaped plan (2T tokens on 1000
  sparse token files, built in ``plan``).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.data.batches import batch_hash  # noqa: E402
from steps.data.instances import InstanceIndex  # noqa: E402
from steps.data.order import DataOrder  # noqa: E402
from steps.data.provenance import read_documents as read_provenance  # noqa: E402
from steps.data.tokenize import SUMMARY_FILE, tokenize_documents  # noqa: E402
from steps.common.engine import LocalEngine  # noqa: E402
from tests.data.sparse_plan import (  # noqa: E402
    OLMO_7B_TOKENS, OLMO_BATCH_SIZE, read_stamps, sparse_plan, stamp_instances,
)


def run_tokenize(options: dict[str, Any]) -> dict[str, Any]:
    summary = tokenize_documents(options["documents"], options["tokenizer"], options["output"],
                                 eos_token_id=options["eos"], engine=LocalEngine(options["workers"]))
    return {"tokens": summary["total_tokens"], "documents": summary["total_documents"]}


def documents_of(token_file: Path, provenance: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Each document's token ids, from a token file and its provenance (written by either tool)."""
    tokens = np.fromfile(token_file, dtype="<u2")
    for document in read_provenance(provenance):
        yield document.id, tokens[document.start:document.end]


def ours_documents(output: Path) -> dict[str, np.ndarray]:
    summary = json.loads((output / SUMMARY_FILE).read_text())
    return {doc_id: ids for f in summary["files"]
            for doc_id, ids in documents_of(output / f["path"], output / f["provenance"])}


def peer_documents(output: Path) -> dict[str, np.ndarray]:
    return {doc_id: ids for npy in sorted(output.glob("part-*.npy"))
            for doc_id, ids in documents_of(npy, npy.with_suffix(".csv.gz"))}


def compare(options: dict[str, Any]) -> dict[str, Any]:
    """Per-document equality of the token ids, keyed by document id."""
    ours, peer = ours_documents(Path(options["ours"])), peer_documents(Path(options["peer"]))
    differing = sorted(doc_id for doc_id in ours.keys() & peer.keys() if not np.array_equal(ours[doc_id], peer[doc_id]))
    return {
        "documents_ours": len(ours), "documents_peer": len(peer),
        "only_ours": sorted(ours.keys() - peer.keys())[:20], "only_peer": sorted(peer.keys() - ours.keys())[:20],
        "differing": len(differing), "unexplained": differing[:20],
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
    """Regenerate random global batches of a plan shaped like OLMo-7B's.

    The plan is the tests' sparse one (2T tokens on 1000 token files, ``plan`` names its folder). The
    batches' instances are stamped with their numbers first (untimed), which also puts their pages in
    the page cache as warm token files would be. Timed, each from nothing but the index's JSON form, the
    fingerprint, the seed and the step: loading the index; a fresh ``DataOrder`` giving the batch's
    instances; those plus reading the token ids through the index; and the batch hash. Each batch is
    checked against its stamps.
    """
    directory = Path(options["plan"])
    plan = sparse_plan(directory, options.get("total_tokens", OLMO_7B_TOKENS), options.get("files", 1000))
    index_dict, fingerprint, seed = plan.to_dict(), plan.fingerprint(), options["seed"]
    steps_per_epoch = plan.num_instances // OLMO_BATCH_SIZE
    steps = np.random.default_rng(seed).integers(0, steps_per_epoch, size=options["steps"] + 1).tolist()
    order = DataOrder(plan.num_instances, fingerprint, seed)
    for step in steps:
        stamp_instances(directory, plan, order.global_batch(step, OLMO_BATCH_SIZE))

    index = InstanceIndex.from_dict(index_dict)
    queue = iter(steps * 3)

    def indices() -> np.ndarray:
        return DataOrder(index.num_instances, fingerprint, seed).global_batch(next(queue), OLMO_BATCH_SIZE)

    def batch() -> np.ndarray:
        instances = indices()
        tokens = index.read_instances(directory, instances)
        if not np.array_equal(read_stamps(tokens), instances):
            raise AssertionError("a regenerated batch does not hold the instances it should")
        return tokens

    tokens = batch()
    load_ms, load_mb = measured(lambda: InstanceIndex.from_dict(index_dict), options["steps"])
    indices_ms, indices_mb = measured(indices, options["steps"])
    batch_ms, batch_mb = measured(batch, options["steps"])
    hash_ms, _ = measured(lambda: batch_hash(tokens), options["steps"])
    return {"instances": index.num_instances, "token_files": len(index.files), "steps_per_epoch": steps_per_epoch,
            "steps_measured": options["steps"], "index_ms": load_ms, "index_mb": load_mb,
            "indices_ms": indices_ms, "indices_mb": indices_mb, "batch_ms": batch_ms, "batch_mb": batch_mb,
            "hash_ms": hash_ms}


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tokenize": run_tokenize, "startup": lambda options: {}, "compare": compare, "batch_regen": batch_regen,
}

if __name__ == "__main__":
    print(json.dumps(MODES[sys.argv[1]](json.loads(sys.argv[2]))))
