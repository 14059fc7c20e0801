"""Questions about the training data asked of a workspace: the logic behind ``olmo-tango batch`` and ``seen``.

A question is asked of a :class:`DataPlan`: the instances step (found through a workflow's ``pretrain``
step, or by its unique id in a workspace), the data order settings and how ranks split a batch. A batch
is rebuilt by running the ``training_batch`` step in the workspace (so it is cached like any step) and
compared with the hash the trainer logged for that data step: every completed ``pretrain`` or
``anneal`` step in the workspace that read the same instances in the same data order is consulted.
Data steps count global batches of the data order from 0 (pretrain's optimizer step ``s`` trains data
step ``s - 1``; an anneal continues where its pretraining stopped).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlparse

from tango import Step, StepGraph
from tango.common.util import import_module_and_submodules
from tango.settings import TangoGlobalSettings
from tango.step_info import StepInfo, StepState
from tango.workspace import StepInfoSort, Workspace

from steps.data.batches import BATCH_FILE, check_batch_split, steps_seeing_document
from steps.data.instances import load_instances
from steps.data.order import DataOrder, DataOrderConfig, order_for
from steps.data.steps import BuildInstances, TrainingBatch
from steps.train.steps import AnnealOlmo, PretrainOlmo
from steps.train.worker import METRICS_FILE

TRAINING_STEPS = (PretrainOlmo.__name__, AnnealOlmo.__name__)


class RegenerationError(Exception):
    """A question that cannot be answered as asked; the message says why and what to do."""


@dataclass(frozen=True)
class DataPlan:
    """What a question about training batches needs.

    ``planned_data_steps``: how many data steps the workflow's training (pretrain + anneal) takes;
    0 when the plan comes from a workspace alone.
    """

    workspace: Workspace
    instances: Step
    data_order: dict[str, int]
    world_size: int
    micro_batch_size: int
    planned_data_steps: int = 0

    @property
    def batch_size(self) -> int:
        return self.data_order["global_batch_size"]

    def order(self) -> DataOrder:
        """The training order of the plan's instances."""
        return order_for(self.workspace.step_cache[self.instances], DataOrderConfig.from_dict(self.data_order))


def open_workspace(location: str | None) -> Workspace:
    """The workspace at a path or URL; without one, the workspace ``tango.yml`` in the current
    directory names (as ``tango run`` finds it). A local workspace must already exist."""
    if location is None:
        settings = TangoGlobalSettings.default().workspace
        if settings is None:
            raise RegenerationError("no workspace: pass -w/--workspace, or run where a tango.yml names one")
        return Workspace.from_params(dict(settings))
    parsed = urlparse(location)
    if parsed.scheme in ("", "local", "file") and not Path(parsed.netloc + parsed.path).is_dir():
        raise RegenerationError(f"workspace {location}: no such directory")
    return Workspace.from_url(location)


def plan_from_workflow(
    workflow: str | Path, workspace: Workspace, world_size: int | None = None, micro_batch_size: int | None = None
) -> DataPlan:
    """The plan of a workflow's ``pretrain`` step: its instances, data order, world size and micro-batch
    size (the last two unless given). Its instances must already be computed in ``workspace``."""
    if not Path(workflow).is_file():
        raise RegenerationError(f"{workflow}: no such workflow file")
    import_module_and_submodules("steps")  # registers every step type a workflow may name
    graph = StepGraph.from_file(workflow)
    pretrain = _only_pretrain_step(graph, workflow)
    instances = pretrain.kwargs["instances"]
    if instances not in workspace.step_cache:
        raise RegenerationError(
            f"step {instances.name!r} ({instances.unique_id}) of {workflow} is not computed in workspace "
            f"{workspace.url}: run `tango run {workflow}` (with the same workspace) first"
        )
    anneals = [s for s in graph.values() if isinstance(s, AnnealOlmo) and s.kwargs["pretrained"] == pretrain]
    planned = sum(s.kwargs["train"].max_steps for s in [pretrain, *anneals])
    return _checked_plan(
        workspace,
        instances,
        pretrain.kwargs["data_order"].to_dict(),
        pretrain.kwargs["execution"].world_size if world_size is None else world_size,
        pretrain.kwargs["train"].micro_batch_size if micro_batch_size is None else micro_batch_size,
        planned,
    )


