"""Every input record of every source is accounted for: quarantined, removed by a rule, a duplicate, or kept."""
import gzip
import json

import pytest

from steps.common.documents import write_jsonl_gz
from steps.corpus.accounts import AccountsError, corpus_accounts
from steps.corpus.dedup import DedupConfig, deduplicate
from steps.corpus.filter import filter_documents
from steps.corpus.sources import validate_source, write_source
from steps.corpus.tag import tag_documents
from steps.corpus.taggers import FilterConfig, TagConfig
from steps.report.render import corpus_section

PROSE = ("The committee met on a quiet morning to review the plans for the new library. Members of the board "
         "agreed that the building should have more light, and that the reading rooms must be open to everyone "
         "in the town. After a long discussion they asked the architect to return with a revised design that "
         "would keep the old facade while adding a modern wing for the children of the town.")


def prose(i: int) -> str:
    return f"Report number {i} of the series was written with care.\n{PROSE}\nIt was approved by vote {i}."


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("accounts")
    lines = [json.dumps({"id": f"w{i}", "text": prose(i), "metadata": {"url": f"https://a.org/{i}"}}) for i in range(30)]
    lines += [
        json.dumps({"id": "dup-text", "text": prose(3)}),                        # exact duplicate of w3
        json.dumps({"id": "dup-url", "text": prose(99), "metadata": {"url": "https://a.org/4"}}),
        json.dumps({"id": "short", "text": "Too short to keep."}),             # Gopher: fewer than 50 words
        json.dumps({"id": "pii", "text": prose(7).replace("care.", "care. Mail a@b.org, c@d.org, e@f.org, "
                                                                   "g@h.org, i@j.org and k@l.org.")}),
        "{broken json",
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "blank", "text": "   "}),
    ]
    (root / "web").mkdir()
    (root / "web" / "a.jsonl").write_text("\n".join(lines) + "\n")
    with open(root / "web" / "b.jsonl.gz", "wb") as handle:  # a shard cut short
        handle.write(gzip.compress("\n".join(lines[:10]).encode())[:-20])
    write_jsonl_gz(root / "wiki" / "c.jsonl.gz", [{"id": f"k{i}", "text": prose(i)} for i in range(12)])

    summaries = {}
    for name in ("web", "wiki"):
        spec = validate_source({"name": name, "type": "files", "paths": [str(root / name)]})
        summaries[f"source_{name}"] = write_source(spec, root / "sources") | {"source": name}
    tag_config = TagConfig.from_dict({"language": {"enabled": False}, "toxicity": {"enabled": False}})
    tag_documents(root / "sources" / "documents", root / "tag", tag_config)
    filtered = filter_documents(root / "sources" / "documents", root / "tag" / "attributes", root / "filter",
                                FilterConfig())
    deduped = deduplicate(root / "filter" / "documents", root / "dedup", DedupConfig())
    return {**summaries, "filter": filtered, "dedup": deduped}


def test_every_record_is_accounted_for(pipeline):
    accounts = corpus_accounts({k: v for k, v in pipeline.items() if k.startswith("source_")},
                               pipeline["filter"], pipeline["dedup"])
    web, wiki = accounts["web"], accounts["wiki"]
    assert web["quarantined"] == 4  # broken json, no text, blank text, the truncated gzip's tail
    assert web["records_in"] == web["quarantined"] + web["removed_by_filter"] + web["removed_by_dedup"] + web["kept"]
    assert web["removed_by_filter"] == 2  # short, too much PII
    # w3 and w4 again (exact text, URL), and the readable head of b.jsonl.gz repeats a.jsonl's first documents
    assert web["removed_by_dedup"] >= 2
    # web comes first (sources in name order) and already holds every wiki text: all 12 are duplicates
    assert wiki["records_in"] == 12 and wiki["removed_by_dedup"] == 12 and wiki["kept"] == 0


def test_report_shows_the_accounts(pipeline):
    section = corpus_section(pipeline)
    assert "| source | records_in | quarantined | removed_by_filter | removed_by_dedup | kept |" in section
    assert "| web |" in section and "| wiki |" in section


def test_counts_that_do_not_add_up_are_an_error(pipeline):
    sources = {k: v for k, v in pipeline.items() if k.startswith("source_")}
    tampered = {**sources, "source_web": {**sources["source_web"], "records_in": sources["source_web"]["records_in"] + 1}}
    with pytest.raises(AccountsError, match="'web': .* records in, but .* accounted for"):
        corpus_accounts(tampered, pipeline["filter"], pipeline["dedup"])
    lost = {**pipeline["dedup"], "sources": {**pipeline["dedup"]["sources"],
                                             "wiki": {**pipeline["dedup"]["sources"]["wiki"], "documents_in": 3}}}
    with pytest.raises(AccountsError, match="filter documents_kept = 12 but dedup documents_in = 3"):
        corpus_accounts(sources, pipeline["filter"], lost)


def test_accounts_show_the_bytes_a_truncated_shard_lost_and_the_duplicate_ids(pipeline):
    accounts = corpus_accounts({k: v for k, v in pipeline.items() if k.startswith("source_")},
                               pipeline["filter"], pipeline["dedup"])
    web, wiki = accounts["web"], accounts["wiki"]
    # b.jsonl.gz: its readable head is kept, the compressed bytes after it are counted lost
    assert web["truncated_shards"] == 1 and 0 < web["unreadable_bytes"] < 200
    assert pipeline["source_web"]["records_recovered"] > 0
    # b.jsonl.gz repeats a.jsonl's first ids: kept (dedup removes what repeats by text), counted
    assert web["duplicate_ids"] == pipeline["source_web"]["records_recovered"]
    assert (wiki["truncated_shards"], wiki["unreadable_bytes"], wiki["duplicate_ids"]) == (0, 0, 0)


def test_report_shows_the_quarantined_records_by_reason_per_source(pipeline):
    section = corpus_section(pipeline)
    assert "| truncated_shards | unreadable_bytes | duplicate_ids |" in section.splitlines()[4]
    table = section[section.index("### Quarantined input records"):].split("\n\n")[2].splitlines()
    assert table[:2] == ["| reason | web | wiki |", "|---|---|---|"]
    assert table[2:] == ["| empty_text | 1 | 0 |", "| invalid_json | 1 | 0 |", "| missing_text | 1 | 0 |",
                         "| truncated_shard | 1 | 0 |", "| total | 4 | 0 |"]
