import hashlib
import json

import numpy as np
import pytest

from steps.data.batches import batch_hash, describe_batch, micro_batches, steps_seeing_document
from steps.data.instances import build_instances
from steps.data.order import DataOrder

SEQ_LEN = 32
BATCH_SIZE = 8


@pytest.fixture(scope="module")
def pipeline(tokenized):
    output, _ = tokenized
    index = build_instances(output, SEQ_LEN)
    return output, index, DataOrder(index.num_instances, index.fingerprint(), seed=6198)


def test_batch_hash_is_sha256_of_little_endian_uint32_rows():
    tokens = np.array([[1, 2, 3], [50279, 0, 70000]])
    assert batch_hash(tokens) == hashlib.sha256(np.asarray(tokens, "<u4").tobytes()).hexdigest()
    assert batch_hash(tokens.astype(np.uint32)) == batch_hash(tokens)
    changed = tokens.copy()
    changed[1, 2] += 1
    assert batch_hash(changed) != batch_hash(tokens)
    with pytest.raises(ValueError, match="shape"):
        batch_hash(tokens[0])
    with pytest.raises(ValueError, match="token ids"):
        batch_hash(-tokens)


def test_micro_batches_split_a_rank_batch_in_order():
    assert [m.tolist() for m in micro_batches(np.arange(6), 2)] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="micro_batch_size 4 does not divide the 6"):
        micro_batches(np.arange(6), 4)


def test_describe_batch_gives_the_exact_tokens_ranks_and_documents(pipeline, corpus, olmo_tokenizer):
    root, index, order = pipeline
    texts = {doc_id: doc["text"] for doc_id, doc in corpus[1].items()}
    step = order.batches_per_epoch(BATCH_SIZE) + 2  # in the second epoch
    described = describe_batch(root, index, order, step, BATCH_SIZE, world_size=2, micro_batch_size=2)
    assert json.loads(json.dumps(described)) == described  # JSON-able as it is

    instances = order.global_batch(step, BATCH_SIZE)
    tokens = index.read_instances(root, instances)
    assert described["epoch"] == 1 and described["instances"] == instances.tolist()
    assert described["token_ids"] == tokens.tolist()
    assert described["batch_hash"] == batch_hash(tokens)
    assert described["label_masked_tokens"] == 0
    assert [r["micro_batches"] for r in described["ranks"]] == [
        [instances[0:4:2].tolist(), instances[4:8:2].tolist()],
        [instances[1:4:2].tolist(), instances[5:8:2].tolist()],
    ]
    assert [r["rows"] for r in described["ranks"]] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert [r["batch_hash"] for r in described["ranks"]] == [batch_hash(tokens[0::2]), batch_hash(tokens[1::2])]
    for row, entry in zip(tokens, described["documents"]):
        raw = np.fromfile(root / entry["file"], dtype="<u2")
        assert np.array_equal(raw[entry["offset"] : entry["offset"] + SEQ_LEN], row)
        pieces = []
        for doc in entry["documents"]:
            assert olmo_tokenizer.decode(raw[doc["start"] : doc["end"] - 1].tolist()) == texts[doc["id"]]
            first, last = doc["in_instance"]
            pieces.append(raw[entry["offset"] + first : entry["offset"] + last])
        assert np.array_equal(np.concatenate(pieces), row)


def test_describe_batch_rejects_inconsistent_sizes(pipeline):
    root, index, order = pipeline
    with pytest.raises(ValueError, match="micro_batch_size 3"):
        describe_batch(root, index, order, 0, BATCH_SIZE, world_size=2, micro_batch_size=3)
    with pytest.raises(ValueError, match="does not split evenly over 3 ranks"):
        describe_batch(root, index, order, 0, BATCH_SIZE, world_size=3, micro_batch_size=1)
    other = DataOrder(index.num_instances + 1, "fp", seed=0)
    with pytest.raises(ValueError, match="data order covers"):
        describe_batch(root, index, other, 0, BATCH_SIZE, world_size=1, micro_batch_size=1)


def test_steps_seeing_document_matches_a_scan_of_every_batch(pipeline, corpus):
    root, index, order = pipeline
    batches_per_epoch = order.batches_per_epoch(BATCH_SIZE)
    assert order.skipped_per_epoch(BATCH_SIZE) > 0  # so that skipped positions are exercised
    for doc_id in list(corpus[1])[::7]:
        holding = set(index.document_instances(root, doc_id))
        expected = [
            (step // batches_per_epoch, step)
            for step in range(2 * batches_per_epoch)
            if holding & set(order.global_batch(step, BATCH_SIZE).tolist())
        ]
        assert steps_seeing_document(root, index, order, doc_id, BATCH_SIZE, epochs=2) == expected
