"""Workspace benchmark: ``olmo-tango workspace sync`` against a plain copy of the same files to S3, and a fully
cached ``tango run`` on an S3 workspace against the same run on local disk.

``python benchmarks/workspace.py [--quick]`` computes a workflow (``workflows/olmo-tiny.jsonnet``; olmo-micro with
``--quick``) into a local workspace, starts a loopback S3 server (moto, ``tests/s3_server.py``: every request
crosses HTTP on 127.0.0.1 and lands in one moto process) and measures:

1. Cached runs. ``olmo-tango workspace sync LOCAL s3://bench/workspace`` copies the workspace into the bucket;
   then, for each of the local and the S3 workspace, ``tango run WORKFLOW -w <workspace>`` twice: first with an
   empty ``OLMO_TANGO_CACHE`` (the machine's cache of verified results), then with the same cache again. Every
   run must start no step (its log has no "Starting step" line; cached steps log "Found output"). A fully cached
   run reads no result, it only asks whether each exists, so this also times reading every step's result through
   the workspace with an empty cache (from S3: the download and the sha256 check; locally: the sha256 check),
   then again with the same cache (the marks of a verified result: a few ``stat`` calls): what a run that needs
   those results does first. The local and the S3 side alternate which goes first over rounds.
2. Copy throughput. The local workspace's ``results/`` tree is copied to a fresh prefix of the bucket by ours,
   :func:`~integrations.workspace.commands.sync` (what ``olmo-tango workspace sync LOCAL s3://...`` runs after
   parsing its arguments; it also copies the step infos and run records), twice: "ours" with this machine's marks
   of verified results in place (made by an untimed first sync: a workspace this machine computed or verified,
   whose files are not hashed again), and "ours, unverified" with an empty cache of marks (every file's sha256
   checked against the result's listing before it is copied); and by two plain copies, the peers: s3fs's
   ``put(local_dir, remote, recursive=True)`` and boto3's ``upload_file`` (default ``TransferConfig``) over a pool
   of ``PEER_WORKERS`` threads, as ``aws s3 sync`` copies. All in this process, in alternating order over rounds;
   each copy is checked complete (every file, every size) and deleted after its round. MB/s (10^6 bytes of the
   ``results/`` tree per second) from each side's median round.

The headline is part 2: ours against the faster peer (ratio > 1: ours is faster); part 1's figures are extra
keys (``cached_ratio``: local seconds over S3 seconds, first runs; the issue's goal is S3 at most 2x local,
i.e. ``cached_ratio`` >= 0.5). It appends the figures to ``benchmarks/RESULTS.md`` (its "workspace" section),
prints a short table, and prints one JSON line, last. :func:`ours_only` runs this project's side (both ways of
syncing) alone, untimed, on a made-up workspace of any size (the smoke test's toy run).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

# benchmarks/ must not be first on the import path (a module here could shadow another): take it off and import
# the other benchmarks as the ``benchmarks`` package.
BENCHMARKS_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCHMARKS_DIR]
sys.path.insert(0, str(BENCHMARKS_DIR.parent))

import boto3  # noqa: E402
import s3fs  # noqa: E402

from benchmarks.corpus import REPO, append_results, log, machine, work_directory  # noqa: E402
from integrations.workspace import OlmoWorkspace  # noqa: E402
from integrations.workspace.commands import sync  # noqa: E402
from integrations.workspace.results import LISTING, RESULTS, make_listing  # noqa: E402
from integrations.workspace.workspace import CACHE_VARIABLE  # noqa: E402
from tests.s3_server import s3_server  # noqa: E402

WORKFLOWS = {"full": "workflows/olmo-tiny.jsonnet", "quick": "workflows/olmo-micro.jsonnet"}
ROUNDS = {"full": 3, "quick": 1}
TANGO = REPO / ".venv" / "bin" / "tango"
OLMO_TANGO = REPO / ".venv" / "bin" / "olmo-tango"
BUCKET = "bench"
PEER_WORKERS = 10  # files in flight at once: the AWS CLI's default max_concurrent_requests
CACHED_TARGET = 2.0  # the goal: a cached run on S3 takes at most this times the local one
SYNC_TARGET = 1.0  # the goal: sync at least as fast as a plain copy
WHERE = ("local", "s3")
MEASURES = ("run", "run_warm", "read", "read_warm")  # "run": the first run (empty cache); "read": every result
MEASURE_KEYS = {"run": "cached_{where}_s", "run_warm": "cached_{where}_warm_s", "read": "read_{where}_s",
                "read_warm": "read_{where}_warm_s"}  # in the JSON line
MB = 1e6

Copy = Callable[[Path, str], None]  # copy a local workspace's results/ to a URL (s3://bucket/prefix)


# ---------------------------------------------------------------------------------------------- part 1


@dataclass
class TangoRun:
    seconds: float
    started: int  # steps the run computed: its "Starting step" lines
    found: int  # "Found output" lines: a cached result, once per step that needs it


def tango_run(workflow: str, workspace: str, cache: Path, log_file: Path) -> TangoRun:
    """``tango run workflow -w workspace`` from the repository root with ``cache`` as ``OLMO_TANGO_CACHE``; fails
    with the tail of its output."""
    start = time.perf_counter()
    result = subprocess.run([str(TANGO), "run", workflow, "-w", workspace], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, CACHE_VARIABLE: str(cache)})
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(output)
    if result.returncode != 0:
        raise RuntimeError(f"tango run {workflow} -w {workspace} failed ({result.returncode}); see {log_file}:\n"
                           + "\n".join(output.splitlines()[-25:]))
    lines = output.splitlines()
    return TangoRun(seconds, sum("Starting step" in line for line in lines),
                    sum("Found output" in line for line in lines))


def cli_sync(source: str, destination: str, log_file: Path) -> tuple[float, str]:
    """``olmo-tango workspace sync source destination``: its wall seconds (start-up included) and summary line."""
    start = time.perf_counter()
    result = subprocess.run([str(OLMO_TANGO), "workspace", "sync", source, destination], cwd=REPO,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"olmo-tango workspace sync failed ({result.returncode}); see {log_file}:\n"
                           + "\n".join(result.stderr.splitlines()[-25:]))
    return seconds, result.stdout.strip().splitlines()[-1]


@contextmanager
def cache_variable(cache: Path) -> Iterator[None]:
    """``OLMO_TANGO_CACHE`` set to ``cache`` in this process while the block runs."""
    saved = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = str(cache)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(CACHE_VARIABLE, None)
        else:
            os.environ[CACHE_VARIABLE] = saved


def workflow_steps(workflow: str) -> list[Any]:
    """The steps of ``workflow`` whose results a workspace stores (``tango.Step`` objects)."""
    from tango import StepGraph
    from tango.common.util import import_module_and_submodules

    import_module_and_submodules("steps")  # registers every step type a workflow may name
    return [step for step in StepGraph.from_file(str(REPO / workflow)).values() if step.cache_results]


def read_every_result(steps: list[Any], workspace: str, cache: Path) -> float:
    """Seconds to read every step's result from ``workspace`` through the step's own format, with ``cache`` as
    this machine's cache (a remote result is downloaded and checked unless ``cache`` holds it already)."""
    with cache_variable(cache):
        step_cache = OlmoWorkspace(workspace).step_cache
        start = time.perf_counter()
        for step in steps:
            step_cache[step]
        return time.perf_counter() - start


def tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def measure_where(workflow: str, steps: list[Any], workspace: str, work: Path, tag: str) -> dict[str, Any]:
    """One round on one workspace: two cached runs (empty cache, then the same cache) and two reads of every
    result (another empty cache, then the same); seconds of each, the runs' step counts, and the bytes of
    results the first run left in its cache (what it downloaded)."""
    run_cache, read_cache = work / "caches" / f"{tag}-run", work / "caches" / f"{tag}-read"
    first = tango_run(workflow, workspace, run_cache, work / "logs" / f"{tag}-run.log")
    downloaded = tree_bytes(run_cache / RESULTS) if (run_cache / RESULTS).is_dir() else 0
    again = tango_run(workflow, workspace, run_cache, work / "logs" / f"{tag}-run-warm.log")
    return {
        "run": first.seconds, "run_warm": again.seconds, "started": first.started + again.started,
        "found": first.found, "downloaded": downloaded,
        "read": read_every_result(steps, workspace, read_cache),
        "read_warm": read_every_result(steps, workspace, read_cache),
    }


def cached_rounds(workflow: str, workspaces: dict[str, str], work: Path, rounds: int) -> dict[str, list[dict]]:
    """:func:`measure_where` on each workspace once per round, the local one first on even rounds."""
    steps = workflow_steps(workflow)
    measured: dict[str, list[dict]] = {where: [] for where in workspaces}
    for round_index in range(rounds):
        for where in WHERE if round_index % 2 == 0 else WHERE[::-1]:
            log(f"cached runs, round {round_index + 1}/{rounds}: {where}")
            measured[where].append(measure_where(workflow, steps, workspaces[where], work,
                                                 f"{round_index}-{where}"))
    return measured


