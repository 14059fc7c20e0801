"""Weights & Biases logging: offline by default, one W&B run per Tango step.

A step's run (``step_run``) has the step's fingerprint (Tango's ``unique_id``) as its id, is named
``<workflow>/<step>`` and grouped by workflow, and its config is the step's whole configuration: every
argument, JSON-able, each input step by its fingerprint, and Tango's own facts under ``tango``.

Offline runs touch no network: they are written under ``<directory>/wandb/offline-run-<time>-<run id>``
(``wandb leet inspect --summary <that directory>`` shows one) and can be uploaded later with
``wandb sync --append <directory>/wandb/offline-run-*`` (``--append`` merges the directories a resumed run
left, all sharing one run id, into one W&B run).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import wandb

MODES = ("offline", "online", "disabled")
# The keys of the ``execution.wandb`` setting. ``workflow``: the workflow's name (the recipe's ``name``, set by
# workflows/lib/olmo.libsonnet): runs are named ``<workflow>/<step>`` and grouped by it.
SETTINGS = ("project", "entity", "mode", "workflow")


def resolve_mode(mode: str | None) -> str:
    """``mode`` if given, else the ``WANDB_MODE`` environment variable, else ``"offline"``; checked."""
    source, value = ("mode", mode) if mode is not None else ("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))
    if value not in MODES:
        raise ValueError(f"W&B {source}: expected one of {list(MODES)}, got {value!r}")
    return value


def check_settings(settings: Any, where: str = "wandb") -> None:
    """Reject a malformed ``execution.wandb`` setting (before anything runs), naming the key."""
    if settings is None:
        return
    if not isinstance(settings, Mapping):
        raise ValueError(f"{where}: expected null or {{project: ..., ...}}, got {settings!r}")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(SETTINGS)}")
    for key in SETTINGS:
        value = settings.get(key)
        if (key == "project" or value is not None) and not (isinstance(value, str) and value):
            raise ValueError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    if settings.get("mode") is not None:
        resolve_mode(settings["mode"])


def jsonable(value: Any) -> Any:
    """``value`` as JSON W&B can show: a Tango step (an input) as its fingerprint, paths as strings,
    dataclasses and other mappings as dicts, sequences as lists, anything else by its ``repr``."""
    from tango import Step

    if isinstance(value, Step):
        return value.unique_id
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(item) for item in items]
    return repr(value)


def step_config(step: Any, workflow: str | None = None) -> dict[str, Any]:
    """A Tango step's configuration as a W&B run config: its arguments (``step.kwargs``, inputs by
    fingerprint) and, under ``tango``, its name, fingerprint, class, version and workflow."""
    tango = {"step": step.name, "fingerprint": step.unique_id, "class": type(step).__name__,
             "version": getattr(step, "VERSION", None), "workflow": workflow}
    return {**jsonable(dict(step.kwargs)), "tango": tango}


def step_run(step: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``WandbLogger`` arguments of the W&B run of a Tango ``step`` (inside its ``run``) under the
    ``execution.wandb`` ``settings``: id the fingerprint, name ``<workflow>/<step>``, group the workflow,
    config ``step_config``, files in the step's work directory."""
    check_settings(settings)
    workflow = settings.get("workflow")
    return {
        "project": settings["project"],
        "entity": settings.get("entity"),
        "mode": settings.get("mode"),
        "run_id": step.unique_id,
        "name": f"{workflow}/{step.name}" if workflow else step.name,
        "group": workflow,
        "directory": str(step.work_dir),
        "config": step_config(step, workflow),
    }


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined with ``/`` (``tasks/boolq/primary``)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class WandbLogger:
    """A W&B run that a step's metrics are logged to (in distributed training: on rank 0 only).

    ``run_id`` should be the Tango step's ``unique_id``: a resumed step then continues the same W&B
    run (online: ``resume="allow"``; W&B keeps the first value of a step logged twice, as the steps
    after the last checkpoint are; offline: a new directory with the same run id, see the module
    docstring). ``mode`` is ``"offline"`` unless given or set in ``WANDB_MODE``; ``"disabled"`` logs
    nothing. wandb's capture of the console is turned off, so progress lines and Tango's log are left
    alone.
    """

    def __init__(
        self,
        project: str,
        run_id: str,
        config: Mapping[str, Any],
        directory: str | Path,
        *,
        name: str | None = None,
        group: str | None = None,
        entity: str | None = None,
        mode: str | None = None,
    ) -> None:
        self.mode = resolve_mode(mode)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.mode != "online":
            # The process-wide mode too: with only the run offline, wandb (0.31) still sends its own telemetry to the
            # W&B server (WANDB_BASE_URL). An offline or disabled run touches no network.
            wandb.setup(settings=wandb.Settings(mode=self.mode))
        self.run = wandb.init(
            project=project,
            entity=entity,
            id=run_id,
            name=name,
            group=group,
            config=dict(config),
            dir=directory,
            mode=self.mode,
            resume="allow" if self.mode == "online" else None,  # wandb ignores it offline, with a warning
            settings=wandb.Settings(console="off", reinit="create_new"),
        )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the numbers of ``metrics`` at ``step``; strings (``batch_hash``) go to the run summary.

        Booleans are logged as 0/1; other values (lists such as ``rank_batch_hashes``) are skipped.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"WandbLogger.log: expected a step that is an integer >= 0, got {step!r}")
        numbers = {
            key: int(value) if isinstance(value, bool) else value
            for key, value in metrics.items()
            if isinstance(value, (int, float))
        }
        self.run.log(numbers, step=step)
        for key, value in metrics.items():
            if isinstance(value, str):
                self.run.summary[key] = value

    def summarize(self, metrics: Mapping[str, Any]) -> None:
        """Put the numbers and strings of ``metrics`` (nested mappings flattened with ``/``) in the run summary:
        the results of a step that has no per-step history (an evaluation)."""
        for key, value in flatten(metrics).items():
            if isinstance(value, (bool, int, float, str)):
                self.run.summary[key] = int(value) if isinstance(value, bool) else value

    def finish(self, exit_code: int = 0) -> None:
        """End the run; a non-zero ``exit_code`` marks it failed.

        wandb's service completes the run's files shortly after this returns, at the latest when the
        process exits.
        """
        self.run.finish(exit_code=exit_code)

    def __enter__(self) -> WandbLogger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.finish(exit_code=0 if kind is None else 1)
