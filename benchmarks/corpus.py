"""Corpus benchmark: this project's tag/filter, dedup and mix stages against the dolma toolkit and datatrove.

``python benchmarks/corpus.py [--quick]`` installs dolma 1.2.1 into ``benchmarks/.venv-dolma`` and
datatrove 0.10.1 into ``benchmarks/.venv-datatrove`` (once each), writes a seeded input
(:mod:`corpus_input`: 20,000 documents, 4,000 with ``--quick``, in 8 shards over two sources), then
runs each stage on it with each tool, 2 processes each where the tool has a setting for it, one
command after the other. docs/s = documents / (wall clock − the command's fixed start-up, measured by
dry runs); wall-clock and CPU-second figures come along:

- tagging: ``dolma tag`` with gopher_v1, c4_v1, pii_regex_v1 against our tag + filter with
  Gopher, C4 and PII (tagging, applying the rules and writing the kept documents);
- the same tag + filter against datatrove (:mod:`corpus_datatrove`): its Gopher quality and
  repetition filters, C4 quality filter and PII formatter in a ``LocalPipelineExecutor``, reading
  the same shards and writing the kept documents;
- dedup: three ``dolma dedupe`` runs (URL, exact text, paragraphs; it does one kind per run), which write
  attributes only, against our one URL + exact + paragraph pass, which writes the deduplicated documents;
- dedup + apply: the same three runs plus one ``dolma mix`` applying their attributes (duplicate documents
  excluded, duplicate paragraphs replaced with "") against the same pass of ours: equal work;
- mixing: ``dolma mix`` passing every document through against our ``mix_sources`` at factor 1;
  also ``dolma mix`` with the Dolma v1.5 Gopher rules, whose kept count checks the peer decisions.

Then it compares the Gopher decisions, document by document: dolma's gopher_v1 attributes judged by
the Dolma v1.5 thresholds against ours judged by our default thresholds, and datatrove's (the filter
that dropped each document, from its exclusion writers) against ours; and the PII span counts of
dolma's pii_regex_v1 against our PII tagger's under each of its rule sets (``tag.pii.rules``): of the
documents where either tool finds PII, the fraction where the counts are equal, and of all documents,
the fraction where both make the same "more than 5 spans: remove" decision.
It appends the figures to ``benchmarks/RESULTS.md`` (its "corpus" section) and prints one JSON
line, last. How the tools' work differs is written down in RESULTS.md. :func:`ours_only` runs this
project's side alone, untimed, at any size (the smoke test's toy run); :func:`datatrove_only` the
same for datatrove's side.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, NamedTuple

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "RESULTS.md"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PROJECT_PYTHON = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)  # the project's own interpreter
DOLMA_VENV = BENCHMARKS / ".venv-dolma"
DOLMA_VERSION = "1.2.1"
# dolma pins s3fs 2023.6.0, whose aiobotocore pins botocore; with boto3 unpinned pip backtracks
# through hundreds of boto3 releases (tens of minutes). s3fs's boto3 extra names the matching one.
DOLMA_REQUIREMENTS = (f"dolma=={DOLMA_VERSION}", "s3fs[boto3]==2023.6.0")
DATATROVE_VENV = BENCHMARKS / ".venv-datatrove"
DATATROVE_VERSION = "0.10.1"
# datatrove without extras, and what its steps here need: spaCy (its English word and sentence tokenizer is
# spacy.blank("en"), whose rules ship in the wheel: nothing to download), regex (its text utilities) and orjson
# (JsonlReader, JsonlWriter).
DATATROVE_REQUIREMENTS = (f"datatrove=={DATATROVE_VERSION}", "spacy==3.8.18", "regex==2026.12.2", "orjson==3.13.0")
DATATROVE_PROBE = (f"import importlib.metadata as m; assert m.version('datatrove') == {DATATROVE_VERSION!r}; "
                   "import spacy, regex, orjson; spacy.blank('en')")
TARGET_DATATROVE_RATIO = 2.0  # ours at >= 2x datatrove's docs/s, tag + filter
EXPERIMENT = "bench"
PEER_TAGGERS = ("gopher_v1", "c4_v1", "pii_regex_v1")
MAX_SHARD_BYTES = 16 * 2**20
FALSE_POSITIVE_RATE = 1e-6
PII_TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS")
PII_RULE_SETS = ("dolma_v1_fixed", "dolma_v1")  # steps.corpus.pii.PII_RULE_SETS: the default first
PII_MAX_SPANS = 5  # Dolma's rule: a document with more spans is removed

# Dolma v1.5's Gopher rules (configs/dolma-v1_5/mixing, thresholds as in REFERENCE.md): remove a
# document when gopher_v1 attribute <name> compares so with the threshold; absent attributes
# (n-gram fractions of texts shorter than n words) remove nothing, as in its jsonpath rules.
PEER_GOPHER_RULES: tuple[tuple[str, str, float], ...] = (
    ("word_count", "<", 50),
    ("word_count", ">", 100_000),
    ("median_word_length", "<", 3),
    ("median_word_length", ">", 10),
    ("symbol_to_word_ratio", ">", 0.1),
    ("fraction_of_words_with_alpha_character", "<", 0.8),
    ("required_word_count", "<", 2),
    ("fraction_of_lines_starting_with_bullet_point", ">", 0.9),
    ("fraction_of_lines_ending_with_ellipsis", ">", 0.3),
    ("fraction_of_duplicate_lines", ">", 0.3),
    ("fraction_of_characters_in_duplicate_lines", ">", 0.3),
    ("fraction_of_characters_in_most_common_2grams", ">", 0.20),
    ("fraction_of_characters_in_most_common_3grams", ">", 0.18),
    ("fraction_of_characters_in_most_common_4grams", ">", 0.16),
    ("fraction_of_characters_in_duplicate_5grams", ">", 0.15),
    ("fraction_of_characters_in_duplicate_6grams", ">", 0.14),
    ("fraction_of_characters_in_duplicate_7grams", ">", 0.13),
    ("fraction_of_characters_in_duplicate_8grams", ">", 0.12),
    ("fraction_of_characters_in_duplicate_9grams", ">", 0.11),
    ("fraction_of_characters_in_duplicate_10grams", ">", 0.10),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Running commands

class Measured(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # user + system seconds of the command and the processes it waited for
    stdout: str


def run(command: list[str], log_file: Path) -> Measured:
    """Run ``command``, its output going to ``log_file``; fail with the tail of its errors."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log_file.write_text(f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-25:])
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({result.returncode}); see {log_file}:\n{tail}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Measured(seconds, cpu, result.stdout)


