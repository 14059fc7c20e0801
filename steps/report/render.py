"""The run report: every stage's numbers as one markdown file (no Tango; inputs are artifact summaries)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from steps.corpus.accounts import corpus_accounts

# Zero-shot results of the released models (HF model cards, 9 core tasks), in percent.
PAPER_RESULTS = {
    "OLMo-1B": {"arc_challenge": 34.5, "arc_easy": 58.1, "boolq": 60.7, "copa": 79.0, "hellaswag": 62.5,
                "openbookqa": 46.4, "piqa": 73.7, "sciq": 88.1, "winogrande": 58.9},
    "OLMo-7B": {"arc_challenge": 48.5, "arc_easy": 65.4, "boolq": 73.4, "copa": 90.0, "hellaswag": 76.4,
                "openbookqa": 50.2, "piqa": 78.4, "sciq": 93.8, "winogrande": 67.9},
}


STAGE_ORDER = ("pretrain", "anneal", "base", "sft", "dpo")


def in_stage_order(summaries: Mapping[str, Any]) -> dict[str, Any]:
    """Stages in pipeline order (pretrain, anneal/base, sft, dpo), any others after them by name."""
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    return {name: summaries[name] for name in sorted(summaries, key=lambda n: (rank.get(n, len(rank)), n))}


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


ACCOUNT_COLUMNS = ("records_in", "quarantined", "removed_by_filter", "removed_by_dedup", "kept", "bytes_in",
                   "bytes_kept", "pii_spans_masked", "c4_lines_removed", "toxic_sentences_removed", "paragraphs_removed")


def corpus_section(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Where every input record of each source went, then each stage's counts and what each rule removed."""
    sources = {name: s for name, s in summaries.items() if name.startswith("source_")}
    stages = {name: summaries[name]["sources"] for name in ("filter", "dedup", "mix") if name in summaries}
    parts = ["## Corpus", ""]
    if "filter" in summaries and "dedup" in summaries:
        accounts = corpus_accounts(sources, summaries["filter"], summaries["dedup"])
        parts += ["records in = quarantined + removed by filter + removed by dedup + kept, for every source.", "",
                  table(["source", *ACCOUNT_COLUMNS], ([name, *(a[c] for c in ACCOUNT_COLUMNS)]
                                                       for name, a in accounts.items()))]
    for stage, by_source in stages.items():
        keys = sorted({key for stats in by_source.values() for key, v in stats.items() if not isinstance(v, dict)})
        parts += ["", f"### {stage}", "", table(["source", *keys], ([src, *(st.get(k) for k in keys)] for src, st in by_source.items()))]
        nested = sorted({key for stats in by_source.values() for key, v in stats.items() if isinstance(v, dict)})
        for key in nested:
            rules = sorted({rule for stats in by_source.values() for rule, n in stats.get(key, {}).items() if n})
            if rules:
                rows = ([rule, *(by_source[src].get(key, {}).get(rule, 0) for src in by_source)] for rule in rules)
                parts += ["", f"{stage} · {key} (rules that counted any document)", "", table(["rule", *by_source], rows)]
    return "\n".join(parts)


def data_section(tokenize: Mapping[str, Any], instances: Mapping[str, Any], batch: Mapping[str, Any] | None) -> str:
    rows = [
        ["documents tokenized", tokenize.get("total_documents")],
        ["blank documents skipped", tokenize.get("total_empty_documents")],
        ["tokens (EOS appended)", tokenize.get("total_tokens")],
        ["token dtype", tokenize.get("dtype")],
        ["sequence length", instances.get("seq_len")],
        ["instances", instances.get("num_instances")],
        ["tokens dropped (file tails)", instances.get("dropped_tokens")],
    ]
    parts = ["## Tokens and instances", "", table(["", "value"], rows)]
    if batch:
        parts += [
            "",
            f"Training batch {batch['step']} (epoch {batch['epoch']}): instances {batch['instances']}, "
            f"batch hash `{batch['batch_hash'][:16]}…`, {len(batch['documents'])} documents.",
        ]
    return "\n".join(parts)


def training_section(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    summaries = in_stage_order(summaries)
    rows = [
        [name, s.get("step"), s.get("tokens_seen"), s.get("loss_first"), s.get("loss_last"), s.get("lr_first"), s.get("lr_last")]
        for name, s in summaries.items()
    ]
    parts = ["## Training", "", table(["stage", "steps", "tokens seen", "first loss", "last loss", "first lr", "last lr"], rows)]
    curve = summaries.get("pretrain", {}).get("loss_curve")
    if curve:
        parts += ["", "Pretraining loss: " + ", ".join(f"{int(step)}: {loss:.3f}" for step, loss in curve[:: max(1, len(curve) // 10)])]
    dpo = summaries.get("dpo", {})
    if "rewards/accuracies" in dpo:
        parts += ["", f"DPO, last step: reward accuracy {dpo['rewards/accuracies']:.3f}, margin {dpo['rewards/margins']:.4f} (β = {dpo['beta']})."]
    return "\n".join(parts)


def evaluation_table(evaluations: Mapping[str, Mapping[str, Any]]) -> str:
    """Primary accuracy per task (percent) for each evaluated model, with the paper's models beside them."""
    evaluations = in_stage_order(evaluations)
    tasks = sorted({task for summary in evaluations.values() for task in summary["tasks"]})
    metric = {task: next(s["tasks"][task]["primary_metric"] for s in evaluations.values() if task in s["tasks"]) for task in tasks}
    rows = []
    for task in tasks:
        ours = [100 * s["tasks"][task]["primary"] if task in s["tasks"] else None for s in evaluations.values()]
        rows.append([task, metric[task], *ours, *(PAPER_RESULTS[m].get(task) for m in PAPER_RESULTS)])
    averages = [100 * s["average"] for s in evaluations.values()]
    paper = [sum(r[t] for t in tasks if t in r) / max(1, sum(t in r for t in tasks)) for r in PAPER_RESULTS.values()]
    rows.append(["**average**", "", *averages, *paper])
    rows.append(["bits per byte (held out)", "", *(s["bits_per_byte"] for s in evaluations.values()), None, None])
    return table(["task", "metric", *evaluations, *PAPER_RESULTS], rows)


def fingerprint_section(fingerprints: Mapping[str, str]) -> str:
    return "\n".join(["## Fingerprints", "", table(["step", "fingerprint"], sorted(fingerprints.items()))])


def render_report(
    title: str,
    corpus: Mapping[str, Mapping[str, Any]],
    training: Mapping[str, Mapping[str, Any]],
    evaluations: Mapping[str, Mapping[str, Any]],
    batch: Mapping[str, Any] | None,
    export: Mapping[str, Any] | None,
    fingerprints: Mapping[str, str],
) -> str:
    parts = [
        f"# {title}",
        "",
        "## Evaluation (zero-shot, primary metric of the OLMo paper, %)",
        "",
        evaluation_table(evaluations),
        "",
        corpus_section(corpus),
        "",
        data_section(corpus.get("tokenize", {}), corpus.get("instances", {}), batch),
        "",
        training_section(training),
    ]
    if export:
        parts += ["", "## Export", "", f"{export['format']}: {', '.join(export['files'])}"]
    parts += ["", fingerprint_section(fingerprints), ""]
    return "\n".join(parts)
