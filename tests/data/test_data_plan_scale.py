"""Batch regeneration at OLMo-7B's scale: 2T tokens on 1000 (sparse) token files, 2048 × 2048-token batches."""
import hashlib
import tracemalloc

import numpy as np
import pytest
from tests.data.sparse_plan import OLMO_7B_TOKENS, OLMO_BATCH_SIZE, OLMO_SEQ_LEN, read_stamps, sparse_plan, stamp_instances

from steps.data.batches import batch_hash
from steps.data.instances import InstanceIndex
from steps.data.order import DataOrder


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    directory = tmp_path_factory.mktemp("olmo-7b-plan")
    return directory, sparse_plan(directory)


def regenerate(directory, index_dict: dict, fingerprint: str, step: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A batch from nothing but the plan's index, its fingerprint, the seed and the step (as a fresh process)."""
    index = InstanceIndex.from_dict(index_dict)
    instances = DataOrder(index.num_instances, fingerprint, seed=6198).global_batch(step, OLMO_BATCH_SIZE)
    tokens = index.read_instances(directory, instances)
    return instances, tokens, batch_hash(tokens)


def test_the_plan_has_olmo_7b_shape(plan):
    _, index = plan
    assert sum(f.num_tokens for f in index.files) == OLMO_7B_TOKENS
    assert index.num_instances * OLMO_SEQ_LEN + index.dropped_tokens == OLMO_7B_TOKENS
    assert 976_000_000 < index.num_instances < 976_562_500 and 0 < index.dropped_tokens < 1000 * OLMO_SEQ_LEN


def test_any_batch_is_regenerated_exactly_in_under_100_mb(plan):
    directory, index = plan
    fingerprint = index.fingerprint()
    order = DataOrder(index.num_instances, fingerprint, seed=6198)
    per_epoch = order.batches_per_epoch(OLMO_BATCH_SIZE)
    for step in (0, per_epoch - 1, per_epoch + 79_163):  # first, last of epoch 0, one in epoch 1 (the anneal's)
        expected = order.global_batch(step, OLMO_BATCH_SIZE)
        stamp_instances(directory, index, expected)
        tracemalloc.start()
        try:
            instances, tokens, digest = regenerate(directory, index.to_dict(), fingerprint, step)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 100 * 2**20
        assert tokens.shape == (OLMO_BATCH_SIZE, OLMO_SEQ_LEN)
        assert np.array_equal(read_stamps(tokens), expected)  # every row came from its instance's offset
        assert digest == hashlib.sha256(tokens.astype("<u4").tobytes()).hexdigest()
        files = {index.locate(int(i))[0] for i in instances}
        assert len(files) > 800  # a batch draws from nearly every token file