# ---------------------------------------------------------------------------------------------- part 2


def copy_ours(local: Path, url: str) -> None:
    """This project's sync of a local workspace to ``url``, as ``olmo-tango workspace sync`` runs it."""
    report = sync(str(local), url, progress=False)
    if report.refused or report.warnings:
        raise RuntimeError(f"sync {local} {url}: {report.refused + report.warnings}")


def copy_ours_unverified(local: Path, url: str) -> None:
    """Ours on a machine that has verified none of the results: every file is hashed before it is copied."""
    with tempfile.TemporaryDirectory(prefix="olmo-cache-") as cache, cache_variable(Path(cache)):
        copy_ours(local, url)


def copy_s3fs(local: Path, url: str) -> None:
    """The peer: s3fs's recursive ``put`` of ``results/``, defaults."""
    s3fs.S3FileSystem(skip_instance_cache=True).put(str(local / RESULTS), f"{url}/{RESULTS}", recursive=True)


def copy_boto3(local: Path, url: str) -> None:
    """The peer: boto3's ``upload_file`` (default ``TransferConfig``) of every file of ``results/``, ``PEER_WORKERS``
    at once."""
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3")
    keys = {path: f"{prefix}/{path.relative_to(local).as_posix()}"
            for path in sorted((local / RESULTS).rglob("*")) if path.is_file()}
    with ThreadPoolExecutor(PEER_WORKERS) as pool:
        list(pool.map(lambda path: client.upload_file(str(path), bucket, keys[path]), keys))


SIDES: dict[str, Copy] = {"ours": copy_ours, "ours-unverified": copy_ours_unverified, "s3fs": copy_s3fs,
                          "boto3": copy_boto3}
SIDE_TITLES = {"ours": "ours: `sync` (`olmo-tango workspace sync`)",
               "ours-unverified": "ours, no verified marks: every file hashed", "s3fs": "s3fs `put(..., recursive=True)`",
               "boto3": f"boto3 `upload_file`, {PEER_WORKERS} threads"}


def local_tree(local: Path) -> dict[str, int]:
    """``results/<path>`` -> size of every file of a local workspace's results."""
    return {path.relative_to(local).as_posix(): path.stat().st_size
            for path in (local / RESULTS).rglob("*") if path.is_file()}


