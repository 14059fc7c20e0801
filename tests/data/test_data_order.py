import numpy as np
import pytest

from steps.data.order import DataOrder, rank_slice

OLMO_7B_INSTANCES = 2_000_000_000_000 // 2048  # 976,562,500


def full_order(order: DataOrder, epoch: int) -> np.ndarray:
    return order.index(epoch, np.arange(order.num_instances))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 16, 17, 1000, 4097, 65_537, 300_001])
def test_order_is_a_bijection_and_position_of_inverts_it(n):
    order = DataOrder(n, "fp", seed=6198)
    permutation = full_order(order, epoch=0)
    assert np.array_equal(np.sort(permutation), np.arange(n))
    assert np.array_equal(order.position_of(permutation, epoch=0), np.arange(n))


def test_order_shuffles():
    permutation = full_order(DataOrder(10_000, "fp", seed=1), epoch=0)
    assert np.mean(permutation == np.arange(10_000)) < 0.01
    assert abs(np.corrcoef(permutation, np.arange(10_000))[0, 1]) < 0.05


def test_order_depends_on_fingerprint_seed_and_epoch():
    n = 1000
    base = full_order(DataOrder(n, "fp", seed=1), epoch=0)
    variants = [
        full_order(DataOrder(n, "fp", seed=1), epoch=1),
        full_order(DataOrder(n, "fp", seed=2), epoch=0),
        full_order(DataOrder(n, "other-fp", seed=1), epoch=0),
    ]
    for variant in variants:
        assert np.mean(variant == base) < 0.05


def test_order_is_the_same_on_every_call_and_object():
    positions = np.array([[5, 0], [999, 17]])
    first = DataOrder(1000, "fp", seed=3).index(2, positions)
    assert first.shape == (2, 2)
    assert np.array_equal(DataOrder(1000, "fp", seed=3).index(2, positions), first)
    assert np.array_equal(DataOrder(1000, "fp", seed=3).index(2, positions.reshape(-1)), first.reshape(-1))
    assert int(DataOrder(1000, "fp", seed=3).index(2, 999)) == first[1, 0]


def test_olmo_7b_sized_order_gives_any_batch_and_its_inverse():
    order = DataOrder(OLMO_7B_INSTANCES, "olmo-7b-instances", seed=6198)
    batches_per_epoch = order.batches_per_epoch(2048)
    assert batches_per_epoch == 476_837 and order.skipped_per_epoch(2048) == OLMO_7B_INSTANCES - 476_837 * 2048
    step = batches_per_epoch + 79_163  # a step in the second epoch, as in the 7B anneal
    batch = order.global_batch(step, 2048)
    assert batch.shape == (2048,) and len(np.unique(batch)) == 2048
    assert batch.min() >= 0 and batch.max() < OLMO_7B_INSTANCES
    positions = order.position_of(batch, epoch=1)
    assert np.array_equal(positions, np.arange(79_163 * 2048, 79_164 * 2048))


@pytest.mark.parametrize("epoch", [0, 1, 7])
def test_olmo_7b_sized_order_is_injective_on_a_million_sampled_positions(epoch):
    order = DataOrder(OLMO_7B_INSTANCES, "olmo-7b-instances", seed=6198)
    positions = np.unique(np.random.default_rng(epoch).integers(0, OLMO_7B_INSTANCES, size=1 << 20))
    instances = order.index(epoch, positions)
    assert instances.min() >= 0 and instances.max() < OLMO_7B_INSTANCES
    assert len(np.unique(instances)) == len(positions)  # no two positions share an instance
    assert np.array_equal(order.position_of(instances, epoch), positions)


def test_batches_are_contiguous_slices_and_skip_the_partial_batch_of_each_epoch():
    order = DataOrder(10, "fp", seed=0)
    assert order.batches_per_epoch(3) == 3 and order.skipped_per_epoch(3) == 1
    epoch0, epoch1 = full_order(order, 0), full_order(order, 1)
    batches = [order.global_batch(step, 3) for step in range(6)]
    assert np.array_equal(np.concatenate(batches[:3]), epoch0[:9])
    assert np.array_equal(np.concatenate(batches[3:]), epoch1[:9])
    assert [order.batch_epoch(step, 3) for step in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert order.step_of_position(1, 4, 3) == 4
    assert order.step_of_position(1, 9, 3) is None  # the skipped position


def test_bad_arguments_are_rejected():
    order = DataOrder(10, "fp", seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        order.global_batch(0, 11)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        order.index(0, [10])
    with pytest.raises(IndexError):
        order.position_of(-1, 0)
    with pytest.raises(ValueError, match="num_instances"):
        DataOrder(0, "fp", seed=0)
    with pytest.raises(ValueError, match="epoch"):
        order.index(-1, [0])


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_rank_slices_reassemble_the_global_batch(world_size):
    batch = DataOrder(1000, "fp", seed=0).global_batch(7, 16)
    slices = [rank_slice(batch, rank, world_size) for rank in range(world_size)]
    assert all(len(s) == 16 // world_size for s in slices)
    reassembled = np.empty_like(batch)
    for rank, part in enumerate(slices):
        reassembled[rank::world_size] = part
    assert np.array_equal(reassembled, batch)


def test_rank_slice_rejects_uneven_splits_and_bad_ranks():
    with pytest.raises(ValueError, match="does not split evenly"):
        rank_slice(np.arange(6), 0, 4)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        rank_slice(np.arange(6), 2, 2)


def test_export_global_indices_writes_olmo_layout(tmp_path):
    order = DataOrder(12_345, "fp", seed=6198)
    path = order.export_global_indices(tmp_path / "global_indices.npy", epoch=1)
    assert path.stat().st_size == 12_345 * 4
    exported = np.memmap(path, dtype=np.uint32, mode="r")
    assert np.array_equal(exported, full_order(order, 1))
