"""``olmo-tango``: questions about the training data of a workspace, the extra nodes of a training job, and
the workspace's results (list, verify, copy between workspaces, collect garbage).

  olmo-tango batch WORKFLOW --step K [K ...] [--world-size W] [--micro-batch-size M] [-w WORKSPACE]
                   [--json | --output FILE]
  olmo-tango batch -w WORKSPACE --instances UNIQUE_ID --seed S --batch-size B --step K ...
  olmo-tango seen WORKFLOW --document DOC_ID [--epochs N] [-w WORKSPACE] [--json | --output FILE]
  olmo-tango global-indices WORKFLOW --to FILE [--epoch E] [-w WORKSPACE]
  olmo-tango train-node WORKFLOW --step pretrain [-w WORKSPACE] [--wait SECONDS]
  olmo-tango workspace ls [-w WORKSPACE] [--json]
  olmo-tango workspace verify [-w WORKSPACE]
  olmo-tango workspace sync SRC DST [--workflow WORKFLOW]
  olmo-tango workspace gc [-w WORKSPACE] [--keep-workflow WORKFLOW ...] (--dry-run | --yes)
  olmo-tango run WORKFLOW [tango run options]      (from any directory: see integrations.tango_cli)

The logic is in :mod:`steps.commands.regenerate`, :mod:`steps.commands.train_node` and
:mod:`integrations.workspace.commands`; this module parses arguments and prints answers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from tango import StepGraph
from tango.common.exceptions import ConfigurationError
from tango.common.util import import_module_and_submodules

from integrations.launcher import WorkerFailure
from integrations.workspace import OlmoWorkspace, WorkspaceError
from integrations.workspace.commands import (
    CommandError,
    collect_garbage,
    human_size,
    list_results,
    sync,
    verify_results,
)
from integrations.workspace.results import IntegrityError

from steps.commands.regenerate import (
    DataPlan,
    RegenerationError,
    export_global_indices,
    format_batch,
    format_global_indices,
    format_seen,
    logged_batches,
    open_workspace,
    plan_from_workflow,
    plan_from_workspace,
    regenerate_batch,
    steps_seeing,
)
from steps.commands.train_node import JoinError, join_training


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", nargs="?", help="the workflow (Jsonnet) whose pretrain step's data is asked about")
    parser.add_argument(
        "-w", "--workspace", help="workspace path or URL (default: the one tango.yml in the current directory names)"
    )
    alone = parser.add_argument_group("without a workflow (all three needed)")
    alone.add_argument("--instances", help="unique id (or a unique part of it) of a computed build_instances step")
    alone.add_argument("--seed", type=_at_least(0), help="the data order's seed")
    alone.add_argument("--batch-size", type=_at_least(1), help="the global batch size, in instances")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    output.add_argument("--output", type=Path, help="write the whole answer as JSON to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="olmo-tango", description="Questions about the training data of a workspace; extra training nodes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser(
        "batch",
        help="the exact token ids, rank micro-batches and documents of one training batch, and its logged hash",
    )
    _add_plan_arguments(batch)
    batch.add_argument(
        "--step",
        type=_at_least(0),
        nargs="+",
        required=True,
        help="data step(s): a batch's index in the data order, from 0 (pretrain's optimizer step s trains data "
        "step s-1); with several, one answer each (one JSON object per line)",
    )
    batch.add_argument(
        "--world-size", type=_at_least(1), help="ranks to split the batch over (default: the workflow's, else 1)"
    )
    batch.add_argument(
        "--micro-batch-size",
        type=_at_least(1),
        help="instances per micro-batch (default: the workflow pretrain's, else a rank's whole share of the batch)",
    )
    batch.set_defaults(answers=_batches, describe=format_batch)
    seen = commands.add_parser("seen", help="the data steps (and epochs) whose batches hold a token of a document")
    _add_plan_arguments(seen)
    seen.add_argument("--document", required=True, help="the document id")
    seen.add_argument(
        "--epochs", type=_at_least(1), help="epochs to search (default: those the workflow's training touches)"
    )
    seen.set_defaults(answers=_seen, describe=format_seen)
    export = commands.add_parser(
        "global-indices", help="write one epoch of the data order as OLMo's global_indices.npy (raw uint32)"
    )
    _add_plan_arguments(export)
    export.add_argument("--epoch", type=_at_least(0), default=0, help="the epoch (default 0)")
    export.add_argument("--to", type=Path, required=True, help="the file to write")
    export.set_defaults(answers=_global_indices, describe=format_global_indices)
    node = commands.add_parser(
        "train-node",
        help="start this node's workers of a multi-node pretrain/anneal step whose first node runs `tango run`",
    )
    node.add_argument("workflow", help="the workflow the first node runs")
    node.add_argument("--step", required=True, help="the training step's name (pretrain or anneal)")
    node.add_argument("-w", "--workspace", help="the shared workspace (default: the one tango.yml names)")
    node.add_argument(
        "--wait", type=_at_least(0), default=3600, help="seconds to wait for the step's inputs to appear (default 3600)"
    )
    _add_workspace_commands(commands)
    commands.add_parser(
        "run", add_help=False,
        help="`tango run WORKFLOW [options]` with this repository's tango.yml and workspace, from any directory",
    )
    return parser


def _add_workspace_commands(commands: Any) -> None:
    workspace = commands.add_parser(
        "workspace", help="the results of a workspace: list, verify, copy between workspaces, collect garbage"
    )
    actions = workspace.add_subparsers(dest="workspace_command", required=True)
    where = {"help": "workspace path or URL (default: the one tango.yml in the current directory names)"}
    ls = actions.add_parser(
        "ls", help="one row per result: step name(s), fingerprint, size, the runs that computed and used it"
    )
    ls.add_argument("-w", "--workspace", **where)
    ls.add_argument("--json", action="store_true", help="one JSON object per result and line")
    verify = actions.add_parser("verify", help="check every result's files against its listing (sha256 and size)")
    verify.add_argument("-w", "--workspace", **where)
    copy = actions.add_parser(
        "sync",
        help="copy the results DST lacks from SRC (verified on the way), with their step infos and SRC's run "
        "records DST lacks; SRC may be a directory written by Tango's LocalWorkspace (imported, nothing unpickled)",
    )
    copy.add_argument("source", metavar="SRC", help="the workspace to copy from (path or URL)")
    copy.add_argument("destination", metavar="DST", help="the workspace to copy to (path or URL; made if absent)")
    copy.add_argument("--workflow", help="copy only the results of this workflow's steps (Jsonnet)")
    gc = actions.add_parser(
        "gc", help="delete the results no run record refers to (as target or computed) and no kept workflow's step"
    )
    gc.add_argument("-w", "--workspace", **where)
    gc.add_argument(
        "--keep-workflow", action="append", default=[], metavar="WORKFLOW",
        help="keep the results of this workflow's steps too (repeatable)",
    )
    mode = gc.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="list what would be deleted, with sizes")
    mode.add_argument("--yes", action="store_true", help="delete them")


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DataPlan:
    alone = {"--instances": args.instances, "--seed": args.seed, "--batch-size": args.batch_size}
    given = [name for name, value in alone.items() if value is not None]
    world_size = getattr(args, "world_size", None)
    micro_batch_size = getattr(args, "micro_batch_size", None)
    if args.workflow is not None:
        if given:
            parser.error(f"give either WORKFLOW or {', '.join(alone)}, not both (got {', '.join(given)})")
        return plan_from_workflow(args.workflow, open_workspace(args.workspace), world_size, micro_batch_size)
    if len(given) < len(alone):
        missing = [name for name in alone if name not in given]
        parser.error(f"without WORKFLOW, {', '.join(alone)} are needed (missing {', '.join(missing)})")
    return plan_from_workspace(
        open_workspace(args.workspace), args.instances, args.seed, args.batch_size, world_size or 1, micro_batch_size
    )


def _batches(plan: DataPlan, args: argparse.Namespace) -> list[dict[str, Any]]:
    logged = logged_batches(plan)
    return [regenerate_batch(plan, step, logged) for step in args.step]


def _seen(plan: DataPlan, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [steps_seeing(plan, args.document, args.epochs)]


def _global_indices(plan: DataPlan, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [export_global_indices(plan, args.epoch, args.to)]


def _train_node(args: argparse.Namespace) -> int:
    try:
        join_training(args.workflow, args.step, open_workspace(args.workspace), args.wait)
    except (RegenerationError, JoinError, ConfigurationError, WorkerFailure, OSError) as exc:
        print(f"olmo-tango train-node: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _workflow_fingerprints(workflows: Sequence[str]) -> set[str]:
    """The unique ids of every step of the workflows' step graphs, dependencies included."""
    import_module_and_submodules("steps")  # registers every step type a workflow may name
    fingerprints: set[str] = set()
    for workflow in workflows:
        if not Path(workflow).is_file():
            raise CommandError(f"{workflow}: no such workflow file")
        try:
            graph = StepGraph.from_file(workflow)
        except (ConfigurationError, RuntimeError, ImportError, KeyError, TypeError) as exc:  # jsonnet, Tango, types
            raise CommandError(f"{workflow}: cannot load the workflow ({type(exc).__name__}: {exc})") from None
        for step in graph.values():
            fingerprints |= {step.unique_id, *(dependency.unique_id for dependency in step.recursive_dependencies)}
    return fingerprints


