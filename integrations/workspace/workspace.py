"""``OlmoWorkspace``: Tango's workspace for this project, on a local path or any fsspec URL.

Layout under the workspace URL (nothing in it depends on where it lives, so ``cp -a``, ``rsync`` or a
bucket copy of it is the same workspace)::

    olmo-workspace.json              marks the layout
    results/<unique id>/             a step's result (see ``results``), complete once result.json exists
    steps/<unique id>.json           Tango's StepInfo of the step, as JSON
    runs/<run name>.json             a run: its target steps, and the steps it computed itself
    runs/<run name>.log              the run's log
    leases/<unique id>/<gen>.json    who computes the step (see ``leases``)
    work/<unique id>/                a step's work directory (checkpoints), for local workspaces

A workspace in an object store keeps work directories and verified copies of results in a local cache
(``$OLMO_TANGO_CACHE``, default ``~/.cache/olmo-tango``). Everything read back is JSON or a verified
result read by the step's own format: nothing from a workspace is unpickled or executed.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar
from urllib.parse import ParseResult

import petname
from tango.common.exceptions import StepStateError
from tango.common.logging import file_handler
from tango.step import Step
from tango.step_info import StepInfo, StepState
from tango.workspace import Run, StepInfoSort, Workspace

from .leases import Lease, Leases
from .results import VERIFIED, IntegrityError, ResultCache, VerifiedMarks, check_safe_format
from .store import Store

logger = logging.getLogger(__name__)
T = TypeVar("T")

MARKER = "olmo-workspace.json"
LAYOUT = 1
STEPS = "steps"
RUNS = "runs"
WORK = "work"
CACHE_VARIABLE = "OLMO_TANGO_CACHE"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class WorkspaceError(RuntimeError):
    """A workspace that cannot be used as it is (another layout, a name already taken, ...)."""


def local_cache_root() -> Path:
    """This machine's cache of verified results and work directories of remote workspaces."""
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "olmo-tango").absolute()


def verified_marks() -> VerifiedMarks:
    """This machine's marks of the result directories it has verified (``local_cache_root()/verified``)."""
    return VerifiedMarks(local_cache_root() / VERIFIED)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def refuse_tango_local_workspace(store: Store) -> None:
    """Stop with how to import it when ``store`` holds a workspace written by Tango's LocalWorkspace."""
    if store.exists(MARKER) or not store.exists("stepinfo.sqlite"):
        return
    raise WorkspaceError(
        f"{store.url} is a workspace written by Tango's LocalWorkspace (its stepinfo.sqlite is pickled, "
        f"which this project never reads); import its results with "
        f"`olmo-tango workspace sync {store.url} NEW_WORKSPACE` and use NEW_WORKSPACE"
    )