def base_python() -> str:
    """An interpreter the peers support (dolma 1.2.1: 3.10 to 3.12) to make their virtualenvs with."""
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        return sys.executable
    for name in ("python3.12", "python3.11", "python3.10"):
        if found := shutil.which(name):
            return found
    raise RuntimeError("dolma 1.2.1 needs Python 3.10 to 3.12; none found")


def peer_ready(venv: Path, probe: str) -> bool:
    """Whether ``venv``'s python exists and runs ``probe`` without error."""
    python = venv / "bin" / "python"
    return python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_peer_venv(venv: Path, requirements: tuple[str, ...], probe: str) -> Path:
    """The python of ``venv``, with ``requirements`` installed from PyPI (once) when ``probe`` fails in it."""
    if not peer_ready(venv, probe):
        log(f"installing {', '.join(requirements)} into {venv} (once; a minute or two)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        run([str(venv / "bin" / "pip"), "install", *requirements], venv / "install.log")
        if not peer_ready(venv, probe):
            raise RuntimeError(f"{venv}: installed {', '.join(requirements)}, but `{probe}` fails there")
    return venv / "bin" / "python"


def ensure_dolma() -> Path:
    """The ``dolma`` executable of ``benchmarks/.venv-dolma``, installed from PyPI when missing."""
    probe = f"import importlib.metadata as m; assert m.version('dolma') == {DOLMA_VERSION!r}"
    return ensure_peer_venv(DOLMA_VENV, DOLMA_REQUIREMENTS, probe).parent / "dolma"


def ensure_datatrove() -> Path:
    """The python of ``benchmarks/.venv-datatrove``, installed from PyPI when missing."""
    return ensure_peer_venv(DATATROVE_VENV, DATATROVE_REQUIREMENTS, DATATROVE_PROBE)


def startup_seconds(command: list[str], log_file: Path) -> float:
    """The fixed cost of a command: the least wall-clock time of three runs that only start up."""
    return min(run(command, log_file).seconds for _ in range(3))


class Timing(NamedTuple):
    seconds: float  # wall clock of the command(s)
    startup: float  # of which fixed start-up cost (interpreter, imports, config), measured apart
    cpu: float  # user + system seconds, all processes of the command(s)

    def __add__(self, other: "Timing") -> "Timing":
        return Timing(*(a + b for a, b in zip(self, other)))

    def docs_per_s(self, documents: int, steady: bool = True) -> float:
        return round(documents / (self.seconds - (self.startup if steady else 0.0)), 1)


def run_dolma(dolma: Path, command: str, config: dict[str, Any], work: Path, name: str) -> Timing:
    """Run ``dolma -c <config> <command>``; its start-up cost is that of the same command with --dryrun."""
    config_file = work / "configs" / f"{name}.json"  # JSON is YAML, which dolma reads
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(config, indent=1))
    invocation = [str(dolma), "-c", str(config_file), command]
    startup = startup_seconds([*invocation, "--dryrun"], work / "logs" / f"dolma-{name}-dryrun.log")
    measured = run(invocation, work / "logs" / f"dolma-{name}.log")
    return Timing(measured.seconds, startup, measured.cpu)


def ours_command(stage: str, documents: Path, output: Path, options: dict[str, Any]) -> list[str]:
    return [str(PROJECT_PYTHON), str(BENCHMARKS / "corpus_ours.py"), stage, str(documents), str(output),
            json.dumps(options)]


def run_ours(stage: str, documents: Path, output: Path, options: dict[str, Any], work: Path) -> tuple[Timing, Any]:
    """Run one stage of ``corpus_ours.py`` in the project's virtualenv; return its timing and stats."""
    startup = startup_seconds(ours_command("startup", documents, output, {}), work / "logs" / "ours-startup.log")
    measured = run(ours_command(stage, documents, output, options), work / "logs" / f"ours-{stage}.log")
    return Timing(measured.seconds, startup, measured.cpu), json.loads(measured.stdout.strip().splitlines()[-1])


def datatrove_command(python: Path, mode: str, documents: Path, output: Path, options: dict[str, Any]) -> list[str]:
    return [str(python), str(BENCHMARKS / "corpus_datatrove.py"), mode, str(documents), str(output),
            json.dumps(options)]


def run_datatrove(python: Path, mode: str, documents: Path, work: Path, workers: int) -> tuple[Measured, Any]:
    """Run one mode of ``corpus_datatrove.py`` in datatrove's virtualenv; return its measure and output."""
    command = datatrove_command(python, mode, documents, work / "datatrove" / mode, {"workers": workers})
    measured = run(command, work / "logs" / f"datatrove-{mode}.log")
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Reading dolma's outputs

