"""Start one worker process per device through PyTorch's elastic launcher (the engine of ``torchrun``).

One node: ``launch_workers(fn, args, nproc_per_node=W)`` rendezvouses on a free local port. Many nodes:
every node calls it with the same ``Rendezvous(nnodes, endpoint, run_id)``; the c10d store is hosted by
the node that owns ``endpoint`` (the first to bind it when several "nodes" share one machine), and global
ranks are assigned node by node. ``fn(*args)`` runs in every worker with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` set, so ``torch.distributed.init_process_group()`` just works.

Workers die with the process that launched them (``PR_SET_PDEATHSIG``): a ``kill -9`` of a training run
leaves no orphan still writing checkpoints. A worker's exception reaches the caller as a
``WorkerFailure`` carrying the worker's own exception type and message (``worker rank 0 failed: OSError:
[Errno 28] No space left on device``). Each worker sends it to the launcher through a pipe before it dies, as
UTF-8 JSON: the elastic agent's own channel, an error file in its log directory, is lost exactly when the disk
is full (or when the worker exits without an exception Python can record), and then the agent knows only
"To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html".
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

PR_SET_PDEATHSIG = 1
REPORT_BYTES = 3500  # under PIPE_BUF (4096): one report is one atomic write, whichever worker sends it


class WorkerFailure(RuntimeError):
    """A training worker failed; the message is the failing worker's exception type and text (or its exit
    signal); ``worker_traceback`` holds the worker's traceback when it sent one."""

    def __init__(self, message: str, worker_traceback: str | None = None):
        super().__init__(message)
        self.worker_traceback = worker_traceback


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


def _report_bytes(error: BaseException) -> bytes:
    """This worker's report as UTF-8 JSON of at most ``REPORT_BYTES``: rank, attempt (restarts so far),
    ``Type: text``, the traceback's end."""
    message = f"{type(error).__name__}: {error}"
    tail = "".join(traceback.format_exception(error))
    rank, attempt = int(os.environ.get("RANK", "-1")), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    for keep in (2000, 1000, 400, 100, 0):
        data = json.dumps({"rank": rank, "attempt": attempt, "message": message[:max(keep, 200)],
                           "traceback": tail[-keep:] if keep else ""})
        if len(data.encode("utf-8")) <= REPORT_BYTES:
            break
    return data.encode("utf-8")


def _send_report(reports: Connection, error: BaseException) -> None:
    """Tell the launcher why this worker fails, in one atomic write that never blocks (a full pipe, or a
    launcher gone, loses the report, never the worker's exit)."""
    try:
        os.set_blocking(reports.fileno(), False)
        reports.send_bytes(_report_bytes(error))
    except (OSError, ValueError):
        pass


@record
def _worker(function: Callable[..., Any], args: tuple[Any, ...], launcher_pid: int, reports: Connection) -> Any:
    # The elastic agent runs in the launching process, so the worker's parent is the launcher itself.
    _die_with_parent(launcher_pid)
    try:
        return function(*args)
    except BaseException as error:  # SystemExit too: sys.exit(1) leaves the agent no message at all
        if not (isinstance(error, SystemExit) and error.code in (0, None)):
            _send_report(reports, error)
        raise


def _root_cause(reports: Connection) -> dict[str, Any] | None:
    """The first report the workers of the last attempt sent (the others often fail only because that
    worker died: a collective it left), or None if none arrived."""
    received: list[dict[str, Any]] = []
    while reports.poll():
        try:
            report = json.loads(reports.recv_bytes().decode("utf-8"))
            received.append({"rank": int(report["rank"]), "attempt": int(report["attempt"]),
                             "message": str(report["message"]), "traceback": str(report["traceback"])})
        except (EOFError, OSError, ValueError, KeyError, TypeError):
            break
    if not received:
        return None
    last = max(report["attempt"] for report in received)
    return next(report for report in received if report["attempt"] == last)


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
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    try:
        return elastic_launch(config, _worker)(function, args, os.getpid(), sender)
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        report = _root_cause(receiver)
        killed = first.exitcode < 0  # a signal (the OOM killer, kill -9): that worker could send nothing
        if report is not None and not (killed and report["rank"] != rank):
            raise WorkerFailure(f"worker rank {report['rank']} failed: {report['message']}", report["traceback"]) from None
        message = first.message
        if isinstance(message, dict):
            message = message.get("message", str(message))
        raise WorkerFailure(f"worker rank {rank} failed: {message}") from None
    finally:
        receiver.close()
        sender.close()
        os.environ.clear()
        os.environ.update(saved)
