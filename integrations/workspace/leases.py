"""Leases: which run computes a step, taken by an atomic create and kept alive by a heartbeat.

A step's leases are numbered files ``leases/<unique id>/<generation>.json``. A run takes generation g+1
by creating that file atomically (``O_EXCL`` locally, ``If-None-Match: *`` on S3, ``ifGenerationMatch=0``
on GCS), so of any number of contenders exactly one wins, on one machine or many. The holder rewrites
its own file every ``ttl / 4`` seconds (the ``beat`` counter). A waiting run watches that counter with its
own monotonic clock, so clocks of different machines never have to agree: when the counter has not moved
for ``ttl`` seconds the holder is dead, and the waiter takes generation g+1. A holder that finds a newer
generation has lost the step and must not publish a result (``Lease.lost``).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from .store import Store

logger = logging.getLogger(__name__)

LEASES = "leases"
DEFAULT_TTL_S = 60.0
TTL_VARIABLE = "OLMO_TANGO_LEASE_SECONDS"


def lease_ttl() -> float:
    """Seconds without a heartbeat after which a lease is taken over (``OLMO_TANGO_LEASE_SECONDS``)."""
    text = os.environ.get(TTL_VARIABLE)
    if text is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(text)
    except ValueError:
        ttl = -1.0
    if ttl <= 0:
        raise ValueError(f"{TTL_VARIABLE}: expected a positive number of seconds, got {text!r}")
    return ttl


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(unique_id: str, generation: int) -> str:
    return f"{LEASES}/{unique_id}/{generation:08d}.json"


@dataclass
class Holder:
    """Who holds a lease, as written in its file."""

    run: str
    host: str
    pid: int
    since: str
    beat: int = 0
    released: bool = False

    def describe(self) -> str:
        return f"run {self.run} on {self.host} since {self.since}"


@dataclass
class Lease:
    """A lease this process holds; ``lost`` once another run has taken the step over."""

    store: Store
    unique_id: str
    generation: int
    holder: Holder
    interval_s: float
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return _key(self.unique_id, self.generation)

    def _superseded(self) -> bool:
        return self.store.exists(_key(self.unique_id, self.generation + 1))

    def _write(self) -> None:
        self.store.write_json(self.key, self.holder.__dict__)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._superseded():
                self.lost = True
                logger.error("lost the lease on %s: another run took the step over", self.unique_id)
                return
            self.holder.beat += 1
            try:
                self._write()
            except OSError as exc:  # a missed beat is retried; the lease survives until ttl
                logger.warning("heartbeat of %s failed: %s", self.unique_id, exc)

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.unique_id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released, so a waiting run goes on at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost and not self._superseded():
            self.holder.released = True
            self._write()


def leased_ids(store: Store) -> set[str]:
    """The fingerprints of the steps that have lease files (taken now or before), from one listing."""
    return {key.split("/")[1] for key in store.list(f"{LEASES}/") if key.count("/") == 2}


def latest_lease(store: Store, unique_id: str) -> tuple[int, Holder | None]:
    """The newest generation of a step's lease and its holder ((0, None) when no run ever took it)."""
    keys = store.list(f"{LEASES}/{unique_id}/")
    generations = sorted(int(key.rsplit("/", 1)[1].split(".")[0]) for key in keys if key.endswith(".json"))
    if not generations:
        return 0, None
    key = _key(unique_id, generations[-1])
    data = store.read_json(key)
    try:
        return generations[-1], Holder(**data)
    except TypeError:
        raise ValueError(f"{store.url}/{key}: not a lease record") from None


class Leases:
    """Takes and watches the leases of steps in a workspace's store."""

    def __init__(self, store: Store, run_name: Callable[[], str], ttl_s: float | None = None):
        self.store = store
        self.run_name = run_name
        self.ttl_s = lease_ttl() if ttl_s is None else ttl_s

    def _try_create(self, unique_id: str, generation: int) -> Lease | None:
        holder = Holder(run=self.run_name(), host=socket.gethostname(), pid=os.getpid(), since=_now())
        data = json.dumps(holder.__dict__).encode()
        if not self.store.create(_key(unique_id, generation), data):
            return None
        lease = Lease(self.store, unique_id, generation, holder, interval_s=self.ttl_s / 4)
        lease.start_heartbeat()
        return lease

    def acquire(self, unique_id: str, label: str, done: Callable[[], bool]) -> Lease | None:
        """Take the lease of step ``unique_id``, waiting while a live run holds it.

        Returns None when ``done()`` becomes true first (the holder finished the step). ``label`` names
        the step in messages, e.g. ``step "pretrain" (PretrainOlmo-003-…)``.
        """
        poll_s = min(2.0, self.ttl_s / 8)
        watched: tuple[int, int] | None = None  # (generation, beat) last seen
        unchanged_since = time.monotonic()
        announced: int | None = None  # the generation whose holder was last named
        while True:
            if done():
                return None
            generation, holder = latest_lease(self.store, unique_id)
            free = holder is None or holder.released
            if not free:
                seen = (generation, holder.beat)
                if seen != watched:
                    watched, unchanged_since = seen, time.monotonic()
                silent_s = time.monotonic() - unchanged_since
                if silent_s >= self.ttl_s:
                    logger.warning(
                        "taking over %s from %s: no heartbeat for %.0f s", label, holder.describe(), silent_s
                    )
                    free = True
                elif announced != generation:
                    logger.info("waiting for %s: held by %s", label, holder.describe())
                    announced = generation
            if free:
                lease = self._try_create(unique_id, generation + 1)
                if lease is not None:
                    if done():  # finished between our look and our create
                        lease.release()
                        return None
                    return lease
                continue  # another run won that generation: look again
            time.sleep(poll_s)
