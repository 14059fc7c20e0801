"""The data order: which instance is trained on at every position, as a keyed bijection on [0, N).

Epoch ``e`` visits the instances in the order ``index(e, 0), index(e, 1), ..., index(e, N - 1)``, a
permutation that is a pure function of (instances fingerprint, seed, epoch, N). It is never stored: a
balanced Feistel network over the smallest domain of 2^(2h) >= N values, with cycle-walking to stay inside
[0, N), gives any position's instance (and, run backwards, any instance's position) in O(1) time and memory.
Round keys are the blake2b digest of (fingerprint, seed, epoch, N); the round function is the splitmix64
finalizer of (half-block + round key).

Batches: global batch ``step`` is a contiguous slice of ``batch_size`` positions. An epoch holds
``N // batch_size`` batches; its last ``N % batch_size`` positions form no batch and are skipped (see
``skipped_per_epoch``), so every batch lies inside one epoch and step ``s`` belongs to epoch
``s // batches_per_epoch``. Instance ``j`` of a global batch goes to rank ``j % world_size``, so the global
batch does not depend on the number of ranks.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olmo_model.config import Config, require
from steps.common.artifacts import Artifact

ROUNDS = 8  # blake2b's 64-byte digest gives eight 64-bit round keys
_PERSON = b"olmo-tango-order"
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_EXPORT_CHUNK = 1 << 22


def _round_function(half: np.ndarray, key: np.uint64, mask: np.uint64) -> np.ndarray:
    x = half + key  # uint64 arithmetic wraps modulo 2^64
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return (x ^ (x >> np.uint64(31))) & mask


class DataOrder:
    """The training order of ``num_instances`` instances for one (fingerprint, seed), over all epochs."""

    def __init__(self, num_instances: int, fingerprint: str, seed: int):
        if not 1 <= num_instances < 2**62:
            raise ValueError(f"num_instances: expected 1 <= N < 2^62, got {num_instances}")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"fingerprint: expected a non-empty string, got {fingerprint!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        self.num_instances = num_instances
        self.fingerprint = fingerprint
        self.seed = seed
        bits = max(2, (num_instances - 1).bit_length())
        self._half_bits = np.uint64((bits + 1) // 2)
        self._half_mask = np.uint64((1 << int(self._half_bits)) - 1)
        self._round_keys: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"DataOrder(num_instances={self.num_instances}, fingerprint={self.fingerprint!r}, seed={self.seed})"

    def round_keys(self, epoch: int) -> np.ndarray:
        """The Feistel round keys of one epoch (computed once per epoch)."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if epoch not in self._round_keys:
            material = json.dumps([self.fingerprint, self.seed, epoch, self.num_instances]).encode()
            digest = hashlib.blake2b(material, digest_size=8 * ROUNDS, person=_PERSON).digest()
            self._round_keys[epoch] = np.frombuffer(digest, dtype="<u8").astype(np.uint64)
        return self._round_keys[epoch]

    def _feistel(self, values: np.ndarray, keys: np.ndarray, forward: bool) -> np.ndarray:
        left, right = values >> self._half_bits, values & self._half_mask
        if forward:
            for key in keys:
                left, right = right, left ^ _round_function(right, key, self._half_mask)
        else:
            for key in keys[::-1]:
                left, right = right ^ _round_function(left, key, self._half_mask), left
        return (left << self._half_bits) | right

    def _permute(self, values: np.ndarray, epoch: int, forward: bool) -> np.ndarray:
        """Apply the bijection (or its inverse) with cycle-walking back into [0, N)."""
        flat = np.asarray(values, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.num_instances):
            raise IndexError(f"values must lie in [0, {self.num_instances})")
        keys = self.round_keys(epoch)
        out = self._feistel(flat.astype(np.uint64), keys, forward)
        outside = np.flatnonzero(out >= self.num_instances)
        while outside.size:
            out[outside] = self._feistel(out[outside], keys, forward)
            outside = outside[out[outside] >= self.num_instances]
        return out.astype(np.int64).reshape(np.shape(values))

    def index(self, epoch: int, positions: np.ndarray | int) -> np.ndarray:
        """Instance indices at ``positions`` of epoch ``epoch`` (same shape as ``positions``)."""
        return self._permute(positions, epoch, forward=True)

    def position_of(self, instance_index: np.ndarray | int, epoch: int) -> np.ndarray:
        """Positions in epoch ``epoch`` of the given instances: the inverse of ``index``."""
        return self._permute(instance_index, epoch, forward=False)

    def batches_per_epoch(self, batch_size: int) -> int:
        if not 1 <= batch_size <= self.num_instances:
            raise ValueError(f"batch_size: expected 1 <= batch_size <= {self.num_instances}, got {batch_size}")
        return self.num_instances // batch_size

    def skipped_per_epoch(self, batch_size: int) -> int:
        """Positions at the end of every epoch that fill no whole batch and are not trained on."""
        return self.num_instances - self.batches_per_epoch(batch_size) * batch_size

    def batch_epoch(self, step: int, batch_size: int) -> int:
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        return step // self.batches_per_epoch(batch_size)

    def global_batch(self, step: int, batch_size: int) -> np.ndarray:
        """Instance indices of global batch ``step`` (steps count on across epochs)."""
        epoch = self.batch_epoch(step, batch_size)
        first = (step - epoch * self.batches_per_epoch(batch_size)) * batch_size
        return self.index(epoch, np.arange(first, first + batch_size, dtype=np.int64))

    def step_of_position(self, epoch: int, position: int, batch_size: int) -> int | None:
        """The global step that trains on ``position`` of ``epoch``, or None if that position is skipped."""
        batches = self.batches_per_epoch(batch_size)
        in_epoch = int(position) // batch_size
        return epoch * batches + in_epoch if in_epoch < batches else None

    def export_global_indices(self, path: str | Path, epoch: int) -> Path:
        """Write epoch ``epoch``'s full order as OLMo's ``global_indices.npy``: raw little-endian uint32."""
        if self.num_instances > 2**32:
            raise ValueError(f"{self.num_instances} instances do not fit OLMo's uint32 global indices")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for first in range(0, self.num_instances, _EXPORT_CHUNK):
                positions = np.arange(first, min(first + _EXPORT_CHUNK, self.num_instances), dtype=np.int64)
                out.write(self.index(epoch, positions).astype("<u4").tobytes())
        return path


def rank_slice(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The part of a global batch that rank ``rank`` of ``world_size`` trains on: ``batch[rank::world_size]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if len(batch) % world_size:
        raise ValueError(f"global batch of {len(batch)} instances does not split evenly over {world_size} ranks")
    return batch[rank::world_size]


@dataclass(frozen=True)
class DataOrderConfig(Config):
    """A recipe's ``data_order`` block: the seed of the permutation and the instances of one global batch."""

    global_batch_size: int  # the fields in Jsonnet's (sorted) order: to_dict() is the block as a recipe writes it
    seed: int

    WHERE = "data_order"

    def check(self) -> None:
        require(self.seed >= 0, "data_order.seed", "a non-negative integer", self.seed)
        require(self.global_batch_size >= 1, "data_order.global_batch_size", "a positive integer",
                self.global_batch_size)


def order_for(instances: Artifact, config: DataOrderConfig) -> DataOrder:
    """The training order of an instances artifact: a pure function of its fingerprint, the seed and the epoch."""
    return DataOrder(instances.summary["num_instances"], instances.fingerprint, config.seed)