def rows(directory: Path) -> Iterator[dict[str, Any]]:
    """Every JSON row of the jsonl.gz files below ``directory``, files in sorted order."""
    for path in sorted(directory.rglob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            yield from map(json.loads, handle)


def peer_gopher_decisions(attributes: Path) -> dict[str, list[str]]:
    """``{id: the v1.5 Gopher rules that remove it}`` from dolma's gopher_v1 attributes."""
    decisions = {}
    for row in rows(attributes):
        values = {name.rsplit("__", 1)[1]: spans[0][2] for name, spans in row["attributes"].items()
                  if "__gopher_v1__" in name and spans}
        decisions[row["id"]] = [
            f"{name}{op}{threshold:g}" for name, op, threshold in PEER_GOPHER_RULES
            if name in values and (values[name] < threshold if op == "<" else values[name] > threshold)
        ]
    return decisions


def peer_gopher_filter(attribute_prefix: str) -> list[str]:
    """The v1.5 Gopher rules as dolma mixer jsonpath exclusions (as in configs/dolma-v1_5/mixing)."""
    rules = []
    for name, op, threshold in PEER_GOPHER_RULES:
        key = f"@.{attribute_prefix}__{name}"
        rules.append(f"$.attributes[?({key} && {key}[0] && {key}[0][2] {op} {threshold})]")
    return rules


def peer_pii_spans(attributes: Path) -> dict[str, int]:
    """``{id: PII spans dolma's pii_regex_v1 found}`` (e-mail, phone and IP spans; not its "doc" score)."""
    return {row["id"]: sum(len(row["attributes"].get(f"{EXPERIMENT}__pii_regex_v1__{kind}", [])) for kind in PII_TYPES)
            for row in rows(attributes)}


def peer_flagged(attributes: Path) -> dict[str, set[str]]:
    """``{"url": ids, "text": ids}``: the documents dolma's document-level dedupe runs flagged as duplicates."""
    return {kind: {row["id"] for row in rows(attributes / f"dup_{kind}") if row["attributes"].get(f"dup_{kind}")}
            for kind in DUPLICATE_DOCUMENT_KINDS}


def peer_dedup_counts(attributes: Path) -> dict[str, int]:
    """Documents flagged by URL and by exact text; duplicate paragraphs, all and in unflagged documents."""
    flagged = peer_flagged(attributes)
    paragraphs = paragraphs_in_kept = 0
    for row in rows(attributes / "dup_paragraphs"):
        count = len(row["attributes"].get("dup_paragraphs", []))
        paragraphs += count
        paragraphs_in_kept += count if row["id"] not in flagged["url"] | flagged["text"] else 0
    return {"url": len(flagged["url"]), "exact": len(flagged["text"] - flagged["url"]),
            "paragraphs": paragraphs, "paragraphs_in_unflagged_documents": paragraphs_in_kept}


def count_documents(directory: Path) -> int:
    return sum(1 for _ in rows(directory))


def non_blank_lines(text: str) -> int:
    """The paragraphs of ``text`` either tool may remove: its lines that are not blank."""
    return sum(1 for line in text.split("\n") if line.strip())


def peer_applied_counts(documents: Path, mixed: Path, excluded: set[str]) -> dict[str, int]:
    """What dolma's mix did with the dedupe attributes, measured on its output: documents kept, paragraphs removed
    (non-blank lines gone from the documents not ``excluded``) and documents emptied (left blank, so dropped)."""
    kept = {row["id"]: non_blank_lines(row["text"]) for row in rows(mixed)}
    removed = emptied = 0
    for row in rows(documents):
        if row["id"] not in excluded:
            removed += non_blank_lines(row["text"]) - kept.get(row["id"], 0)
            emptied += row["id"] not in kept
    return {"documents_kept": len(kept), "paragraphs_removed": removed, "documents_emptied": emptied}


# ---------------------------------------------------------------------------------------------
# The stages

class Stage(NamedTuple):
    ours: Timing
    peer: Timing
    ours_stats: dict[str, Any]
    peer_stats: dict[str, Any]


def ours_options(stage: str, workers: int, counts: dict[str, Any]) -> dict[str, Any]:
    """The options of our side of a stage (``corpus_ours.py <stage>``), from the input's counts."""
    if stage == "filter":
        return {"workers": workers}
    if stage == "dedup":
        return {"config": {"url": True, "exact": True, "paragraph": True}, "workers": workers}
    if stage == "mix":
        return {"max_shard_bytes": MAX_SHARD_BYTES}
    return {}


# where each stage of ours writes (``decisions`` reads what ``filter`` wrote)
OURS_OUTPUT = {"filter": "filter", "dedup": "dedup", "mix": "mix", "decisions": "filter"}


def ours_only(work: Path, num_documents: int, seed: int = 0, workers: int = 1) -> dict[str, Any]:
    """This project's side alone, untimed, with the benchmark's commands and options: the seeded input, then
    ``corpus_ours.py`` filter, dedup, mix and decisions, and pii under each rule set (``pii_<rules>``).
    Returns the input's counts and each stage's stats."""
    documents, counts = write_input(work, num_documents, seed)
    found: dict[str, Any] = {"input": counts}
    for stage, output in OURS_OUTPUT.items():
        command = ours_command(stage, documents, work / "ours" / output, ours_options(stage, workers, counts))
        found[stage] = json.loads(run(command, work / "logs" / f"ours-{stage}.log").stdout.strip().splitlines()[-1])
    for rules in PII_RULE_SETS:
        found[f"pii_{rules}"] = ours_pii_spans(work, documents, rules)
    return found


def datatrove_only(python: Path, work: Path, num_documents: int, seed: int = 0, workers: int = 1) -> dict[str, Any]:
    """datatrove's side alone, untimed, with the benchmark's commands: the seeded input, then
    ``corpus_datatrove.py`` filter and decisions. Returns the input's counts and each mode's output."""
    documents, counts = write_input(work, num_documents, seed)
    return {"input": counts, **{mode: run_datatrove(python, mode, documents, work, workers)[1]
                                for mode in ("filter", "decisions")}}


def ours_pii_spans(work: Path, documents: Path, rules: str) -> dict[str, int]:
    """``{id: PII spans}`` of our PII tagger under ``rules`` (``corpus_ours.py pii``, untimed)."""
    command = ours_command("pii", documents, work / "ours" / "pii", {"rules": rules})
    output = run(command, work / "logs" / f"ours-pii-{rules}.log").stdout
    return json.loads(output.strip().splitlines()[-1])["pii_spans"]


def pii_agreement(ours: dict[str, int], peer: dict[str, int]) -> dict[str, Any]:
    """How our PII span counts compare with dolma's, document by document: of the documents where either
    finds PII, the fraction with equal counts; of all, the fraction with the same removal decision."""
    if set(ours) != set(peer):
        raise RuntimeError(f"the two tools' PII counts cover different documents ({len(ours)} vs {len(peer)})")
    with_pii = [doc_id for doc_id in peer if ours[doc_id] or peer[doc_id]]
    same_count = sum(ours[doc_id] == peer[doc_id] for doc_id in with_pii)
    same_decision = sum((ours[i] > PII_MAX_SPANS) == (peer[i] > PII_MAX_SPANS) for i in peer)
    return {"documents_with_pii": len(with_pii), "same_count": same_count,
            "count_agreement": same_count / max(1, len(with_pii)),
            "over_5_agreement": same_decision / max(1, len(peer)),
            "spans_ours": sum(ours.values()), "over_5_ours": sum(n > PII_MAX_SPANS for n in ours.values())}


def tagging(dolma: Path, work: Path, documents: Path, workers: int) -> Stage:
    peer = run_dolma(dolma, "tag", {
        "documents": [str(documents / "*" / "*.jsonl.gz")], "taggers": list(PEER_TAGGERS),
        "experiment": EXPERIMENT, "processes": workers}, work, "tag")
    ours, stats = run_ours("filter", documents, work / "ours" / OURS_OUTPUT["filter"],
                           ours_options("filter", workers, {}), work)
    return Stage(ours, peer, stats, {})


def tagging_datatrove(python: Path, work: Path, documents: Path, workers: int, ours: Stage) -> Stage:
    """datatrove's Gopher, C4 and PII steps (``corpus_datatrove.py filter``) against our tag + filter, whose run
    is the one ``ours`` (the tag stage) measured. Its start-up: the least of three pipeline builds, not run."""
    startup = startup_seconds(datatrove_command(python, "startup", documents, work / "datatrove" / "startup", {}),
                              work / "logs" / "datatrove-startup.log")
    measured, stats = run_datatrove(python, "filter", documents, work, workers)
    return Stage(ours.ours, Timing(measured.seconds, startup, measured.cpu), ours.ours_stats, stats)


DEDUPE_KINDS = {  # dolma dedupes one kind per run
    "url": {"documents": {"attribute_name": "dup_url", "key": "$.metadata.url"}},
    "text": {"documents": {"attribute_name": "dup_text", "key": "$.text"}},
    "paragraphs": {"paragraphs": {"attribute_name": "dup_paragraphs"}},
}
DUPLICATE_DOCUMENT_KINDS = ("url", "text")  # their attribute flags a whole document: [[0, length, 1]]
# Applying the dedupe attributes as Dolma v1.5's mixing configs do: exclude the flagged documents (a jsonpath rule on
# the first span's score) and replace each duplicate paragraph's span (its line and "\n") with "".
DEDUP_EXCLUDE = [f"$.attributes[?(@.dup_{kind} && @.dup_{kind}[0] && @.dup_{kind}[0][2] >= 1)]"
                 for kind in DUPLICATE_DOCUMENT_KINDS]
DEDUP_SPAN_REPLACEMENT = ({"span": "$.attributes.dup_paragraphs", "min_score": 0.5, "replacement": ""},)


def dedup(dolma: Path, work: Path, documents: Path, workers: int, counts: dict[str, Any]) -> Stage:
    num_documents = sum(counts["sources"].values())
    peer = Timing(0.0, 0.0, 0.0)
    for kind, dedupe in DEDUPE_KINDS.items():
        expected = counts["paragraphs"] if kind == "paragraphs" else num_documents
        peer += run_dolma(dolma, "dedupe", {
            "documents": [str(documents / "*" / "*.jsonl.gz")],
            "dedupe": {"name": f"dup_{kind}", "skip_empty": True, **dedupe},
            "bloom_filter": {"file": str(work / "peer" / f"bloom-{kind}.bin"), "read_only": False,
                             "estimated_doc_count": expected, "desired_false_positive_rate": FALSE_POSITIVE_RATE},
            "processes": workers}, work, f"dedupe-{kind}")
    ours, stats = run_ours("dedup", documents, work / "ours" / OURS_OUTPUT["dedup"],
                           ours_options("dedup", workers, counts), work)
    return Stage(ours, peer, stats, peer_dedup_counts(work / "attributes"))


def mix_config(documents: Path, output: Path, workers: int, exclude: list[str], attributes: list[str],
               span_replacement: tuple[dict[str, Any], ...] = (), min_text_length: int = 0) -> dict:
    """A ``dolma mix`` config: one stream per source, ``exclude`` jsonpath rules over the named ``attributes``, spans
    replaced as ``span_replacement`` says, documents shorter than ``min_text_length`` (stripped) dropped."""
    streams = [{"name": source.name, "documents": [str(source / "*.jsonl.gz")], "attributes": attributes,
                "output": {"path": str(output / source.name), "max_size_in_bytes": MAX_SHARD_BYTES,
                           "discard_fields": ["attributes"], "min_text_length": min_text_length},
                "filter": {"exclude": exclude}, "span_replacement": list(span_replacement)}
               for source in sorted(p for p in documents.iterdir() if p.is_dir())]
    return {"streams": streams, "processes": workers}


def dedup_apply(dolma: Path, work: Path, documents: Path, workers: int, deduped: Stage) -> Stage:
    """dolma's three dedupe runs (``deduped``'s peer) plus one ``dolma mix`` applying their attributes: URL and
    exact-text duplicates excluded, duplicate paragraphs replaced with "", documents left blank dropped (as ours
    drops its emptied ones); against our dedup stage, which does all of that (``deduped``'s run)."""
    output = work / "peer" / "mix-dedup"
    config = mix_config(documents, output, workers, DEDUP_EXCLUDE, [f"dup_{kind}" for kind in DEDUPE_KINDS],
                        DEDUP_SPAN_REPLACEMENT, min_text_length=1)
    applied = run_dolma(dolma, "mix", config, work, "mix-dedup")
    excluded = set().union(*peer_flagged(work / "attributes").values())
    stats = {**peer_applied_counts(documents, output, excluded), "apply": applied}
    return Stage(deduped.ours, deduped.peer + applied, deduped.ours_stats, stats)


def mixing(dolma: Path, work: Path, documents: Path, workers: int) -> Stage:
    nothing = ["$.metadata[?(@.kind == 'no such kind')]"]  # the mixer wants a filter: this one removes nothing
    peer = run_dolma(dolma, "mix", mix_config(documents, work / "peer" / "mix", workers, nothing, []), work, "mix")
    ours, stats = run_ours("mix", documents, work / "ours" / OURS_OUTPUT["mix"], ours_options("mix", workers, {}),
                           work)
    return Stage(ours, peer, stats, {"documents_out": count_documents(work / "peer" / "mix")})


def gopher_mixing(dolma: Path, work: Path, documents: Path, workers: int) -> tuple[Timing, int]:
    """dolma's mixer with the v1.5 Gopher rules: its timing and the number of documents it kept."""
    rules = peer_gopher_filter(f"{EXPERIMENT}__gopher_v1")
    output = work / "peer" / "mix-gopher"
    timing = run_dolma(dolma, "mix", mix_config(documents, output, workers, rules, [EXPERIMENT]), work, "mix-gopher")
    return timing, count_documents(output)


def ours_decisions(work: Path, documents: Path) -> dict[str, Any]:
    """Our Gopher decisions and PII span counts, per document, from our filter's run (``corpus_ours.py decisions``)."""
    return run_ours("decisions", documents, work / "ours" / OURS_OUTPUT["decisions"], {}, work)[1]


def disagreements(kinds: dict[str, str], peer: dict[str, list[str] | str | None],
                  ours: dict[str, list[str]]) -> Counter:
    """``(document kind, the peer's first rule, our first rule)`` of each document only one tool removes."""
    def first(rules: list[str] | str | None) -> str:
        if not rules:
            return "kept"
        return rules if isinstance(rules, str) else rules[0]

    if set(ours) != set(peer):
        raise RuntimeError(f"the two tools judged different documents ({len(ours)} vs {len(peer)})")
    return Counter((kinds[doc_id], first(peer[doc_id]), first(ours[doc_id]))
                   for doc_id in peer if bool(peer[doc_id]) != bool(ours[doc_id]))


def datatrove_agreement(python: Path, work: Path, documents: Path, kinds: dict[str, str], workers: int,
                        ours: dict[str, list[str]]) -> dict[str, Any]:
    """Gopher decisions of datatrove (its two Gopher filters' exclusion writers: the reason of the one that dropped
    a document) against ours (our default rules, all Gopher rules), document by document."""
    peer = run_datatrove(python, "decisions", documents, work, workers)[1]["gopher"]
    classes = disagreements(kinds, peer, ours)
    return {"gopher_agreement": 1 - sum(classes.values()) / len(peer), "disagreements": classes,
            "gopher_removed_datatrove": sum(map(bool, peer.values())),
            "gopher_removed_ours": sum(map(bool, ours.values()))}


def agreement(work: Path, documents: Path, kinds: dict[str, str], ours: dict[str, Any]) -> dict[str, Any]:
    """Gopher decisions and PII span counts (``ours``: those of our filter's run; and under each PII rule set) of
    both tools, document by document."""
    peer = peer_gopher_decisions(work / "attributes" / EXPERIMENT)
    peer_pii = peer_pii_spans(work / "attributes" / EXPERIMENT)
    if set(ours["pii_spans"]) != set(peer_pii):
        raise RuntimeError(f"the two tools' PII counts cover different documents ({len(ours['pii_spans'])} vs "
                           f"{len(peer_pii)})")
    classes = disagreements(kinds, peer, ours["gopher"])
    crowded = {"ours": {i for i, n in ours["pii_spans"].items() if n > 5}, "peer": {i for i, n in peer_pii.items() if n > 5}}
    return {
        "gopher_agreement": 1 - sum(classes.values()) / len(peer), "disagreements": classes,
        "gopher_removed_peer": sum(map(bool, peer.values())), "gopher_removed_ours": sum(map(bool, ours["gopher"].values())),
        "pii_spans_ours": sum(ours["pii_spans"].values()), "pii_spans_peer": sum(peer_pii.values()),
        "pii_over_5_ours": len(crowded["ours"]), "pii_over_5_peer": len(crowded["peer"]),
        "pii_over_5_agreement": 1 - len(crowded["ours"] ^ crowded["peer"]) / len(peer),
        "pii_by_rules": {rules: pii_agreement(ours_pii_spans(work, documents, rules), peer_pii)
                         for rules in PII_RULE_SETS},
    }


# ---------------------------------------------------------------------------------------------
# Reporting

def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def figures(stages: dict[str, Stage], documents: int) -> dict[str, float]:
    """docs/s of each stage and tool, steady (start-up cost taken out) and wall clock; ratios ours / the stage's peer
    (dolma; datatrove for the ``datatrove_`` keys), and the peer's CPU seconds over ours (the work each did, whatever
    else ran on the machine)."""
    result: dict[str, float] = {}
    for name, stage in stages.items():
        prefix = "" if name == "tag" else f"{name}_"
        for steady, suffix in ((True, ""), (False, "_wall")):
            ours, peer = stage.ours.docs_per_s(documents, steady), stage.peer.docs_per_s(documents, steady)
            result.update({f"{prefix}ours{suffix}": ours, f"{prefix}peer{suffix}": peer,
                           f"{prefix}ratio{suffix}": round(ours / peer, 3)})
        result[f"{prefix}ratio_cpu"] = round(stage.peer.cpu / stage.ours.cpu, 3)
    return result


STAGE_TITLES = {"tag": "tag + filter: Gopher, C4, PII; dolma `tag`", "datatrove": "tag + filter: Gopher, C4, PII; "
                "datatrove", "dedup": "dedup: URL + exact + paragraph; dolma `dedupe` ×3, writing attributes only",
                "dedup_apply": "dedup + apply: URL + exact + paragraph, documents written; dolma `dedupe` ×3 + `mix` "
                "applying them", "mix": "mix: pass-through; dolma"}
DATATROVE_STEPS = {"read": "read", "gopher_quality": "Gopher quality", "gopher_repetition": "Gopher repetition",
                   "c4_quality": "C4 quality", "pii": "PII", "write": "write"}  # corpus_datatrove.FILTER_STEPS


def datatrove_lines(report: dict[str, Any]) -> list[str]:
    """The datatrove paragraph of the results: ratio and goal, its steps' seconds, kept documents, Gopher agreement."""
    stage, found, n = report["stages"]["datatrove"], report["datatrove"], report["documents"]
    ratio, steps = report["figures"]["datatrove_ratio"], stage.peer_stats["steps"]
    dropped = {name: {reason.removeprefix("dropped_"): count for reason, count in steps[name].items()
                      if reason.startswith("dropped_")}
               for name in ("gopher_quality", "gopher_repetition", "c4_quality")}
    forwarded = steps["gopher_repetition"]["forwarded"]
    kept_here = n - found["gopher_removed_datatrove"]
    lines = [
        f"datatrove {DATATROVE_VERSION}: ours / datatrove {ratio:.2f} (goal ≥ {TARGET_DATATROVE_RATIO:g}: "
        f"{'met' if ratio >= TARGET_DATATROVE_RATIO else 'NOT met'}). Its steps' seconds, summed over its "
        f"{report['workers']} tasks: " + ", ".join(f"{title} {steps[name]['seconds']:.1f}"
                                                   for name, title in DATATROVE_STEPS.items()) + ".",
        f"Documents kept: ours {stage.ours_stats['documents_kept']}, datatrove {stage.peer_stats['documents_kept']} of "
        f"{n}. datatrove dropped: " + "; ".join(
            f"{DATATROVE_STEPS[name]} {steps[name].get('dropped', 0)} ("
            + ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])) + ")"
            for name, reasons in dropped.items()) + ".",
        "",
        f"Gopher agreement with datatrove: {found['gopher_agreement']:.2%} ({sum(found['disagreements'].values())} of "
        f"{n} documents differ); removed by Gopher: ours {found['gopher_removed_ours']}, datatrove "
        f"{found['gopher_removed_datatrove']} (its exclusion writers' run; its timed run kept {forwarded} after its "
        f"Gopher filters: {'the same' if forwarded == kept_here else 'NOT the same'} decisions).",
    ]
    if found["disagreements"]:
        lines += ["", "| document kind | datatrove (its reason) | ours (first rule) | documents |",
                  "|---|---|---|---:|"]
        lines += [f"| {kind} | {peer} | {ours} | {count} |"
                  for (kind, peer, ours), count in found["disagreements"].most_common(12)]
    return lines


