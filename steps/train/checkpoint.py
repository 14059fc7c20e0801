"""Where a training run stands (:class:`TrainState`), saved with every model directory and training checkpoint.

Model directories (safetensors + ``config.json`` + ``train_state.json``) are written and loaded by
``steps.common.models``; the sharded training checkpoints by ``steps.train.sharded_checkpoint``; both are
checksummed directories written atomically (``steps.common.checksums``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from steps.common.checksums import CheckpointError


@dataclass
class TrainState:
    """Where a training run stands.

    ``step`` counts optimizer steps done (it drives the LR schedule and ``max_steps``);
    ``data_step`` is the index of the next global batch in the data order (equal to ``step`` unless
    the run started mid-order, as an anneal does); ``history`` holds the logged metrics.
    """

    step: int = 0
    data_step: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"TrainState: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**data)
