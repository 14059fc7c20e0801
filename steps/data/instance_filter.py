"""The repeated n-gram instance filter of OLMo 2: an instance holding a long run of one short n-gram is not
trained on.

Semantics, those of OLMo-core (``InstanceFilterConfig``; ``NumpyDatasetBase._validate_instance`` in
``olmo_core/data/numpy_dataset.py`` with ``find_periodic_sequences`` in ``olmo_core/data/utils.py``): an
instance is *filtered* when, for some period ``p`` in ``repetition_min_period .. repetition_max_period``, its
token ids hold a run in which one ``p``-token block occurs ``repetition_max_count`` or more times back to
back. A run is maximal: ``x[i] == x[i + p]`` for every ``i`` of ``[a, b - p)``, and its block occurs
``(b - a) // p`` times, the first copy included and a trailing partial copy not. OLMo-core compares
``times >= repetition_max_count``, so with OLMo 2's ``{count 32, periods 1..13}`` a token written 32 times in
a row (the first and 31 repetitions), or a 13-token block written 32 times, is filtered, 31 copies are not,
and a block of 14 distinct tokens never is. Each instance is judged on its own ``seq_len`` token ids (EOS
included), as OLMo-core judges the ``input_ids`` of each fixed-length instance: a run that an instance
boundary cuts counts in each instance with the copies it has there.

What happens to a filtered instance is OLMo-core's too: it stays in the data order and in its batch, and
every one of its labels is masked (OLMo-core sets the instance's ``instance_mask`` False, and ``get_labels``
fills its labels with the ignore index), so it adds no loss and no label tokens.

:func:`repetitive_rows` decides for many instances at once with numpy: per period, a strided sample of the
equalities ``x[i] == x[i + p]`` picks the few candidate rows, and only those are checked exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olmo_model.config import Config, require

# OLMo-core's detector reports only runs of at least three copies, so it cannot filter on fewer.
MIN_REPETITION_COUNT = 3
_SAMPLES_PER_RUN = 4  # sampled equalities a qualifying run always covers (fewer: cheaper scan, more candidates)


@dataclass(frozen=True)
class InstanceFilterConfig(Config):
    """A recipe's ``instance_filter`` block of the ``instances`` step (OLMo 2: ``{32, 13, 1}``).

    ``repetition_max_count``: copies of one block in a row that filter an instance (at least 3);
    ``repetition_min_period`` .. ``repetition_max_period``: the block lengths (periods) looked for, in tokens.
    """

    repetition_max_count: int  # the fields in Jsonnet's (sorted) order: to_dict() is the block as a recipe writes it
    repetition_max_period: int
    repetition_min_period: int

    WHERE = "instance_filter"

    def check(self) -> None:
        require(self.repetition_min_period >= 1, "instance_filter.repetition_min_period", "a positive integer",
                self.repetition_min_period)
        require(self.repetition_max_period >= self.repetition_min_period, "instance_filter.repetition_max_period",
                f"an integer >= repetition_min_period ({self.repetition_min_period})", self.repetition_max_period)
        require(self.repetition_max_count >= MIN_REPETITION_COUNT, "instance_filter.repetition_max_count",
                f"an integer >= {MIN_REPETITION_COUNT} (shorter runs are never detected)", self.repetition_max_count)


OLMO2_INSTANCE_FILTER = InstanceFilterConfig(repetition_max_count=32, repetition_max_period=13, repetition_min_period=1)


def _has_true_run(flags: np.ndarray, length: int) -> np.ndarray:
    """[n, W] bool -> [n]: True where a row holds ``length`` consecutive Trues."""
    n, width = flags.shape
    if length > width:
        return np.zeros(n, dtype=bool)
    counts = np.zeros((n, width + 1), dtype=np.int32)
    np.cumsum(flags, axis=1, dtype=np.int32, out=counts[:, 1:])
    return ((counts[:, length:] - counts[:, :-length]) == length).any(axis=1)


def repetitive_rows(tokens: np.ndarray, config: InstanceFilterConfig) -> np.ndarray:
    """[n, seq_len] token ids -> [n] bool: True for each row (instance) the filter removes from training.

    A row qualifies for period ``p`` when ``x[i] == x[i + p]`` holds for ``K = (count - 1) * p`` consecutive
    ``i``: the run then spans ``K + p`` tokens, ``count`` whole copies. Equalities sampled every ``s = K // 4``
    positions contain ``K // s`` consecutive Trues inside any such run, so rows without that are skipped for
    ``p`` without looking at the rest; the others are checked on every position.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"expected a [instances, seq_len] array, got shape {tokens.shape}")
    n, seq_len = tokens.shape
    flagged = np.zeros(n, dtype=bool)
    count = config.repetition_max_count
    for period in range(config.repetition_min_period, config.repetition_max_period + 1):
        needed = (count - 1) * period  # consecutive equalities x[i] == x[i + period]
        if needed + period > seq_len:
            break  # longer periods need even more tokens
        stride = max(1, needed // _SAMPLES_PER_RUN)
        sampled = tokens[:, 0 : seq_len - period : stride] == tokens[:, period:seq_len:stride]
        candidates = np.flatnonzero(_has_true_run(sampled, needed // stride) & ~flagged)
        if candidates.size:
            rows = tokens[candidates]
            flagged[candidates[_has_true_run(rows[:, period:] == rows[:, :-period], needed)]] = True
    return flagged

