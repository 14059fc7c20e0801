"""Global batches over a list of encoded examples, in a seeded multi-epoch order.

Position ``p`` of the stream is example ``permutation(epoch)[p % N]`` with ``epoch = p // N`` and
``permutation(e) = PCG64(seed + e).permutation(N)``; batch ``k`` is positions ``k·B .. (k+1)·B − 1``.
So every epoch sees every example once, a batch may straddle two epochs, and any batch can be
rebuilt from (examples, seed, B, k) alone.

Packing (:func:`pack_examples`) makes the instances rows of several examples: the whole list is packed once,
first-fit in a seeded shuffled order, and the rows are then the items of the same multi-epoch order.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import numpy as np
import torch

Item = TypeVar("Item")
PACKING_STREAM = 0x7061636B  # "pack": the packing order's random stream, apart from the epochs' ``seed + e``


def pad_right(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """A [len(sequences), longest] int64 tensor, each row padded on the right with ``value``.

    Right padding needs no attention mask: causal attention never lets a real token see the padding.
    """
    longest = max(len(sequence) for sequence in sequences)
    padded = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded


def first_fit(lengths: Sequence[int], capacity: int, order: Iterable[int]) -> list[list[int]]:
    """Bins of item indices, items taken in ``order``, each put into the first (lowest-numbered) bin whose
    lengths still leave room for it, or into a new bin after the others when none does.

    A max tree of the bins' free room finds that bin in O(log n); bins are numbered in the order they open.
    """
    count = len(lengths)
    size = 1 << max(0, count - 1).bit_length()  # leaves: at most one bin per item
    free = [capacity] * (2 * size)  # free[node]: the most room left in any bin below node
    bins: list[list[int]] = []
    for index in order:
        length = lengths[index]
        if not 0 <= length <= capacity:
            raise ValueError(f"item {index}: length {length} does not fit a bin of {capacity}")
        node = 1
        while node < size:
            node = 2 * node if free[2 * node] >= length else 2 * node + 1
        number = node - size
        if number == len(bins):
            bins.append([])
        bins[number].append(int(index))
        free[node] -= length
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def pack_examples(lengths: Sequence[int], capacity: int, seed: int) -> list[tuple[int, ...]]:
    """Rows of example indices whose lengths sum to at most ``capacity``: :func:`first_fit` in the order
    ``PCG64(SeedSequence([seed, PACKING_STREAM])).permutation(N)``, a pure function of (lengths, capacity, seed).
    """
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, PACKING_STREAM])))
    order = generator.permutation(len(lengths))
    return [tuple(row) for row in first_fit(lengths, capacity, order)]


class ExampleBatches(Generic[Item]):
    """``batches(k)``: the collated global batch ``k`` (with a ``batch_hash`` of its example indices)."""

    def __init__(
        self,
        items: Sequence[Item],
        batch_size: int,
        seed: int,
        collate: Callable[[list[Item]], dict[str, Any]],
    ) -> None:
        if not items:
            raise ValueError("no examples to batch")
        if batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        self.items = items
        self.batch_size = batch_size
        self.seed = seed
        self.collate = collate
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            generator = np.random.Generator(np.random.PCG64(self.seed + epoch))
            self._permutations[epoch] = generator.permutation(len(self.items))
        return self._permutations[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Example indices of global batch ``step``."""
        count = len(self.items)
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return np.array([self._permutation(p // count)[p % count] for p in positions], dtype=np.int64)

    def __call__(self, step: int) -> dict[str, Any]:
        indices = self.indices(step)
        batch = self.collate([self.items[i] for i in indices])
        batch["batch_hash"] = hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest()[:16]
        return batch


@dataclass(frozen=True)
class ExampleData(Generic[Item]):
    """An adaptation step's training data: encoded examples in global batches of ``batch_size`` (a seeded
    multi-epoch order, :class:`ExampleBatches`), padded with ``pad_token_id``, none longer than ``max_length``."""

    items: list[Item]
    pad_token_id: int
    batch_size: int
    seed: int
    max_length: int

    @property
    def seq_len(self) -> int:
        return self.max_length

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps that cover ``epochs`` passes over the examples (the last batch may reach into the next)."""
        return math.ceil(epochs * len(self.items) / self.batch_size)

    def example_batches(self, items: Sequence[Item]) -> ExampleBatches[Item]:
        return ExampleBatches(items, self.batch_size, self.seed, self.collate)

    def collate(self, items: list[Item]) -> dict[str, Any]:
        raise NotImplementedError