def _open_store(location: str | None):
    workspace = open_workspace(location)
    if not isinstance(workspace, OlmoWorkspace):
        raise CommandError(f"workspace {workspace.url}: a {type(workspace).__name__}, not this project's (type: olmo)")
    return workspace.store


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _workspace_ls(args: argparse.Namespace) -> int:
    rows, problems = list_results(_open_store(args.workspace))
    for problem in problems:
        print(f"olmo-tango workspace ls: warning: {problem}", file=sys.stderr)
    if args.json:
        print("".join(json.dumps(row) + "\n" for row in rows), end="")
        return 0
    table = [["STEP", "FINGERPRINT", "SIZE", "COMPUTED BY", "USED BY"]] + [
        [",".join(row["step_names"]) or "-", row["fingerprint"], human_size(row["size"]),
         ",".join(row["computed_by"]) or "-", ",".join(row["used_by"]) or "-"]
        for row in rows
    ]
    print(_table(table))
    print(f"{len(rows)} results, {human_size(sum(row['size'] or 0 for row in rows))}")
    return 0


def _workspace_verify(args: argparse.Namespace) -> int:
    report = verify_results(_open_store(args.workspace))
    for unique_id in report.incomplete:
        print(f"olmo-tango workspace verify: note: results/{unique_id}: no listing yet (being written, or an "
              "interrupted write); not checked", file=sys.stderr)
    for problem in report.problems:
        print(f"olmo-tango workspace verify: error: {problem}", file=sys.stderr)
    if report.problems:
        checked = f"{len(report.problems)} problem(s); {report.results} results checked"
        print(f"olmo-tango workspace verify: error: {checked}", file=sys.stderr)
        return 1
    print(f"{report.results} results verified, {report.files} files, {human_size(report.size)}")
    return 0


