"""``olmo-tango train-node``: the workers of one more node of a multi-node training step (pretrain, anneal,
SFT or DPO).

The first node runs ``tango run`` as usual; its training step starts its workers and waits at the
rendezvous (``execution.nnodes``, ``execution.rdzv_endpoint``). Every other node runs ``train-node`` on the
same workflow and shared workspace: it builds the same job from the same step (same fingerprint, so the same
rendezvous id, checkpoint directory and data order) once the step's inputs are in the workspace, and starts
its own workers. Rank 0, on the first node, writes checkpoints' metadata and the artifact.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tango import Step, StepGraph
from tango.common.util import import_module_and_submodules
from tango.workspace import Workspace

from steps.train.steps import TrainingStep

logger = logging.getLogger(__name__)


class JoinError(ValueError):
    """The step cannot be joined from another node (not a distributed training step, one node only...)."""


def _wait_for_result(workspace: Workspace, step: Step, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return workspace.step_cache[step]
        except KeyError:
            if time.monotonic() > deadline:
                raise JoinError(f"step {step.name!r} ({step.unique_id}) is not in the workspace after {timeout_s:.0f} s")
            time.sleep(5)


def join_training(workflow: str | Path, step_name: str, workspace: Workspace, wait_s: float = 3600) -> None:
    """Start this node's workers of ``step_name`` of ``workflow``; return when the job ends."""
    import_module_and_submodules("steps")
    graph = StepGraph.from_file(workflow)
    if step_name not in graph:
        raise JoinError(f"{workflow}: no step named {step_name!r}")
    step = graph[step_name]
    if not isinstance(step, TrainingStep):
        raise JoinError(f"step {step_name!r} is a {type(step).__name__}, not a training step")
    execution = step.kwargs["execution"]
    if execution.nnodes < 2:
        raise JoinError(f"step {step_name!r} runs on one node (execution.nnodes = {execution.nnodes})")
    arguments = {
        name: _wait_for_result(workspace, value, wait_s) if isinstance(value, Step) else value
        for name, value in step.kwargs.items()
    }
    step.work_dir_for_run = workspace.work_dir(step)
    job, _ = step.job(False, **arguments)
    logger.info("joining %s (%s) at %s", step_name, step.unique_id, execution.rdzv_endpoint)
    step.launch(job)