def results_block(command: str, report: dict[str, Any]) -> str:
    stages, found, n, m = report["stages"], report["agreement"], report["documents"], report["machine"]
    fig = report["figures"]
    lines = [
        f"### {report['date']}: `{command}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, dolma {DOLMA_VERSION}, datatrove "
        f"{DATATROVE_VERSION}; load average "
        f"{report['load'][0]:.2f} before, {report['load'][1]:.2f} after. Input: {n} documents "
        f"({', '.join(f'{k} {v}' for k, v in report['input']['sources'].items())}), "
        f"{report['input']['characters'] / n:.0f} characters on average, 8 shards; {report['workers']} processes "
        "(our mix runs in one). docs/s = documents / (wall clock − start-up); start-up = least of three "
        "runs of the same command with `--dryrun` (dolma), of building datatrove's pipeline without running it, "
        "or of the bare imports (ours).",
        "",
        "| stage; peer | ours docs/s | peer docs/s | ours / peer | wall clock: ours | peer | ours / peer "
        "| ours s (start-up) | peer s (start-up) | CPU s: ours | peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, stage in stages.items():
        prefix = "" if name == "tag" else f"{name}_"
        lines.append(
            f"| {STAGE_TITLES[name]} | {fig[prefix + 'ours']} | {fig[prefix + 'peer']} | {fig[prefix + 'ratio']:.2f} "
            f"| {fig[prefix + 'ours_wall']} | {fig[prefix + 'peer_wall']} | {fig[prefix + 'ratio_wall']:.2f} "
            f"| {stage.ours.seconds:.1f} ({stage.ours.startup:.1f}) | {stage.peer.seconds:.1f} ({stage.peer.startup:.1f}) "
            f"| {stage.ours.cpu:.1f} | {stage.peer.cpu:.1f} |")
    gopher_timing, gopher_kept = report["gopher_mix"]
    lines += [
        f"| mix with the v1.5 Gopher rules (dolma only) | | {gopher_timing.docs_per_s(n)} | "
        f"| | {gopher_timing.docs_per_s(n, steady=False)} | | | {gopher_timing.seconds:.1f} ({gopher_timing.startup:.1f}) "
        f"| | {gopher_timing.cpu:.1f} |",
        "",
        f"Ours, tag + filter: tagging {stages['tag'].ours_stats['tag_s']:.1f} s, filtering "
        f"{stages['tag'].ours_stats['filter_s']:.1f} s (in-process clocks).",
        "",
        *datatrove_lines(report),
        "",
        f"Gopher agreement: {found['gopher_agreement']:.2%} ({sum(found['disagreements'].values())} of {n} documents "
        f"differ); removed by Gopher: ours {found['gopher_removed_ours']}, dolma {found['gopher_removed_peer']} "
        f"(dolma's own mixer with the v1.5 rules kept {gopher_kept}: "
        f"{'the same' if gopher_kept == n - found['gopher_removed_peer'] else 'NOT the same'} decisions as computed here "
        "from its attributes).",
    ]
    if found["disagreements"]:
        lines += ["", "| document kind | dolma (first rule) | ours (first rule) | documents |", "|---|---|---|---:|"]
        lines += [f"| {kind} | {peer} | {ours} | {count} |"
                  for (kind, peer, ours), count in found["disagreements"].most_common(12)]
    ours_dedup, peer_dedup = stages["dedup"].ours_stats, stages["dedup"].peer_stats
    applied, apply_timing = stages["dedup_apply"].peer_stats, stages["dedup_apply"].peer_stats["apply"]
    spans_applied = applied["paragraphs_removed"] == peer_dedup["paragraphs_in_unflagged_documents"]
    filtered = stages["tag"].ours_stats
    lines += [
        "",
        f"Dedup, ours (removed) / dolma (flagged): URL {ours_dedup['removed_url']} / {peer_dedup['url']}; exact text "
        f"{ours_dedup['removed_exact']} / {peer_dedup['exact']} (not also URL); paragraphs "
        f"{ours_dedup['paragraphs_removed']} / {peer_dedup['paragraphs']} "
        f"({peer_dedup['paragraphs_in_unflagged_documents']} in documents flagged neither by URL nor by text); "
        f"documents emptied by paragraph dedup (ours) {ours_dedup['documents_emptied']}.",
        f"Dedup + apply, ours / dolma's mix (its output measured): documents kept {ours_dedup['documents_kept']} / "
        f"{applied['documents_kept']}; paragraphs removed {ours_dedup['paragraphs_removed']} / "
        f"{applied['paragraphs_removed']}; documents emptied {ours_dedup['documents_emptied']} / "
        f"{applied['documents_emptied']} (dolma's paragraphs: {'the same as' if spans_applied else 'NOT the same as'} "
        "the spans its attributes flag in the documents it does not exclude). dolma's mix alone: "
        f"{apply_timing.seconds:.1f} s ({apply_timing.startup:.1f} start-up), {apply_timing.cpu:.1f} CPU s.",
        f"PII spans found, ours / dolma: {found['pii_spans_ours']} / {found['pii_spans_peer']}; documents with more "
        f"than five: {found['pii_over_5_ours']} / {found['pii_over_5_peer']} (same decision on "
        f"{found['pii_over_5_agreement']:.2%}). Our filter kept {filtered['documents_kept']} of "
        f"{filtered['documents_in']} documents.",
        "",
        "| our PII rules | documents with PII (either tool) | same span count as dolma's pii_regex_v1 "
        "| documents with > 5 spans: ours / dolma | same removal decision (all documents) |",
        "|---|---:|---:|---:|---:|",
        *(f"| `{rules}` | {pii['documents_with_pii']} | {pii['count_agreement']:.2%} ({pii['same_count']}) "
          f"| {pii['over_5_ours']} / {found['pii_over_5_peer']} | {pii['over_5_agreement']:.2%} |"
          for rules, pii in found["pii_by_rules"].items()),
        "",
        f"Mix: ours wrote {stages['mix'].ours_stats['documents_out']}, dolma {stages['mix'].peer_stats['documents_out']} "
        "documents.",
        "",
    ]
    return "\n".join(lines)


def append_results(section: str, block: str) -> None:
    """Add ``block`` at the end of the "## <section>" section of RESULTS.md (made, at the end, when missing)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    heading = f"\n## {section}\n"
    if heading not in text:
        text = text.rstrip("\n") + "\n" + heading + "\n"
    end = text.find("\n## ", text.index(heading) + len(heading))
    end = len(text) if end == -1 else end + 1
    RESULTS.write_text(text[:end].rstrip("\n") + "\n\n" + block + ("\n" + text[end:] if end < len(text) else ""))


@contextmanager
def work_directory(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh temporary directory for one run: removed after it unless ``keep``; kept (and named) on failure."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    except BaseException:
        log(f"kept {work} (inputs, outputs, configs and logs)")
        raise
    if keep:
        log(f"kept {work} (inputs, outputs, configs and logs)")
    else:
        shutil.rmtree(work, ignore_errors=True)


def write_input(work: Path, num_documents: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """Write the seeded benchmark documents (:mod:`corpus_input`) under ``work``; return their folder and counts."""
    documents = work / "documents"
    log(f"writing {num_documents} documents to {documents}")
    out = run([str(PROJECT_PYTHON), str(BENCHMARKS / "corpus_input.py"), str(documents), str(num_documents),
               str(seed)], work / "logs" / "input.log").stdout
    return documents, json.loads(out.strip().splitlines()[-1])


def parse_arguments(script: str, description: str, engines: bool = False) -> tuple[argparse.Namespace, int, str]:
    """The options every document benchmark takes (with ``engines``, also ``--engine``); returns them, the
    document count and the command line."""
    parser = argparse.ArgumentParser(description=description)
    if engines:
        parser.add_argument("--engine", choices=("local", "ray"), default="local",
                            help="ray: our stages on the local engine against the Ray engine on a loopback cluster "
                                 "of --workers one-CPU nodes (benchmarks/corpus_ray.py), instead of the peers")
    parser.add_argument("--quick", action="store_true", help="4,000 documents instead of 20,000")
    parser.add_argument("--documents", type=int, help="number of documents (overrides --quick)")
    parser.add_argument("--workers", type=int, default=2, help="processes for each tool (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    command = " ".join([f"python benchmarks/{script}", *sys.argv[1:]])
    return args, args.documents or (4_000 if args.quick else 20_000), command


def json_line(report: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's JSON line: every stage's figures, then the decision comparisons."""
    found, dt_found, n = report["agreement"], report["datatrove"], report["documents"]
    tag, datatrove = report["stages"]["tag"], report["stages"]["datatrove"]
    return {"benchmark": "corpus", "unit": "docs/s", **figures(report["stages"], n),
            "gopher_agreement": round(found["gopher_agreement"], 5),
            "mix_peer_gopher_rules": report["gopher_mix"][0].docs_per_s(n),
            **{f"dedup_{name}_{side}": getattr(report["stages"]["dedup_apply"], f"{side}_stats")[name]
               for name in ("documents_kept", "paragraphs_removed") for side in ("ours", "peer")},
            **{key: value for key, value in found.items()
               if key not in ("gopher_agreement", "disagreements", "pii_by_rules")},
            **{f"pii_{name}_{rules}": round(pii[name], 5) for rules, pii in found["pii_by_rules"].items()
               for name in ("count_agreement", "over_5_agreement")},
            "datatrove_version": DATATROVE_VERSION, "datatrove_target_ratio": TARGET_DATATROVE_RATIO,
            "kept_ours": tag.ours_stats["documents_kept"], "kept_datatrove": datatrove.peer_stats["documents_kept"],
            "gopher_agreement_datatrove": round(dt_found["gopher_agreement"], 5),
            "gopher_removed_datatrove": dt_found["gopher_removed_datatrove"],
            "documents": n, "workers": report["workers"]}


def main() -> None:
    args, num_documents, command = parse_arguments("corpus.py", __doc__.split("\n\n")[0], engines=True)
    if args.engine == "ray":
        sys.path.insert(0, str(REPO))  # run as a script, this folder is on the path, not the repository
        from benchmarks.corpus_ray import compare_engines  # it imports this module

        compare_engines(args, num_documents, command)
        return

    dolma, datatrove = ensure_dolma(), ensure_datatrove()
    with work_directory("corpus-bench-", args.keep) as work:
        documents, counts = write_input(work, num_documents, args.seed)
        kinds = {row["id"]: row["metadata"]["kind"] for row in rows(documents)}
        load_before = os.getloadavg()[0]
        log("tagging: dolma, then ours")
        stages = {"tag": tagging(dolma, work, documents, args.workers)}
        log("tag + filter: datatrove")
        stages["datatrove"] = tagging_datatrove(datatrove, work, documents, args.workers, stages["tag"])
        log("dedup: dolma, then ours")
        stages["dedup"] = dedup(dolma, work, documents, args.workers, counts)
        log("dedup + apply: dolma's mix applying its dedupe attributes")
        stages["dedup_apply"] = dedup_apply(dolma, work, documents, args.workers, stages["dedup"])
        log("mix: dolma, then ours")
        stages["mix"] = mixing(dolma, work, documents, args.workers)
        log("mix with the Gopher rules: dolma")
        gopher_mix = gopher_mixing(dolma, work, documents, args.workers)
        load = (load_before, os.getloadavg()[0])
        log("comparing decisions")
        ours = ours_decisions(work, documents)
        found = agreement(work, documents, kinds, ours)
        found_datatrove = datatrove_agreement(datatrove, work, documents, kinds, args.workers, ours["gopher"])

    report = {"stages": stages, "agreement": found, "datatrove": found_datatrove, "documents": num_documents,
              "machine": machine(), "input": counts, "workers": args.workers, "load": load, "gopher_mix": gopher_mix,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    report["figures"] = json_line(report)
    append_results("corpus", results_block(command, report))
    print(json.dumps(report["figures"]))


if __name__ == "__main__":
    main()