def remote_tree(url: str) -> dict[str, int]:
    """``results/<path>`` -> size of every file under ``url/results``."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    return {path[len(root) + 1:]: info["size"] for path, info in fs.find(f"{root}/{RESULTS}", detail=True).items()}


def copy_rounds(local: Path, bucket: str, rounds: int, sides: dict[str, Copy] = SIDES) -> dict[str, list[float]]:
    """Every side copies the results of ``local`` to its own fresh prefix of ``bucket`` once per round, in
    alternating order; each copy is checked complete, then deleted. Seconds per side and round."""
    expected = local_tree(local)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            log(f"copies, round {round_index + 1}/{rounds}: {name}")
            url = f"{bucket}/copy-{round_index}-{name}"
            start = time.perf_counter()
            sides[name](local, url)
            seconds[name].append(time.perf_counter() - start)
            if remote_tree(url) != expected:
                raise RuntimeError(f"{name}: {url}/{RESULTS} does not hold exactly the files of {local / RESULTS}")
            s3fs.S3FileSystem(skip_instance_cache=True).rm(url.removeprefix("s3://"), recursive=True)
    return seconds


# ---------------------------------------------------------------------------------------------- toy run


def toy_workspace(directory: Path, results: int, files: int, file_bytes: int, seed: int = 0) -> Path:
    """A workspace at ``directory`` holding ``results`` made-up results of ``files`` random files each, every
    one listed as the workspace lists the results it writes."""
    OlmoWorkspace(str(directory))  # marks the layout
    rng = random.Random(seed)
    for index in range(results):
        unique_id = f"ToyStep-001-{index:04d}"
        result = directory / RESULTS / unique_id
        (result / "data").mkdir(parents=True)
        for number in range(files):
            (result / "data" / f"part-{number}.bin").write_bytes(rng.randbytes(file_bytes))
        (result / LISTING).write_text(json.dumps(make_listing(result, unique_id, "ToyStep"), indent=2))
    return directory


def ours_only(work: Path, results: int = 3, files: int = 2, file_bytes: int = 1 << 16) -> dict[str, Any]:
    """This project's side alone, untimed, on a made-up workspace (:func:`toy_workspace`) and a loopback S3
    server: ``olmo-tango workspace sync`` into the bucket (as part 1 runs it) and :func:`copy_ours` to another
    prefix (as part 2 does), each checked to hold every file. Returns the files, bytes and the command's line."""
    local = toy_workspace(work / "local", results, files, file_bytes)
    with s3_server() as server:
        bucket = server.bucket()
        _, line = cli_sync(str(local), f"{bucket}/workspace", work / "logs" / "sync.log")
        copy_ours(local, f"{bucket}/copy")
        expected = local_tree(local)
        for prefix in ("workspace", "copy"):
            if remote_tree(f"{bucket}/{prefix}") != expected:
                raise RuntimeError(f"{bucket}/{prefix}/{RESULTS} does not hold exactly the files of {local / RESULTS}")
    return {"files": len(expected), "bytes": sum(expected.values()), "cli": line}


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    workflow: str
    rounds: int
    files: int
    size: int  # bytes of the local workspace's results/
    results: int  # result directories
    compute: TangoRun | None  # None: an existing local workspace was used
    cli_sync: tuple[float, str]
    cached: dict[str, list[dict]]
    copies: dict[str, list[float]]
    machine: dict[str, Any]
    load: tuple[float, float]
    date: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"))

    def cached_median(self, where: str, measure: str) -> float:
        return statistics.median(entry[measure] for entry in self.cached[where])

    def mb_per_s(self, side: str) -> float:
        return self.size / MB / statistics.median(self.copies[side])

    def best_peer(self) -> str:
        return max((name for name in self.copies if not name.startswith("ours")), key=self.mb_per_s)

    def started(self) -> int:
        return sum(entry["started"] for entries in self.cached.values() for entry in entries)

    def figures(self) -> dict[str, Any]:
        """The JSON line: part 2 as the headline, part 1 in the ``cached_*`` and ``read_*`` keys (medians, s)."""
        ours, peer = self.mb_per_s("ours"), self.mb_per_s(self.best_peer())
        cached = {MEASURE_KEYS[measure].format(where=where): round(self.cached_median(where, measure), 2)
                  for where in WHERE for measure in MEASURES}
        return {
            "benchmark": "workspace", "unit": "MB/s", "ours": round(ours, 2), "peer": round(peer, 2),
            "ratio": round(ours / peer, 3), "peer_tool": self.best_peer(),
            "peers": {name: round(self.mb_per_s(name), 2) for name in self.copies if not name.startswith("ours")},
            "ours_unverified": round(self.mb_per_s("ours-unverified"), 2),
            "ratio_unverified": round(self.mb_per_s("ours-unverified") / peer, 3),
            "sync_target_met": ours / peer >= SYNC_TARGET,
            **cached,
            "cached_ratio": round(self.cached_median("local", "run") / self.cached_median("s3", "run"), 3),
            "cached_ratio_warm": round(self.cached_median("local", "run_warm") / self.cached_median("s3", "run_warm"),
                                       3),
            "cached_target_met": self.cached_median("s3", "run") <= CACHED_TARGET * self.cached_median("local", "run"),
            "steps_started": self.started(),
            "downloaded_by_cached_runs": sum(e["downloaded"] for e in self.cached["s3"]),
            "cli_sync_s": round(self.cli_sync[0], 2),
            "workflow": self.workflow, "results": self.results, "files": self.files, "bytes": self.size,
            "rounds": self.rounds,
        }

    def table(self) -> str:
        """The short human table printed before the JSON line."""
        lines = [f"cached `tango run {self.workflow}` (median of {self.rounds}; {self.started()} steps started):",
                 f"  {'workspace':<10}{'1st run s':>11}{'2nd run s':>11}{'read all s':>12}{'read again s':>14}"]
        for where in WHERE:
            lines.append(f"  {where:<10}" + "".join(f"{self.cached_median(where, m):>{w}.2f}"
                                                    for m, w in zip(MEASURES, (11, 11, 12, 14))))
        lines += [f"copying results/ ({self.files} files, {self.size / MB:.1f} MB) to S3 (median of {self.rounds}):"]
        lines += [f"  {name:<10}{self.mb_per_s(name):>8.1f} MB/s  {statistics.median(seconds):>6.2f} s"
                  for name, seconds in self.copies.items()]
        return "\n".join(lines)

    def results_block(self, command: str) -> str:
        """The RESULTS.md entry."""
        m, f = self.machine, self.figures()
        peer = self.best_peer()
        compute = (f"computed by `tango run {self.workflow}` in {self.compute.seconds:.0f} s "
                   f"({self.compute.started} steps started)" if self.compute else "an existing local workspace")
        lines = [
            f"### {self.date}: `{command}`",
            "",
            f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, s3fs {s3fs.__version__}, boto3 "
            f"{boto3.__version__}; load average {self.load[0]:.2f} before, {self.load[1]:.2f} after. S3: a loopback "
            f"moto server on the same cores. Workspace: `{self.workflow}`, {compute}: {self.results} results, "
            f"{self.files} files, {self.size / MB:.1f} MB under `results/`. `olmo-tango workspace sync` of it into the "
            f"bucket: {self.cli_sync[0]:.1f} s wall, start-up included (\"{self.cli_sync[1]}\"). {self.rounds} "
            f"round{'s, the sides alternating; medians' if self.rounds > 1 else ''}.",
            "",
            "| fully cached `tango run` | first run, empty cache (s) | second run (s) | read every result, empty "
            "cache (s) | read again (s) |",
            "|---|---:|---:|---:|---:|",
        ]
        for where in WHERE:
            lines.append(f"| {where} | " + " | ".join(f"{self.cached_median(where, m):.2f}" for m in MEASURES) + " |")
        lines += [
            "",
            f"Steps started by the {2 * self.rounds * len(WHERE)} cached runs: {self.started()}. Result bytes the "
            f"first S3 runs downloaded into their empty caches: {f['downloaded_by_cached_runs']:,} (a fully cached "
            "run only asks whether each result exists; reading them is the \"read\" columns: download + sha256 "
            f"from S3, sha256 locally). Local / S3, first runs: {f['cached_ratio']:.2f} (S3 "
            f"{1 / f['cached_ratio']:.2f}x local; goal ≤ {CACHED_TARGET:g}x: "
            f"{'met' if f['cached_target_met'] else 'NOT met'}); second runs: {f['cached_ratio_warm']:.2f}.",
            "",
            "| copy of `results/` to a fresh prefix | MB/s | median s | rounds s |",
            "|---|---:|---:|---:|",
        ]
        for name, seconds in self.copies.items():
            lines.append(f"| {SIDE_TITLES[name]} | {self.mb_per_s(name):.1f} | {statistics.median(seconds):.2f} | "
                         + ", ".join(f"{s:.2f}" for s in seconds) + " |")
        lines += [
            "",
            f"ours / the faster peer ({peer}): {f['ratio']:.2f}x (goal ≥ {SYNC_TARGET:g}x: "
            f"{'met' if f['sync_target_met'] else 'NOT met'}); unverified: {f['ratio_unverified']:.2f}x. Ours checks "
            "every result against its listing (through this machine's marks of the results it verified: \"ours\" "
            "hashes nothing again, \"unverified\" hashes every file) and copies the step infos and run records; the "
            "peers copy `results/` only.",
            "",
        ]
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="olmo-micro and 1 round, not olmo-tiny and 3")
    parser.add_argument("--local", type=Path, help="an existing local workspace holding the workflow's results "
                                                    "(skips computing it)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    workflow, rounds = WORKFLOWS[mode], ROUNDS[mode]
    command = " ".join(["python benchmarks/workspace.py", *sys.argv[1:]])

    with work_directory("workspace-bench-", args.keep) as work:
        load_before = os.getloadavg()[0]
        if args.local:
            local, compute = args.local.absolute(), None
        else:
            local = work / "local"
            log(f"computing {workflow} into {local}")
            compute = tango_run(workflow, str(local), work / "caches" / "compute", work / "logs" / "compute.log")
        with s3_server() as server:
            bucket = server.bucket(BUCKET)
            log(f"olmo-tango workspace sync {local} {bucket}/workspace")
            synced = cli_sync(str(local), f"{bucket}/workspace", work / "logs" / "cli-sync.log")
            cached = cached_rounds(workflow, {"local": str(local), "s3": f"{bucket}/workspace"}, work, rounds)
            with cache_variable(work / "caches" / "copies"):  # "ours": marks made by an untimed first sync
                copy_ours(local, f"{bucket}/warm-up")
                copies = copy_rounds(local, bucket, rounds)
        tree = local_tree(local)
        report = Report(
            workflow=workflow, rounds=rounds, files=len(tree), size=sum(tree.values()),
            results=len({path.split("/")[1] for path in tree}), compute=compute, cli_sync=synced, cached=cached,
            copies=copies, machine=machine(), load=(load_before, os.getloadavg()[0]),
        )
    append_results("workspace", report.results_block(command))
    print(report.table())
    print(json.dumps(report.figures()))


if __name__ == "__main__":
    main()
