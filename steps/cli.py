"""``olmo-tango``: questions about the training data of a workspace, and the extra nodes of a training job.

  olmo-tango batch WORKFLOW --step K [K ...] [--world-size W] [--micro-batch-size M] [-w WORKSPACE]
                   [--json | --output FILE]
  olmo-tango batch -w WORKSPACE --instances UNIQUE_ID --seed S --batch-size B --step K ...
  olmo-tango seen WORKFLOW --document DOC_ID [--epochs N] [-w WORKSPACE] [--json | --output FILE]
  olmo-tango global-indices WORKFLOW --to FILE [--epoch E] [-w WORKSPACE]
  olmo-tango train-node WORKFLOW --step pretrain [-w WORKSPACE] [--wait SECONDS]

The logic is in :mod:`steps.data.regenerate` and :mod:`steps.train.join`; this module parses arguments
and prints answers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from tango.common.exceptions import ConfigurationError

from integrations.launcher import WorkerFailure

from steps.data.regenerate import (
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
from steps.train.join import JoinError, join_training


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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train-node":
        return _train_node(args)
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
