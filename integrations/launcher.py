"""Start one worker process per device through PyTorch's elastic launcher (the engine of ``torchrun``).

One node: ``launch_workers(fn, args, nproc_per_node=W)`` rendezvouses on a free local port. Many nodes:
every node calls it with the same ``Rendezvous(nnodes, endpoint, run_id)``; the c10d store is hosted by
the node that owns ``endpoint`` (the first to bind it when several "nodes" share one machine), and global
ranks are assigned node by node. ``fn(*args)`` runs in every worker with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` set, so ``torch.distributed.init_process_group()`` just works.

Workers die with the process that launched them (``PR_SET_PDEATHSIG``): a ``kill -9`` of a training run
leaves no orphan still writing checkpoints. A worker's exception reaches the caller as a
``WorkerFailure`` carrying the worker's own message.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

PR_SET_PDEATHSIG = 1


class WorkerFailure(RuntimeError):
    """A training worker failed; the message is the failing worker's exception (or its exit signal)."""


@dataclass(frozen=True)
class Rendezvous:
    """How the nodes of one job find each other.

    ``endpoint`` ``host:port`` of the c10d rendezvous store (required when ``nnodes > 1``; one node uses a
    free local port). ``run_id`` must be the same on every node of a job and differ between jobs.
    """

    nnodes: int = 1
    endpoint: str | None = None
    run_id: str = "olmo-tango"
    max_restarts: int = 0
    timeout_s: int = 900

    def __post_init__(self) -> None:
        if self.nnodes < 1:
            raise ValueError(f"nnodes: expected >= 1, got {self.nnodes}")
        if self.nnodes > 1 and not self.endpoint:
            raise ValueError(f"nnodes {self.nnodes}: a multi-node job needs a rendezvous endpoint 'host:port'")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts: expected >= 0, got {self.max_restarts}")


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); exit if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


@record
def _worker(function: Callable[..., Any], args: tuple[Any, ...], launcher_pid: int) -> Any:
    # The elastic agent runs in the launching process, so the worker's parent is the launcher itself.
    _die_with_parent(launcher_pid)
    return function(*args)


def launch_workers(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    nproc_per_node: int,
    rendezvous: Rendezvous = Rendezvous(),
    environment: dict[str, str] | None = None,
) -> dict[int, Any]:
    """Run ``function(*args)`` in ``nproc_per_node`` fresh processes of this node; return their results
    by global rank. ``function`` and ``args`` must be picklable (workers are spawned, not forked)."""
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node: expected >= 1, got {nproc_per_node}")
    single = rendezvous.nnodes == 1 and not rendezvous.endpoint
    config = LaunchConfig(
        min_nodes=rendezvous.nnodes,
        max_nodes=rendezvous.nnodes,
        nproc_per_node=nproc_per_node,
        run_id=rendezvous.run_id,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0" if single else rendezvous.endpoint,
        rdzv_configs={"timeout": rendezvous.timeout_s, **({"is_host": True} if single else {})},
        max_restarts=rendezvous.max_restarts,
        start_method="spawn",
        monitor_interval=0.1,
    )
    saved = dict(os.environ)
    os.environ.update(environment or {})  # spawned workers inherit the launcher's environment
    try:
        return elastic_launch(config, _worker)(function, args, os.getpid())
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        message = first.message
        if isinstance(message, dict):
            message = message.get("message", str(message))
        raise WorkerFailure(f"worker rank {rank} failed: {message}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
