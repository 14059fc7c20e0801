"""Per-core throughput of each corpus stage, and what it means for Dolma v1.5 on a cluster (docs/scale.md).

``python benchmarks/corpus_scale.py [--quick] [--nodes 8 32 128] [--cores 64]`` writes the corpus benchmark's
seeded input (:mod:`corpus_input`, 20,000 documents; 4,000 with ``--quick``), runs every stage of the OLMo
recipe's corpus pipeline on it in this one process (tag with every tagger on its default sources, filter with
the default rules, dedup URL + exact + paragraph, mix at factor 1, tokenize with OLMo's tokenizer), and measures
for each the CPU seconds it used (user + system, this process: one core), the bytes it read and wrote
(gzipped shards and attribute files, as stored) and, for dedup, the bytes of its work files. Per document of
input, these project Dolma v1.5's documents (:data:`DOLMA_V1_5`) through each stage on ``nodes`` × ``cores``:
hours when every core runs one job (an engine worker), object-store traffic, and the dedup partitions that keep
a job's items under :data:`PARTITION_BYTES`. The projection assumes perfect scaling over shards; docs/scale.md
says where that stops holding. Prints a Markdown report and, last, one JSON line.

This is not a comparison with a peer (benchmarks/corpus.py is): it measures this project alone, to size a cluster.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.corpus import machine  # noqa: E402
from benchmarks.corpus_input import write_corpus  # noqa: E402
from steps.common.engine import LocalEngine  # noqa: E402
from steps.corpus.dedup import DedupConfig, deduplicate  # noqa: E402
from steps.corpus.filter import filter_documents  # noqa: E402
from steps.corpus.mix import MixConfig, mix_sources  # noqa: E402
from steps.corpus.tag import ATTRIBUTES_DIR, tag_documents  # noqa: E402
from steps.corpus.taggers import FilterConfig, TagConfig  # noqa: E402
from steps.data.tokenize import tokenize_documents  # noqa: E402
from steps.data.tokenizer import olmo_tokenizers_dir  # noqa: E402

# Dolma v1.5 (the corpus of OLMo-7B): ~5e9 documents, ~3e12 tokens (the Dolma paper and OLMo's report), 6.4 TB
# gzipped (the allenai/dolma dataset card).
DOLMA_V1_5 = {"documents": 5e9, "tokens": 3e12, "gzip_bytes": 6.4e12}
PARTITION_BYTES = 2**30  # dedup items one job holds (three times that while sorting): 64 jobs on a 256 GiB node
TOKENIZER = "allenai_gpt-neox-olmo-dolma-v1_5.json"
EOS_TOKEN_ID = 50279


def folder_bytes(path: Path, pattern: str = "*") -> int:
    return sum(file.stat().st_size for file in path.rglob(pattern) if file.is_file())


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (it only grows: after a stage, the most of it and those before)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run in this process: ``(CPU seconds, wall seconds, result)``."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def run_stages(work: Path, documents: Path, num_documents: int) -> dict[str, dict[str, Any]]:
    """Each stage on one core: CPU and wall seconds, documents in, gzipped bytes read and written."""
    one = LocalEngine(1)
    stages: dict[str, dict[str, Any]] = {}

    def record(name: str, run: Callable[[], Any], read: int, written: Callable[[], int], docs: int) -> Any:
        cpu, wall, result = measured(run)
        stages[name] = {"cpu_s": cpu, "wall_s": wall, "documents": docs, "read_bytes": read,
                        "written_bytes": written(), "peak_rss_mb": peak_rss_mb()}
        print(f"{name}: {cpu:.1f} CPU s, {docs / cpu:,.0f} documents per CPU second", file=sys.stderr)
        return result

    input_bytes = folder_bytes(documents, "*.jsonl.gz")
    docs = num_documents
    record("tag", lambda: tag_documents(documents, work / "tagged", TagConfig(), one), input_bytes,
           lambda: folder_bytes(work / "tagged"), docs)
    filtered = record("filter", lambda: filter_documents(documents, work / "tagged" / ATTRIBUTES_DIR,
                                                         work / "filtered", FilterConfig(), one),
                      input_bytes + stages["tag"]["written_bytes"], lambda: folder_bytes(work / "filtered"), docs)
    kept = filtered["total"]["documents_kept"]
    deduped = record("dedup", lambda: deduplicate(work / "filtered" / "documents", work / "deduped", DedupConfig(),
                                                  work_dir=work / "dedup-work", engine=one),
                     stages["filter"]["written_bytes"], lambda: folder_bytes(work / "deduped"), kept)
    stages["dedup"]["work_bytes"] = folder_bytes(work / "dedup-work")
    mixed = record("mix", lambda: mix_sources(work / "deduped" / "documents", work / "mixed", MixConfig(), one),
                   stages["dedup"]["written_bytes"], lambda: folder_bytes(work / "mixed"),
                   deduped["total"]["documents_kept"])
    summary = record("tokenize", lambda: tokenize_documents(work / "mixed" / "documents", olmo_tokenizers_dir() /
                                                            TOKENIZER, work / "tokens", EOS_TOKEN_ID, one),
                     stages["mix"]["written_bytes"], lambda: folder_bytes(work / "tokens" / "tokens"),  # not the tokenizer
                     mixed["total"]["documents_out"])
    stages["tokenize"]["tokens"] = summary["total_tokens"]
    return stages


def projection(stages: dict[str, dict[str, Any]], nodes: list[int], cores: int) -> dict[str, Any]:
    """Dolma v1.5's documents through each stage: CPU hours, hours on each cluster size, object-store terabytes."""
    rows = {}
    for name, stage in stages.items():
        scale = DOLMA_V1_5["documents"] / stage["documents"]  # Dolma documents per benchmark document
        cpu_hours = stage["cpu_s"] * scale / 3600
        rows[name] = {
            "documents_per_cpu_s": stage["documents"] / stage["cpu_s"],
            "cpu_hours": cpu_hours,
            "hours": {n: cpu_hours / (n * cores) for n in nodes},
            "read_tb": stage["read_bytes"] * scale / 1e12,
            "written_tb": stage["written_bytes"] * scale / 1e12,
        }
    dedup = stages["dedup"]
    work_tb = dedup["work_bytes"] * DOLMA_V1_5["documents"] / dedup["documents"] / 1e12
    rows["dedup"]["work_tb"] = work_tb
    rows["dedup"]["partitions"] = max(1, int(-(-work_tb * 1e12 // PARTITION_BYTES)))
    tokens_per_cpu_s = stages["tokenize"]["tokens"] / stages["tokenize"]["cpu_s"]
    rows["tokenize"]["tokens_per_cpu_s"] = tokens_per_cpu_s
    return {"stages": rows, "nodes": nodes, "cores": cores}


def report(stages: dict[str, Any], plan: dict[str, Any], command: str) -> str:
    nodes, cores, m = plan["nodes"], plan["cores"], machine()
    head = " | ".join(f"h on {n}×{cores}" for n in nodes)
    lines = [
        f"`{command}`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {m['nproc']} cores "
        f"({m['cpu']}), Python {m['python']}, load average "
        f"{os.getloadavg()[0]:.2f}; input {stages['tag']['documents']:,} documents, "
        f"{stages['tag']['read_bytes'] / 1e6:.1f} MB gzipped. Every stage is projected onto Dolma v1.5's "
        f"{DOLMA_V1_5['documents']:.0e} documents ({DOLMA_V1_5['gzip_bytes'] / 1e12:.1f} TB gzipped).",
        "",
        f"| stage | documents per CPU s | peak RSS MB so far | Dolma v1.5 CPU hours | {head} | reads TB | writes TB |",
        "|---|---:|---:|---:|" + "---:|" * len(nodes) + "---:|---:|",
    ]
    for name, row in plan["stages"].items():
        hours = " | ".join(f"{row['hours'][n]:.1f}" for n in nodes)
        lines.append(f"| {name} | {row['documents_per_cpu_s']:,.0f} | {stages[name]['peak_rss_mb']:,.0f} | "
                     f"{row['cpu_hours']:,.0f} | {hours} | "
                     f"{row['read_tb']:.1f} | {row['written_tb']:.1f} |")
    dedup = plan["stages"]["dedup"]
    lines += ["", f"Dedup work files: {dedup['work_tb']:.2f} TB for Dolma v1.5 → {dedup['partitions']} partitions "
                  f"of ≤ {PARTITION_BYTES / 2**30:.0f} GiB. Tokenize: "
                  f"{plan['stages']['tokenize']['tokens_per_cpu_s']:,.0f} tokens per CPU second."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4,000 documents instead of 20,000")
    parser.add_argument("--documents", type=int, help="number of documents (overrides --quick)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 32, 128], help="cluster sizes to project onto")
    parser.add_argument("--cores", type=int, default=64, help="cores per node (one engine worker each)")
    args = parser.parse_args()
    num_documents = args.documents or (4_000 if args.quick else 20_000)
    with tempfile.TemporaryDirectory(prefix="corpus-scale-") as scratch:
        work = Path(scratch)
        write_corpus(work / "documents", num_documents)
        stages = run_stages(work, work / "documents", num_documents)
    plan = projection(stages, args.nodes, args.cores)
    print(report(stages, plan, " ".join(["python benchmarks/corpus_scale.py", *sys.argv[1:]])))
    print(json.dumps({"benchmark": "corpus_scale", "stages": stages, "projection": plan}))


if __name__ == "__main__":
    main()
