"""The run report: every stage's numbers as one markdown file (no Tango; inputs are artifact summaries)."""
from __future__ import annotations

from typing import Any, Mapping

from steps.corpus.accounts import corpus_accounts
from steps.report.evaluation_tables import downstream_section, evaluation_table, heldout_section
from steps.report.markdown import in_stage_order, table
from steps.report.variants import Variant, variants_section

ACCOUNT_COLUMNS = ("records_in", "quarantined", "removed_by_filter", "removed_by_dedup", "kept", "bytes_in",
                   "bytes_kept", "pii_spans_masked", "c4_lines_removed", "toxic_sentences_removed", "paragraphs_removed",
                   "truncated_shards", "unreadable_bytes", "duplicate_ids")


def quarantine_section(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The source steps' quarantined records by reason (a row per reason, a column per source), if any."""
    by_source = {s.get("source", name.removeprefix("source_")): s.get("quarantined", {}) for name, s in sources.items()}
    reasons = sorted({reason for counts in by_source.values() for reason, n in counts.items() if n})
    if not reasons:
        return ["", "No input record was quarantined."]
    rows = [[reason, *(counts.get(reason, 0) for counts in by_source.values())] for reason in reasons]
    rows.append(["total", *(sum(counts.values()) for counts in by_source.values())])
    return ["", "### Quarantined input records", "",
            "Each kept in `quarantine/<source>/` of its source step's result, with its file, line and message. "
            "A `truncated_shard` is one record for the whole damaged end of a shard: the records read before the "
            "damage are kept, those in its compressed bytes that decode to no record (`unreadable_bytes`) are lost.", "",
            table(["reason", *by_source], rows)]


def corpus_section(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Where every input record of each source went, then each stage's counts and what each rule removed."""
    sources = {name: s for name, s in summaries.items() if name.startswith("source_")}
    stages = {name: summaries[name]["sources"] for name in ("filter", "dedup", "mix") if name in summaries}
    parts = ["## Corpus", ""]
    if "filter" in summaries and "dedup" in summaries:
        accounts = corpus_accounts(sources, summaries["filter"], summaries["dedup"])
        parts += ["records in = quarantined + removed by filter + removed by dedup + kept, for every source. "
                  "unreadable_bytes: compressed bytes of truncated shards that decode to no record; duplicate_ids: "
                  "kept records whose id the source already had (ids are kept as given).", "",
                  table(["source", *ACCOUNT_COLUMNS], ([name, *(a[c] for c in ACCOUNT_COLUMNS)]
                                                       for name, a in accounts.items()))]
    if sources:
        parts += quarantine_section(sources)
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


def figure(plots: Mapping[str, str], name: str) -> list[str]:
    """The markdown image linking plot ``name`` (relative to report.md), if it was drawn."""
    return ["", f"![{plots[name]}]({name})"] if name in plots else []


def training_section(summaries: Mapping[str, Mapping[str, Any]], plots: Mapping[str, str]) -> str:
    summaries = in_stage_order(summaries)
    rows = [
        [name, s.get("step"), s.get("tokens_seen"), s.get("loss_first"), s.get("loss_last"), s.get("lr_first"), s.get("lr_last")]
        for name, s in summaries.items()
    ]
    parts = ["## Training", "", table(["stage", "steps", "tokens seen", "first loss", "last loss", "first lr", "last lr"], rows)]
    parts += figure(plots, "loss_curve.png")
    curve = summaries.get("pretrain", {}).get("loss_curve")
    if curve:
        parts += ["", "Pretraining loss: " + ", ".join(f"{int(step)}: {loss:.3f}" for step, loss in curve[:: max(1, len(curve) // 10)])]
    dpo = summaries.get("dpo", {})
    if "rewards/accuracies" in dpo:
        parts += ["", f"DPO, last step: reward accuracy {dpo['rewards/accuracies']:.3f}, margin {dpo['rewards/margins']:.4f} (β = {dpo['beta']})."]
    in_loop = figure(plots, "in_loop_accuracy.png") + figure(plots, "in_loop_bits_per_byte.png")
    parts += ["", "### In-loop evaluation (pretraining and anneal, over tokens seen)"]
    parts += in_loop or ["", "No in-loop evaluation in this run (the workflow's `in_loop_eval`)."]
    return "\n".join(parts)


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
    plots: Mapping[str, str] | None = None,
    variants: Mapping[str, Variant] | None = None,
) -> str:
    """The report's markdown; ``plots`` (``{file name: caption}``, files beside report.md) are linked where they belong,
    ``variants`` (an ablation's) get a side-by-side table."""
    plots = plots or {}
    parts = [
        f"# {title}",
        "",
        "## Evaluation (zero-shot, primary metric of the OLMo paper, % with 95% interval)",
        "",
        evaluation_table(evaluations),
        *figure(plots, "downstream_by_model.png"),
        "",
        heldout_section(evaluations),
        "",
        downstream_section(evaluations),
    ]
    if variants:
        parts += ["", variants_section(variants)]
    parts += [
        "",
        corpus_section(corpus),
        "",
        data_section(corpus.get("tokenize", {}), corpus.get("instances", {}), batch),
        "",
        training_section(training, plots),
    ]
    if export:
        parts += ["", "## Export", "", f"{export['format']}: {', '.join(export['files'])}"]
    parts += ["", fingerprint_section(fingerprints), ""]
    return "\n".join(parts)