@Workspace.register("olmo")
class OlmoWorkspace(Workspace):
    """Step info, runs and leases as JSON; results as verified directories; any fsspec URL."""

    def __init__(self, url: str = "workspace"):
        super().__init__()
        self.store = Store(url)
        refuse_tango_local_workspace(self.store)
        self.store.create(MARKER, f'{{"layout": {LAYOUT}}}\n'.encode())
        self.local_root = local_cache_root()
        self.cache = ResultCache(self.store, self.local_root)
        self.run_name = f"unregistered-{socket.gethostname()}-{os.getpid()}"  # until register_run
        self._registered = False
        self.leases = Leases(self.store, run_name=lambda: self.run_name)
        self._held: dict[str, Lease] = {}
        self._computed: dict[str, str] = {}

    # ------------------------------------------------------------------ where it is

    @property
    def url(self) -> str:
        return self.store.url

    @classmethod
    def from_parsed_url(cls, parsed_url: ParseResult) -> OlmoWorkspace:
        if parsed_url.scheme in ("", "local"):
            return cls(parsed_url.netloc + parsed_url.path)
        return cls(parsed_url.geturl())

    @property
    def step_cache(self) -> ResultCache:
        return self.cache

    def work_dir(self, step: Step) -> Path:
        root = self.store.local_path(WORK) if self.store.is_local else self.local_root / WORK
        directory = root / step.unique_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    # ------------------------------------------------------------------ step info

    def _info_key(self, unique_id: str) -> str:
        return f"{STEPS}/{unique_id}.json"

    def _read_info(self, unique_id: str) -> StepInfo | None:
        key = self._info_key(unique_id)
        try:
            data = self.store.read_json(key)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None
        try:
            info = StepInfo.from_json_dict(data)
        except Exception as exc:  # from_params reports bad records many ways
            raise IntegrityError(f"{self.store.url}/{key}: not a step info record ({exc})") from None
        if info.unique_id != unique_id:
            raise IntegrityError(f"{self.store.url}/{key}: describes {info.unique_id!r}, expected {unique_id!r}")
        return info

    def _write_info(self, info: StepInfo) -> None:
        self.store.write_json(self._info_key(info.unique_id), info.to_json_dict())

    def step_info(self, step_or_unique_id: Step | str) -> StepInfo:
        step = step_or_unique_id if isinstance(step_or_unique_id, Step) else None
        unique_id = step.unique_id if step is not None else str(step_or_unique_id)
        info = self._read_info(unique_id)
        if info is None:
            if step is None:
                raise KeyError(f"no step {unique_id!r} in workspace {self.url}")
            info = StepInfo.new_from_step(step)
        info.result_location = self.cache.url(unique_id) if self.cache.exists(unique_id) else None
        return info

    def search_step_info(
        self,
        *,
        sort_by: StepInfoSort | None = None,
        sort_descending: bool = True,
        match: str | None = None,
        state: StepState | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> list[StepInfo]:
        """Every step recorded in the workspace (not only runs' targets), filtered and sorted as Tango's."""
        unique_ids = [key[len(STEPS) + 1 : -len(".json")] for key in self.store.list(f"{STEPS}/")]
        infos = [
            info
            for info in map(self.step_info, unique_ids)
            if (match is None or match in info.unique_id) and (state is None or info.state == state)
        ]
        if sort_by == StepInfoSort.START_TIME:
            oldest = datetime.min.replace(tzinfo=timezone.utc)
            infos.sort(key=lambda info: info.start_time or oldest, reverse=sort_descending)
        elif sort_by == StepInfoSort.UNIQUE_ID:
            infos.sort(key=lambda info: info.unique_id, reverse=sort_descending)
        elif sort_by is not None:
            raise NotImplementedError(f"sorting step info by {sort_by}")
        return infos[start:stop]

    # ------------------------------------------------------------------ running a step

    def step_starting(self, step: Step) -> None:
        if not step.cache_results:
            return
        check_safe_format(step.FORMAT, step.class_name)
        label = f'step "{step.name}" ({step.unique_id})'
        lease = self.leases.acquire(step.unique_id, label, done=lambda: self.cache.exists(step.unique_id))
        if lease is None:
            raise StepStateError(step, StepState.COMPLETED)  # computed by another run meanwhile
        self._held[step.unique_id] = lease
        info = StepInfo.new_from_step(step, start_time=_now())
        self._write_info(info)

    def step_finished(self, step: Step, result: T) -> T:
        if not step.cache_results:
            return result
        lease = self._held.pop(step.unique_id)
        try:
            if lease.lost:
                raise StepStateError(step, StepState.RUNNING, context="another run took the step over")
            self.cache[step] = result
            info = self.step_info(step)
            info.end_time = _now()
            self._write_info(info)
            self._computed[step.name] = step.unique_id
            self._save_run_record()
        finally:
            lease.release()
        return self.cache[step]

    def step_failed(self, step: Step, e: BaseException) -> None:
        if not step.cache_results or step.unique_id not in self._held:
            return
        lease = self._held.pop(step.unique_id)
        try:
            info = self.step_info(step)
            info.end_time = _now()
            info.error = f"{type(e).__name__}: {e}"
            if not lease.lost:
                self._write_info(info)
        finally:
            lease.release()

    def remove_step(self, step_unique_id: str) -> None:
        info = self.step_info(step_unique_id)
        del self.cache[info]
        self.store.delete(self._info_key(step_unique_id))

    # ------------------------------------------------------------------ runs

    def _run_key(self, name: str) -> str:
        return f"{RUNS}/{name}.json"

    def register_run(self, targets: Iterable[Step], name: str | None = None) -> Run:
        targets = list(targets)
        start = _now()
        record = {
            "start_date": start.strftime(DATE_FORMAT),
            "host": socket.gethostname(),
            "steps": {step.name: step.unique_id for step in targets},
            "computed": {},
        }
        infos = {step.name: StepInfo.new_from_step(step) for step in targets}
        with ThreadPoolExecutor(self.store.workers) as pool:  # a step info is written once, by the first run
            list(pool.map(lambda info: self.store.create(self._info_key(info.unique_id), _json_bytes(info.to_json_dict())),
                          infos.values()))
        while True:
            candidate = name or petname.generate()
            if self.store.create(self._run_key(candidate), _json_bytes({"name": candidate, **record})):
                break
            if name is not None:
                raise WorkspaceError(f"a run named {name!r} already exists in {self.url}")
        self.run_name, self._registered, self._computed = candidate, True, {}
        return Run(name=candidate, steps=infos, start_date=start)

    def _save_run_record(self) -> None:
        """Record the steps this run computed (steps run outside a registered run are not recorded)."""
        if not self._registered:
            return
        record = self.store.read_json(self._run_key(self.run_name))
        record["computed"] = dict(self._computed)
        self.store.write_json(self._run_key(self.run_name), record)

    def run_record(self, name: str) -> dict[str, Any]:
        """The JSON record of run ``name``: start date, host, target steps, steps it computed."""
        try:
            return self.store.read_json(self._run_key(name))
        except FileNotFoundError:
            raise KeyError(f"no run named {name!r} in {self.url}") from None
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None

    def registered_run(self, name: str) -> Run:
        record = self.run_record(name)
        start = datetime.strptime(record["start_date"], DATE_FORMAT).replace(tzinfo=timezone.utc)
        steps = {step_name: self.step_info(unique_id) for step_name, unique_id in record["steps"].items()}
        return Run(name=name, steps=steps, start_date=start)

    def run_names(self) -> list[str]:
        return [key[len(RUNS) + 1 : -len(".json")] for key in self.store.list(f"{RUNS}/") if key.endswith(".json")]

    def registered_runs(self) -> dict[str, Run]:
        return {name: self.registered_run(name) for name in self.run_names()}

    @contextmanager
    def _capture(self, name: str) -> Iterator[None]:
        if self.store.is_local:
            log = self.store.local_path(f"{RUNS}/{name}.log")
        else:
            log = self.local_root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with file_handler(log):
                yield
        finally:
            if not self.store.is_local:
                self.store.write_bytes(f"{RUNS}/{name}.log", log.read_bytes())

    def capture_logs_for_run(self, name: str):
        self.run_name = name
        return self._capture(name)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# Paths and these URL schemes (`tango run -w URL`) open this workspace. Tango's own workspaces register
# first (importing tango.workspaces), so that this registration replaces its "local" and is not replaced.
import tango.workspaces  # noqa: E402,F401

_registrable_log = logging.getLogger("tango.common.registrable")
_level = _registrable_log.level
_registrable_log.setLevel(logging.WARNING)  # replacing on purpose: not worth an INFO line in every run
for _scheme in ("local", "file", "s3", "gs", "gcs"):
    Workspace.register(_scheme, exist_ok=True)(OlmoWorkspace)
_registrable_log.setLevel(_level)