def _only_pretrain_step(graph: StepGraph, workflow: str | Path) -> Step:
    found = [step for step in graph.values() if isinstance(step, PretrainOlmo)]
    if len(found) != 1:
        raise RegenerationError(f"{workflow}: expected one step of type 'pretrain', found {len(found)}")
    return found[0]


def plan_from_workspace(
    workspace: Workspace,
    instances: str,
    seed: int,
    batch_size: int,
    world_size: int = 1,
    micro_batch_size: int | None = None,
) -> DataPlan:
    """The plan for a computed ``build_instances`` step named by its unique id (or any unique part of it),
    a data order seed and batch size. ``micro_batch_size`` defaults to a rank's whole share of a batch."""
    step = _computed_step(_find_instances(workspace, instances))
    if micro_batch_size is None:
        micro_batch_size = max(1, batch_size // world_size)
    # Keys in the order Jsonnet writes them, so the fingerprint matches the workflow's.
    return _checked_plan(workspace, step, {"global_batch_size": batch_size, "seed": seed}, world_size, micro_batch_size)


def _find_instances(workspace: Workspace, text: str) -> StepInfo:
    computed = {
        info.unique_id: info
        for info in workspace.search_step_info(match=text, state=StepState.COMPLETED)
        if info.step_class_name == BuildInstances.__name__ and info in workspace.step_cache
    }
    if text in computed:
        return computed[text]
    if len(computed) == 1:
        return next(iter(computed.values()))
    if computed:
        raise RegenerationError(f"--instances {text!r} matches several computed instances steps: {sorted(computed)}")
    known = sorted(
        info.unique_id
        for info in workspace.search_step_info(state=StepState.COMPLETED)
        if info.step_class_name == BuildInstances.__name__
    )
    raise RegenerationError(
        f"workspace {workspace.url}: no computed build_instances step matches {text!r}; "
        f"computed ones: {known or 'none'}"
    )


def _computed_step(info: StepInfo) -> Step:
    """The computed instances step as a step object: built from its recorded configuration, its inputs left
    out (it is never run again), and pinned to its unique id, so that a training_batch step reading it has the
    same fingerprint as one reading the instances step of the workflow that computed it."""
    if info.config is None:
        raise RegenerationError(f"{info.unique_id}: the workspace has no record of its configuration")
    arguments = {
        key: None if isinstance(value, dict) and value.get("type") == "ref" else value
        for key, value in info.config.items()
        if key != "type"
    }
    return BuildInstances(step_name=info.step_name, step_unique_id_override=info.unique_id, **arguments)


def _checked_plan(
    workspace: Workspace,
    instances: Step,
    data_order: dict[str, int],
    world_size: int,
    micro_batch_size: int,
    planned_data_steps: int = 0,
) -> DataPlan:
    batch_size = data_order["global_batch_size"]
    num_instances = workspace.step_cache[instances].summary["num_instances"]
    if batch_size > num_instances:
        raise RegenerationError(
            f"global batch size {batch_size} exceeds the {num_instances} instances of {instances.unique_id}"
        )
    try:
        check_batch_split(batch_size, world_size, micro_batch_size)
    except ValueError as exc:
        raise RegenerationError(str(exc)) from None
    return DataPlan(workspace, instances, data_order, world_size, micro_batch_size, planned_data_steps)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file."""
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise RegenerationError(f"{path}:{line_number}: expected a JSON object with an integer 'step'")
        rows.append(row)
    return rows


def logged_data_steps(rows: Iterable[dict[str, Any]], continued_from: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(data step, row)`` of every metrics row that logged a batch hash. A row's ``data_step`` wins;
    without it, optimizer step ``s`` of a run that started at data step ``continued_from`` trained data
    step ``continued_from + s - 1``."""
    for row in rows:
        if "batch_hash" in row:
            yield row.get("data_step", continued_from + row["step"] - 1), row


def logged_batches(plan: DataPlan) -> dict[int, list[dict[str, Any]]]:
    """By data step, what every completed training run of the plan's instances and data order logged,
    oldest run first: step name, unique id, optimizer step, batch hash (and per-rank hashes if logged)."""
    found: dict[int, list[dict[str, Any]]] = {}
    runs = plan.workspace.search_step_info(
        sort_by=StepInfoSort.START_TIME, sort_descending=False, state=StepState.COMPLETED
    )
    for info in runs:
        if (
            info.step_class_name not in TRAINING_STEPS
            or plan.instances.unique_id not in info.dependencies
            or (info.config or {}).get("data_order") != plan.data_order
            or info not in plan.workspace.step_cache
        ):
            continue
        artifact = plan.workspace.step_cache[info]
        rows = read_metrics(artifact.path / METRICS_FILE)
        for data_step, row in logged_data_steps(rows, artifact.summary.get("continued_from_data_step", 0)):
            entry = {
                "by": info.step_name, "unique_id": info.unique_id, "step": row["step"], "batch_hash": row["batch_hash"]
            }
            if "rank_batch_hashes" in row:
                entry["rank_batch_hashes"] = row["rank_batch_hashes"]
            found.setdefault(data_step, []).append(entry)
    return found


def regenerate_batch(
    plan: DataPlan, step: int, logged: dict[int, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """Global batch ``step`` of the plan, rebuilt by the ``training_batch`` step in the plan's workspace:
    instances, token ids, per-rank micro-batches, documents and hash, next to the hash the trainer
    logged for that data step (``logged_batch_hash``, ``logged_by``, ``matches``; null when no run did).
    ``logged``: :func:`logged_batches` of the plan, when the caller has it already."""
    batch_step = TrainingBatch(
        step_name="training_batch",
        instances=plan.instances,
        data_order=plan.data_order,
        step=step,
        micro_batch_size=plan.micro_batch_size,
        world_size=plan.world_size,
    )
    artifact = batch_step.result(plan.workspace)
    batch = json.loads((artifact.path / BATCH_FILE).read_text())
    runs = (logged_batches(plan) if logged is None else logged).get(step, [])
    # Per-rank hashes compare only with a run that split the batch over as many ranks.
    rank_hashes = next(
        (run["rank_batch_hashes"] for run in runs if len(run.get("rank_batch_hashes", ())) == plan.world_size), None
    )
    if rank_hashes is not None:
        for rank in batch["ranks"]:
            rank["logged_batch_hash"] = rank_hashes[rank["rank"]]
    return {
        **batch,
        "training_batch": batch_step.unique_id,
        "instances_step": plan.instances.unique_id,
        "data_order": plan.data_order,
        "logged_batch_hash": runs[0]["batch_hash"] if runs else None,
        "logged_by": runs[0]["by"] if runs else None,
        "matches": all(run["batch_hash"] == batch["batch_hash"] for run in runs) if runs else None,
        "logged": runs,
    }


def steps_seeing(plan: DataPlan, document: str, epochs: int | None = None) -> dict[str, Any]:
    """Every ``(epoch, data step)`` whose global batch holds a token of ``document``, in the first
    ``epochs`` epochs (default: those the workflow's training and the logged runs touch), each with
    ``trained_by``: what the first run in the workspace that trained on it logged (null if none did)."""
    artifact = plan.workspace.step_cache[plan.instances]
    order = plan.order()
    index, root = load_instances(artifact)
    logged = logged_batches(plan)
    if epochs is None:
        data_steps = max(plan.planned_data_steps, max(logged, default=-1) + 1)
        epochs = order.batch_epoch(data_steps - 1, plan.batch_size) + 1 if data_steps else 1
    try:
        instances = index.document_instances(root, document)
    except KeyError as exc:
        raise RegenerationError(f"{exc.args[0]} ({plan.instances.unique_id})") from None
    seen = steps_seeing_document(root, index, order, document, plan.batch_size, epochs)
    return {
        "document": document,
        "instances": instances,
        "instances_step": plan.instances.unique_id,
        "data_order": plan.data_order,
        "epochs": epochs,
        "batches_per_epoch": order.batches_per_epoch(plan.batch_size),
        "seen": [
            {"epoch": epoch, "step": step, "trained_by": logged[step][0] if step in logged else None}
            for epoch, step in seen
        ],
    }


def export_global_indices(plan: DataPlan, epoch: int, path: Path) -> dict[str, Any]:
    """Write epoch ``epoch`` of the plan's data order as OLMo's ``global_indices.npy`` (raw uint32)."""
    order = plan.order()
    order.export_global_indices(path, epoch)
    return {
        "path": str(path),
        "epoch": epoch,
        "instances": order.num_instances,
        "instances_step": plan.instances.unique_id,
        "data_order": plan.data_order,
        "batches_per_epoch": order.batches_per_epoch(plan.batch_size),
    }


def format_global_indices(answer: dict[str, Any]) -> str:
    return (
        f"wrote {answer['path']}: epoch {answer['epoch']} of the order of {answer['instances']} instances "
        f"(raw uint32, OLMo's global_indices.npy layout; batch k = indices[k*{answer['data_order']['global_batch_size']}"
        f":(k+1)*{answer['data_order']['global_batch_size']}])"
    )


def format_batch(batch: dict[str, Any], max_documents: int = 8) -> str:
    """A short human-readable account of :func:`regenerate_batch`'s answer."""
    lines = [
        f"data step {batch['step']} (epoch {batch['epoch']}): {batch['batch_size']} instances x "
        f"{batch['seq_len']} tokens of {batch['instances_step']}, seed {batch['data_order']['seed']}",
        f"  batch hash   {batch['batch_hash']}",
    ]
    if batch["logged"]:
        verdict = "matches" if batch["matches"] else "DIFFERS"
        runs = ", ".join(f"{entry['by']} step {entry['step']}" for entry in batch["logged"])
        lines.append(f"  logged hash  {batch['logged_batch_hash']} by {runs}: {verdict}")
    else:
        lines.append("  logged hash  none: no completed training run in the workspace trained this data step")
    for rank in batch["ranks"]:
        micro = " ".join(str(m) for m in rank["micro_batches"])
        rank_hash = f"  hash {rank['batch_hash']}" if "batch_hash" in rank else ""
        if "logged_batch_hash" in rank:
            rank_hash += f" (logged: {'matches' if rank['logged_batch_hash'] == rank['batch_hash'] else 'DIFFERS'})"
        lines.append(f"  rank {rank['rank']}: micro-batches {micro}{rank_hash}")
    documents = [(entry, doc) for entry in batch["documents"] for doc in entry["documents"]]
    lines.append(f"  documents ({len(documents)} pieces in {len(batch['documents'])} instances):")
    for entry, doc in documents[:max_documents]:
        first, last = doc["in_instance"]
        source = doc.get("source") or "source unknown"
        lines.append(
            f"    instance {entry['instance']} [{first}, {last}): {doc['id']!r} ({source}, {doc['src']} line "
            f"{doc['loc']}), tokens [{doc['start']}, {doc['end']}) of {entry['file']}"
        )
    if len(documents) > max_documents:
        lines.append(f"    ... {len(documents) - max_documents} more (--json for all, with the token ids)")
    return "\n".join(lines)


def format_seen(answer: dict[str, Any]) -> str:
    """A short human-readable account of :func:`steps_seeing`'s answer."""
    lines = [
        f"document {answer['document']!r} (instances {answer['instances']}) in the first {answer['epochs']} "
        f"epoch(s) of {answer['instances_step']}, batch size {answer['data_order']['global_batch_size']}, "
        f"seed {answer['data_order']['seed']}:"
    ]
    for seen in answer["seen"]:
        run = seen["trained_by"]
        trained = f"trained by {run['by']} (step {run['step']})" if run else "not trained"
        lines.append(f"  epoch {seen['epoch']}  data step {seen['step']}  {trained}")
    if not answer["seen"]:
        lines.append("  in no batch of these epochs")
    return "\n".join(lines)
