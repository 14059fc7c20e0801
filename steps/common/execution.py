"""How and where a step runs its work: the recipe's ``execution`` block, declared and validated here only.

Every step that runs work (the corpus stages, tokenization, training, evaluation) takes the block whole as its
``execution`` argument. It never changes what a step computes, so it is in no fingerprint
(``steps.common.step.EXECUTION_ARGUMENTS``): a run on 8 GPUs finds the results of a run on a laptop.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Literal

from integrations.wandb_logger import check_settings
from olmo_model.config import Config, require
from steps.common.engine import Engine, LocalEngine, RayEngine

SHARDING = ("full", "hybrid", "none")  # FSDP2: shard over every rank, within a node (replicate across), replicate


@dataclass(frozen=True)
class RaySettings(Config):
    """``execution.engine.ray``: the cluster's ``address`` ("auto", "host:port", "ray://host:port"; null: start a
    Ray runtime of ``num_workers`` CPUs on this machine) and how often Ray re-runs a task whose worker died."""

    address: str | None = None
    max_retries: int = 3

    WHERE = "execution.engine.ray"

    def check(self) -> None:
        require(self.max_retries >= 0, f"{self.WHERE}.max_retries", "an integer >= 0", self.max_retries)


@dataclass(frozen=True)
class OnRay(Config):
    """``execution.engine: {ray: {...}}``."""

    ray: RaySettings

    WHERE = "execution.engine"


@dataclass(frozen=True)
class Execution(Config):
    """The ``execution`` block of a recipe; every key optional.

    ``device``: "auto" (the GPUs when there are any, else the CPU), "cpu" or "cuda". ``engine``: where the corpus
    and tokenization stages run their per-shard jobs: "local" (``num_workers`` processes of this machine) or
    ``{ray: {address, max_retries}}`` (Ray tasks on a cluster, :mod:`steps.common.engine`). ``dedup_partitions``:
    how many parts the dedup stage splits its keys into, by hash, each decided by one job in memory bounded by
    its part (null: one per worker of the engine). Training: ``world_size`` workers in all (one per device) over
    ``nnodes`` nodes meeting at ``rdzv_endpoint`` ("host:port", needed when ``nnodes`` > 1); the launcher
    restarts failed workers ``max_restarts`` times (they resume from the last checkpoint); ``sharding`` is
    FSDP2's (see ``SHARDING``); ``activation_checkpointing`` recomputes each block's activations in the backward
    pass; ``compile`` compiles each block with ``torch.compile``. A progress line every ``log_every`` steps; a
    checkpoint every ``checkpoint_every`` steps (null: only at the end), the newest ``keep_checkpoints`` kept.
    ``wandb``: ``{project, entity, mode, workflow}`` logs every training and evaluation step to Weights & Biases
    (offline unless ``mode`` or WANDB_MODE says "online").
    """

    device: str = "auto"
    engine: Literal["local"] | OnRay = "local"
    num_workers: int = 2
    dedup_partitions: int | None = None
    world_size: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    max_restarts: int = 0
    sharding: str = "full"
    activation_checkpointing: bool = False
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    wandb: dict | None = None

    WHERE = "execution"

    def check(self) -> None:
        for key in ("num_workers", "dedup_partitions", "world_size", "nnodes", "log_every", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"execution.{key}: expected a positive integer, got {value}")
        if self.max_restarts < 0:
            raise ValueError(f"execution.max_restarts: expected an integer >= 0, got {self.max_restarts}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"execution.device: expected 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.sharding not in SHARDING:
            raise ValueError(f"execution.sharding: expected one of {list(SHARDING)}, got {self.sharding!r}")
        if self.world_size % self.nnodes:
            raise ValueError(f"execution.world_size {self.world_size} must be a multiple of nnodes {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"execution.nnodes {self.nnodes}: a multi-node job needs rdzv_endpoint 'host:port'")
        check_settings(self.wandb, "execution.wandb")

    def shard_engine(self) -> Engine:
        """The engine of the per-shard jobs."""
        if isinstance(self.engine, OnRay):
            ray = self.engine.ray
            return RayEngine(ray.address, ray.max_retries, num_cpus=self.num_workers)
        return LocalEngine(self.num_workers)

    @property
    def workers_per_node(self) -> int:
        return self.world_size // self.nnodes

