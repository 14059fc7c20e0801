"""An instance index with the shape of OLMo-7B's pretraining data (2T tokens), on sparse token files.

The files take no disk space until written; :func:`stamp_instances` writes each given instance's number
into its first four tokens, so reading a batch back shows which instances (at which file offsets) it holds.
Used by the data tests and by ``benchmarks/tokenization.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from steps.data.instances import InstanceIndex, build_instances

OLMO_7B_TOKENS = 2 * 10**12
OLMO_SEQ_LEN = 2048
OLMO_BATCH_SIZE = 2048
STAMP_TOKENS = 4  # a 64-bit instance number as four little-endian uint16 tokens


def sparse_plan(directory: Path, total_tokens: int = OLMO_7B_TOKENS, files: int = 1000,
                seq_len: int = OLMO_SEQ_LEN) -> InstanceIndex:
    """``files`` sparse uint16 token files of ``total_tokens`` in all, cut into ``seq_len`` instances.

    The sizes vary by a few hundred tokens, so most files end in a tail that fills no instance.
    """
    sizes = [total_tokens // files + 97 * (k % 5) for k in range(files - 1)]
    sizes.append(total_tokens - sum(sizes))
    records = []
    for k, size in enumerate(sizes):
        path = Path(directory, f"tokens/part-{k:05d}.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.truncate(size * 2)
        records.append({"path": path.relative_to(directory).as_posix(), "tokens": size, "dtype": "uint16"})
    return build_instances({"files": records}, seq_len)


def stamp_instances(directory: Path, index: InstanceIndex, instances: np.ndarray) -> None:
    """Write each instance's number into its first :data:`STAMP_TOKENS` tokens."""
    for instance in np.asarray(instances).tolist():
        k, offset = index.locate(instance)
        with open(Path(directory, index.files[k].path), "r+b") as handle:
            handle.seek(offset * 2)
            handle.write(np.uint64(instance).astype("<u8").tobytes())


def read_stamps(tokens: np.ndarray) -> np.ndarray:
    """The instance numbers stamped into rows of ``tokens`` ([B, T] token ids)."""
    words = np.ascontiguousarray(tokens[:, :STAMP_TOKENS], dtype="<u2")
    return words.view("<u8").reshape(-1).astype(np.int64)
