"""Where every input record of a source went: quarantined, removed by a filter rule, removed by
dedup, or kept. The counts come from the stages' summaries and must add up exactly.

Beside them, what a count of records cannot show: ``unreadable_bytes``, the compressed bytes of truncated
or corrupt shards that decode to no record (each such shard is one ``truncated_shard`` record; the records
in its unreadable bytes are lost and their number cannot be known), and ``duplicate_ids``, the kept records
whose id an earlier record of the source already had (ids are kept as given)."""
from __future__ import annotations

from typing import Any, Mapping

DEDUP_REMOVALS = ("removed_contaminated", "removed_url", "removed_exact", "documents_emptied")
# The stats of a stage that saw no document of a source (it had no shard of it).
NO_FILTER_STATS = {"documents_in": 0, "documents_kept": 0, "removed_by_rule": {}, "pii_spans_masked": 0,
                   "c4_lines_removed": 0, "toxic_sentences_removed": 0}
NO_DEDUP_STATS = {"documents_in": 0, "documents_kept": 0, "bytes_kept": 0, "paragraphs_removed": 0,
                  **dict.fromkeys(DEDUP_REMOVALS, 0)}


class AccountsError(ValueError):
    """The stages' counts of a source do not agree."""


def source_account(source: Mapping[str, Any], filtered: Mapping[str, Any], deduped: Mapping[str, Any]) -> dict[str, Any]:
    """One source's account from its source, filter and dedup stats; raises :class:`AccountsError`
    unless ``records_in == quarantined + removed_by_filter + removed_by_dedup + kept``."""
    name = source["source"]
    handoffs = (("source documents", source["documents"], "filter documents_in", filtered["documents_in"]),
                ("filter documents_kept", filtered["documents_kept"], "dedup documents_in", deduped["documents_in"]))
    for left, left_count, right, right_count in handoffs:
        if left_count != right_count:
            raise AccountsError(f"source {name!r}: {left} = {left_count} but {right} = {right_count}")
    account = {
        "records_in": source["records_in"],
        "bytes_in": source["bytes"],
        "quarantined": sum(source["quarantined"].values()),
        "removed_by_filter": sum(filtered["removed_by_rule"].values()),
        "removed_by_dedup": sum(deduped[key] for key in DEDUP_REMOVALS),
        "kept": deduped["documents_kept"],
        "bytes_kept": deduped["bytes_kept"],
        "pii_spans_masked": filtered["pii_spans_masked"],
        "c4_lines_removed": filtered["c4_lines_removed"],
        "toxic_sentences_removed": filtered["toxic_sentences_removed"],
        "paragraphs_removed": deduped["paragraphs_removed"],
        "truncated_shards": source["quarantined"].get("truncated_shard", 0),
        "unreadable_bytes": source.get("unreadable_bytes", 0),
        "duplicate_ids": source.get("duplicate_ids", 0),
    }
    accounted = sum(account[key] for key in ("quarantined", "removed_by_filter", "removed_by_dedup", "kept"))
    if accounted != account["records_in"]:
        raise AccountsError(f"source {name!r}: {account['records_in']} records in, but {accounted} accounted for "
                            f"(quarantined + removed by filter + removed by dedup + kept)")
    return account


def corpus_accounts(
    sources: Mapping[str, Mapping[str, Any]], filter_summary: Mapping[str, Any], dedup_summary: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``{source name: account}`` for the summaries of the source steps, the filter and the dedup step."""
    return {
        summary["source"]: source_account(
            summary,
            filter_summary["sources"].get(summary["source"], NO_FILTER_STATS),
            dedup_summary["sources"].get(summary["source"], NO_DEDUP_STATS),
        )
        for summary in sources.values()
    }
