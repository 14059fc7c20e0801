"""Where the per-shard jobs of the corpus and tokenization stages run: this machine's processes or a Ray cluster.

An engine maps a module-level function over jobs and yields each result as it arrives. Jobs write their outputs
themselves, to paths every worker sees (the step's work dir and output dir, source URLs), and return small stats,
so the bytes a stage writes do not depend on the engine, nor on how many workers or nodes ran it.

- :class:`LocalEngine`: ``num_workers`` spawned processes of this machine (one: this process).
- :class:`RayEngine`: one Ray task per job on any node of a cluster (``address``: ``"auto"``, ``"host:port"`` or
  ``"ray://host:port"``), or on a Ray runtime it starts on this machine (``address`` null). Ray re-runs a task
  whose worker or node died, up to ``max_retries`` times.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import uuid
import weakref
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

logger = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")


class Engine(ABC):
    """Runs a module-level function over jobs, results in completion order."""

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many jobs run at once (the default partition count of a partitioned stage)."""

    @abstractmethod
    def map_unordered(self, work: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[tuple[int, Result]]:
        """``(index, work(jobs[index]))`` for every job, as each finishes. A job that fails raises here."""

    def check_shared(self, folder: Path) -> None:
        """Raise unless every worker sees ``folder`` (where a stage's jobs write); this machine's workers do."""


class LocalEngine(Engine):
    """``num_workers`` processes of this machine, spawned (not forked); with one, jobs run in this process.

    The processes start with the first job and serve every later call (a stage's phases pay their start-up once);
    they end with :meth:`close`, or when the engine is garbage-collected.
    """

    def __init__(self, num_workers: int = 1):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self._pool: ProcessPoolExecutor | None = None

    @property
    def workers(self) -> int:
        return self.num_workers

    def _processes(self) -> ProcessPoolExecutor:
        # an executor, not a Pool: a worker that dies (killed, out of memory) fails the stage instead of hanging it
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.num_workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=single_threaded)
            self._ending = weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        return self._pool

    def close(self) -> None:
        """End the worker processes (the next call starts new ones)."""
        if self._pool is not None:
            self._ending()
            self._pool = None

    def map_unordered(self, work: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[tuple[int, Result]]:
        if min(self.num_workers, len(jobs)) <= 1:
            for index, job in enumerate(jobs):
                yield index, work(job)
            return
        pending: dict[Future, int] = {}
        try:
            pool = self._processes()
            pending = {pool.submit(work, job): index for index, job in enumerate(jobs)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    yield pending.pop(future), future.result()
        except BrokenProcessPool:
            self.close()  # a worker died (in a job or idle): the pool cannot take more work
            raise
        finally:
            for future in pending:  # the stage failed or was abandoned: drop what has not started,
                future.cancel()
            wait(pending)  # and let what has started finish, so that nothing still writes its files

    def __repr__(self) -> str:
        return f"LocalEngine(num_workers={self.num_workers})"


def single_threaded() -> None:
    """A worker runs one job per core: libraries it calls must not start thread pools of their own."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _read_probe(probe: str) -> str | None:
    """The probe file's text as a Ray node sees it (None: the node does not see it)."""
    try:
        return Path(probe).read_text()
    except OSError:
        return None


def _on_node(work: Callable[[Job], Result], job: Job) -> tuple[str, Result]:
    """``work(job)`` in a Ray task, with the id of the node that ran it."""
    import ray

    single_threaded()
    return ray.get_runtime_context().get_node_id(), work(job)


class RayEngine(Engine):
    """One Ray task (one CPU) per job. Connects to the cluster at ``address`` on first use, or starts a Ray runtime
    of ``num_cpus`` CPUs on this machine when ``address`` is None; the connection lasts as long as this process.
    Logs how many nodes ran a stage's tasks (their ids' first 8 digits)."""

    def __init__(self, address: str | None = None, max_retries: int = 3, num_cpus: int | None = None):
        self.address, self.max_retries, self.num_cpus = address, max_retries, num_cpus

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise RuntimeError("execution.engine: the Ray engine needs Ray: pip install 'olmo-tango[ray]'") from None
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
            logger.info("Ray: %d CPUs on %d nodes", int(ray.cluster_resources().get("CPU", 0)),
                        len([node for node in ray.nodes() if node["Alive"]]))
        return ray

    @property
    def workers(self) -> int:
        return max(1, int(self._ray().cluster_resources().get("CPU", 1)))

    def check_shared(self, folder: Path) -> None:
        """Reads a probe file written to ``folder`` on every alive node, before any job runs there."""
        ray = self._ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        probe = folder / f".engine-probe-{token}"
        probe.write_text(token)
        try:
            nodes = [node for node in ray.nodes() if node["Alive"]]
            seen = ray.get([ray.remote(_read_probe).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(str(probe)) for node in nodes])
        finally:
            probe.unlink()
        blind = [f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})" for node, text in zip(nodes, seen)
                 if text != token]
        if blind:
            raise RuntimeError(f"execution.engine.ray: node(s) {', '.join(blind)} do not see {folder}; put the "
                               "workspace (with an object-store workspace: OLMO_TANGO_CACHE) on a filesystem every "
                               "node mounts at the same path")

    def map_unordered(self, work: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[tuple[int, Result]]:
        ray = self._ray()
        task = ray.remote(_on_node).options(num_cpus=1, max_retries=self.max_retries)
        pending = {task.remote(work, job): index for index, job in enumerate(jobs)}
        nodes: set[str] = set()
        try:
            while pending:
                refs = list(pending)
                done, rest = ray.wait(refs, num_returns=1)
                done += ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []  # and all others ready
                for ref in done:
                    node, result = ray.get(ref)
                    nodes.add(node)
                    yield pending.pop(ref), result
        finally:
            for ref in pending:  # the stage failed or was abandoned: stop what it started
                ray.cancel(ref, force=True)
        names = ", ".join(node[:8] for node in sorted(nodes))
        logger.info("Ray: %d tasks ran on %d nodes (%s)", len(jobs), len(nodes), names)

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r})"
