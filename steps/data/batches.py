"""Training batches rebuilt from (instance index, data order): their tokens, ranks, documents and hash."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from steps.data.instances import InstanceIndex
from steps.data.order import DataOrder, rank_slice

BATCH_FILE = "batch.json"  # a training_batch artifact's answer: describe_batch


def batch_hash(tokens: np.ndarray) -> str:
    """sha256 (hex) of a ``[B, T]`` token batch written as little-endian uint32, row-major.

    Anyone can recompute it: ``hashlib.sha256(np.asarray(tokens, "<u4").tobytes()).hexdigest()``.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"expected a [batch, seq_len] array, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(np.uint32).max):
        raise ValueError("token ids must lie in [0, 2^32)")
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<u4").tobytes()).hexdigest()


def check_batch_split(batch_size: int, world_size: int, micro_batch_size: int) -> None:
    """Fail unless ``world_size`` ranks split a global batch evenly into whole micro-batches."""
    if not isinstance(world_size, int) or world_size < 1 or batch_size % world_size:
        raise ValueError(f"world size {world_size} does not divide the global batch size {batch_size}")
    if not isinstance(micro_batch_size, int) or micro_batch_size < 1 or (batch_size // world_size) % micro_batch_size:
        raise ValueError(
            f"micro-batch size {micro_batch_size} does not divide a rank's {batch_size // world_size} instances "
            f"(global batch {batch_size}, world size {world_size})"
        )


def micro_batches(rank_instances: np.ndarray, micro_batch_size: int) -> list[np.ndarray]:
    """Split one rank's instances into consecutive micro-batches of ``micro_batch_size``."""
    if micro_batch_size < 1 or len(rank_instances) % micro_batch_size:
        raise ValueError(
            f"micro_batch_size {micro_batch_size} does not divide the {len(rank_instances)} instances per rank"
        )
    return [rank_instances[i : i + micro_batch_size] for i in range(0, len(rank_instances), micro_batch_size)]


def _check_order(index: InstanceIndex, order: DataOrder) -> None:
    if order.num_instances != index.num_instances:
        raise ValueError(f"the data order covers {order.num_instances} instances, the index {index.num_instances}")


def describe_batch(
    root_dir: str | Path,
    index: InstanceIndex,
    order: DataOrder,
    step: int,
    batch_size: int,
    world_size: int,
    micro_batch_size: int,
) -> dict[str, Any]:
    """Everything about global batch ``step``: instances, exact token ids, hash, and for each instance the
    documents it holds (document spans in file tokens, and the part of the instance each one covers as
    ``[first, last)`` instance positions). Per rank: the rows of the global batch it trains on, their
    instances split into micro-batches, and the hash of its rows (the trainer's ``rank_batch_hashes``)."""
    _check_order(index, order)
    instances = order.global_batch(step, batch_size)
    tokens = index.read_instances(root_dir, instances)
    ranks = []
    for rank in range(world_size):
        rows = rank_slice(np.arange(batch_size), rank, world_size)
        ranks.append({
            "rank": rank,
            "rows": rows.tolist(),
            "micro_batches": [instances[m].tolist() for m in micro_batches(rows, micro_batch_size)],
            "batch_hash": batch_hash(tokens[rows]),
        })
    documents = []
    for instance in instances.tolist():
        k, offset = index.locate(instance)
        end = offset + index.seq_len
        instance_docs = [
            {**doc._asdict(), "in_instance": [max(doc.start, offset) - offset, min(doc.end, end) - offset]}
            for doc in index.instance_documents(root_dir, instance)
        ]
        path = index.files[k].path
        documents.append({"instance": instance, "file": path, "offset": offset, "documents": instance_docs})
    # the instances the instance filter flagged, all of whose labels are masked (the key only with a filter)
    filtered = {} if index.instance_filter is None else {
        "filtered_instances": instances[index.is_filtered(instances)].tolist()}
    return {
        "step": step,
        "epoch": order.batch_epoch(step, batch_size),
        "batch_size": batch_size,
        "seq_len": index.seq_len,
        "world_size": world_size,
        "micro_batch_size": micro_batch_size,
        "instances": instances.tolist(),
        "token_ids": tokens.tolist(),
        "batch_hash": batch_hash(tokens),
        "label_masked_tokens": int((~index.label_mask(tokens, instances)[:, 1:]).sum()),  # position 0: never a target
        "ranks": ranks,
        "documents": documents,
        **filtered,
    }


def steps_seeing_document(
    root_dir: str | Path, index: InstanceIndex, order: DataOrder, doc_id: str, batch_size: int, epochs: int
) -> list[tuple[int, int]]:
    """``(epoch, global step)`` of every batch in the first ``epochs`` epochs that holds a token of ``doc_id``."""
    _check_order(index, order)
    instances = np.asarray(index.document_instances(root_dir, doc_id), dtype=np.int64)
    seen: set[tuple[int, int]] = set()
    for epoch in range(epochs):
        for position in order.position_of(instances, epoch).tolist():
            step = order.step_of_position(epoch, position, batch_size)
            if step is not None:
                seen.add((epoch, step))
    return sorted(seen)