def _workspace_sync(args: argparse.Namespace) -> int:
    only = None if args.workflow is None else _workflow_fingerprints([args.workflow])
    report = sync(args.source, args.destination, only)
    for warning in report.warnings:
        print(f"olmo-tango workspace sync: warning: {warning}", file=sys.stderr)
    for problem in report.refused:
        print(f"olmo-tango workspace sync: error: {problem}; result not copied", file=sys.stderr)
    if report.tango:
        line = (f"imported {len(report.copied)} results from Tango LocalWorkspace {args.source}; "
                f"skipped {len(report.skipped)} (not artifact directories)")
        if report.already:
            line += f"; {len(report.already)} already there"
    else:
        rate = report.size / 1e6 / report.seconds if report.seconds > 0 else 0.0
        line = (f"copied {len(report.copied)} results ({human_size(report.size)}) in {report.seconds:.1f} s "
                f"({rate:.1f} MB/s); {len(report.already)} already there")
    print(line)
    return 1 if report.refused else 0


def _workspace_gc(args: argparse.Namespace) -> int:
    keep = _workflow_fingerprints(args.keep_workflow) if args.keep_workflow else set()
    garbage = collect_garbage(_open_store(args.workspace), keep, delete=args.yes)
    if args.dry_run and garbage.results:
        print(_table([[row["fingerprint"], ",".join(row["step_names"]) or "-", human_size(row["size"])]
                      for row in garbage.results]))
    held = f"; kept {len(garbage.held)} a run holds the lease of" if garbage.held else ""
    if args.dry_run:
        print(f"{len(garbage.results)} results ({human_size(garbage.size)}) would be deleted{held}; "
              "run with --yes to delete them")
    else:
        print(f"deleted {len(garbage.results)} results ({human_size(garbage.size)}){held}")
    return 0


WORKSPACE_COMMANDS = {"ls": _workspace_ls, "verify": _workspace_verify, "sync": _workspace_sync, "gc": _workspace_gc}


def _workspace(args: argparse.Namespace) -> int:
    try:
        return WORKSPACE_COMMANDS[args.workspace_command](args)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as ls and friends do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, WorkspaceError, IntegrityError, RegenerationError, ConfigurationError, ValueError,
            OSError) as exc:
        print(f"olmo-tango workspace {args.workspace_command}: error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # every option after it is Tango's
        from integrations.tango_cli import run

        return run(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train-node":
        return _train_node(args)
    if args.command == "workspace":
        return _workspace(args)
    try:
        answers = args.answers(_plan(args, parser), args)
    except (RegenerationError, ConfigurationError, ValueError, OSError) as exc:
        print(f"olmo-tango {args.command}: error: {exc}", file=sys.stderr)
        return 1
    json_lines = "".join(json.dumps(answer) + "\n" for answer in answers)
    if args.output is not None:
        args.output.write_text(json_lines)
    if args.json:
        print(json_lines, end="")
    else:
        print("\n\n".join(args.describe(answer) for answer in answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
