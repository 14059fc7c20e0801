"""Corpus benchmark, engines: our tag + filter, dedup and mix stages on the Ray engine against the local engine.

``python benchmarks/corpus_ray.py [--quick]`` writes the corpus benchmark's seeded input (:mod:`corpus_input`:
20,000 documents, 4,000 with ``--quick``, in 8 shards over two sources) and runs each of our stages on it
(``corpus_ours.py pipeline``: tag + filter with Gopher, C4 and PII; URL + exact + paragraph dedup; mix at factor
1), one stage after the other in one process, as ``tango run`` runs steps, twice: on the local engine
(``--workers`` spawned processes, default 2) and on the Ray engine (one task per shard) on a cluster of as many
one-CPU nodes on this machine, on loopback (:mod:`integrations.ray_cluster`; its start and stop are not timed).
docs/s = documents / the stage's wall clock in that process (imports excluded): the Ray figures include
connecting to the cluster and its workers starting, the local ones the processes starting. Both engines must
write the same bytes (checked).
The goal: Ray's time at most 1.3 × the local engine's (on one machine it has nothing to gain). It appends its
figures to ``benchmarks/RESULTS.md`` ("corpus: engines") and prints one JSON line, last.
``python benchmarks/corpus.py --engine ray`` runs the same (:func:`compare_engines`).
"""
from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.corpus import (  # noqa: E402
    PROJECT_PYTHON, append_results, log, machine, ours_command, ours_options, parse_arguments, run, work_directory,
    write_input,
)
from integrations.ray_cluster import run_on_cluster  # noqa: E402

STAGES = {"filter": "tag + filter: Gopher, C4, PII", "dedup": "dedup: URL + exact + paragraph",
          "mix": "mix: pass-through"}
GOAL = 1.3  # Ray's time / the local engine's, at most
RAY_STAGES = "ray-stages"  # ``corpus_ray.py ray-stages WORK``: the Ray side, run inside the cluster


def output_digest(directory: Path) -> str:
    """One sha256 over every file below ``directory`` (relative paths and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def time_stages(work: Path, engine: str, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stages of ``corpus_ours.py`` on ``work/documents`` in one process (``pipeline``) with ``options`` (the
    engine's), outputs under ``work/<engine>``: each one's wall-clock seconds and its outputs' digest."""
    counts = json.loads((work / "counts.json").read_text())
    stages = {stage: {**ours_options(stage, 1, counts), **options} for stage in STAGES}
    measured = run(ours_command("pipeline", work / "documents", work / engine, stages),
                   work / "logs" / f"{engine}.log")
    timed = json.loads(measured.stdout.strip().splitlines()[-1])
    return {stage: {"seconds": timed[stage]["seconds"], "digest": output_digest(work / engine / stage)}
            for stage in STAGES}


def engine_comparison(work: Path, documents: Path, counts: dict[str, Any], workers: int = 2) -> dict[str, Any]:
    """Our stages on ``documents`` (the seeded input, ``counts`` as :func:`corpus.write_input` returns them) on
    the local engine with ``workers`` processes, then on the Ray engine on ``workers`` one-CPU nodes.
    Returns per stage and in all: seconds, docs/s of each engine and Ray's time over the local engine's."""
    if documents != work / "documents":
        (work / "documents").symlink_to(documents.resolve(), target_is_directory=True)
    (work / "counts.json").write_text(json.dumps(counts))
    num_documents = sum(counts["sources"].values())
    log(f"engines: local ({workers} processes)")
    local = time_stages(work, "local", {"workers": workers})
    log(f"engines: Ray ({workers} nodes)")
    cluster = run_on_cluster([str(PROJECT_PYTHON), __file__, RAY_STAGES, str(work)], nodes=workers,
                             cwd=BENCHMARKS.parent, capture_output=True, text=True)
    if cluster.returncode != 0:
        raise RuntimeError(f"the Ray side failed ({cluster.returncode}):\n{cluster.stderr[-3000:]}")
    ray = json.loads((work / "ray.json").read_text())
    result: dict[str, Any] = {"documents": num_documents, "workers": workers}
    for stage in [*STAGES, "total"]:
        seconds = {name: (sum(s["seconds"] for s in side.values()) if stage == "total" else side[stage]["seconds"])
                   for name, side in (("local", local), ("ray", ray))}
        result[stage] = {**{f"{name}_s": round(value, 2) for name, value in seconds.items()},
                         **{f"{name}_docs_per_s": round(num_documents / value, 1) for name, value in seconds.items()},
                         "ratio": round(seconds["ray"] / seconds["local"], 3)}
    result["same_output"] = all(local[stage]["digest"] == ray[stage]["digest"] for stage in STAGES)
    return result


def results_block(command: str, found: dict[str, Any], load: tuple[float, float]) -> str:
    m = machine()
    lines = [
        f"### {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}: `{command}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after. Input: {found['documents']} documents (corpus_input.py), 8 shards. Local engine: "
        f"{found['workers']} processes; Ray: {found['workers']} nodes of one CPU on this machine (loopback). "
        f"The stages run one after the other in one process per engine, as `tango run` runs steps; docs/s = documents / the stage's wall clock in that process (imports excluded, the engine's start included). Same output bytes: "
        f"{'yes' if found['same_output'] else 'NO'}. Goal: Ray time / local time ≤ {GOAL}.",
        "",
        "| stage | local docs/s | Ray docs/s | Ray time / local time | wall clock s: local | Ray |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, title in [*STAGES.items(), ("total", "all three")]:
        row = found[stage]
        lines.append(f"| {title} | {row['local_docs_per_s']} | {row['ray_docs_per_s']} | {row['ratio']:.2f} "
                     f"| {row['local_s']:.1f} | {row['ray_s']:.1f} |")
    return "\n".join(lines) + "\n"


def compare_engines(args: argparse.Namespace, num_documents: int, command: str) -> None:
    """The engine comparison on a fresh seeded input, appended to RESULTS.md; its JSON line printed last."""
    with work_directory("corpus-ray-bench-", args.keep) as work:
        documents, counts = write_input(work, num_documents, args.seed)
        load_before = os.getloadavg()[0]
        found = engine_comparison(work, documents, counts, args.workers)
        load = (load_before, os.getloadavg()[0])
    if not found["same_output"]:
        raise RuntimeError("the Ray engine wrote other bytes than the local engine")
    append_results("corpus: engines", results_block(command, found, load))
    print(json.dumps({"benchmark": "corpus_ray", "unit": "docs/s", "ours": found["total"]["ray_docs_per_s"],
                      "peer": found["total"]["local_docs_per_s"], "ratio": round(1 / found["total"]["ratio"], 3),
                      "goal_met": found["total"]["ratio"] <= GOAL, **found}))


def main() -> None:
    compare_engines(*parse_arguments("corpus_ray.py", __doc__.split("\n\n")[0]))


if __name__ == "__main__":
    if sys.argv[1:2] == [RAY_STAGES]:
        work = Path(sys.argv[2])
        side = time_stages(work, "ray", {"ray": os.environ["RAY_ADDRESS"]})  # set by the cluster
        (work / "ray.json").write_text(json.dumps(side))
    else:
        main()
