"""Weights & Biases logging of training metrics: offline by default, one W&B run per Tango step.

Offline runs touch no network: they are written under ``<directory>/wandb/offline-run-<time>-<run id>``
and can be uploaded later with ``wandb sync --append <directory>/wandb/offline-run-*`` (``--append``
merges the directories a resumed run left, all sharing one run id, into one W&B run).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import wandb

MODES = ("offline", "online", "disabled")


def resolve_mode(mode: str | None) -> str:
    """``mode`` if given, else the ``WANDB_MODE`` environment variable, else ``"offline"``; checked."""
    source, value = ("mode", mode) if mode is not None else ("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))
    if value not in MODES:
        raise ValueError(f"W&B {source}: expected one of {list(MODES)}, got {value!r}")
    return value


class WandbLogger:
    """A W&B run that training metrics are logged to (call it on rank 0 only).

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
        mode: str | None = None,
    ) -> None:
        self.mode = resolve_mode(mode)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            id=run_id,
            name=name,
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
