"""URL, exact and paragraph dedup across sources, partitioned by key hash: decisions against a brute-force
reference, bytes independent of the partition count and engine, decontamination, resume after a crash."""
import gzip
import random

import numpy as np
import pytest

from olmo_model.config import ConfigError
from steps.common.documents import list_shards, read_documents, write_jsonl_gz
from steps.common.engine import LocalEngine
from steps.common.tasks import load_task
from steps.corpus import dedup
from steps.corpus.decontamination import is_long, long_paragraphs, task_paragraphs
from steps.corpus.dedup import DedupConfig, deduplicate
from steps.corpus.dedup_jobs import HashJob, contains, digest_set, first_occurrences, item_digests, load_array


def test_first_occurrences_keeps_the_first_of_equal_digests_in_array_order():
    digests = np.array([[5, 1], [5, 2], [5, 1], [0, 2], [5, 2], [0, 2]], dtype=np.uint64)  # equal high halves
    assert first_occurrences(digests).tolist() == [True, True, False, True, False, False]


def test_membership_compares_all_128_bits():
    members = digest_set(np.array([[1, 2], [3, 4], [1, 2]], dtype=np.uint64))
    assert len(members) == 2
    queries = np.array([[1, 2], [1, 4], [3, 2], [3, 4]], dtype=np.uint64)
    assert contains(members, queries).tolist() == [True, False, False, True]
    assert not contains(members, item_digests(["x"], "url")).any()
    assert not np.array_equal(item_digests(["p"], "url"), item_digests(["p"], "paragraph"))  # kinds never collide


def doc(doc_id, text, url=None):
    return {"id": doc_id, "text": text, "source": "s", **({"metadata": {"url": url}} if url else {})}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "in"
    write_jsonl_gz(root / "b-web" / "b-00000.jsonl.gz", [
        doc("b1", "Shared paragraph one.\nOnly in b1.", "https://x/1"),  # URL seen in a-books: removed
        doc("b2", "A text that a-books also has.", "https://x/b2"),  # exact copy: removed
        doc("b3", "Shared paragraph two.\n\nShared paragraph one.", "https://x/b3"),  # every paragraph seen
        doc("b4", "Fresh start.\nShared paragraph two.\nFresh end.", "https://x/b4"),
        doc("b5", "Only in b1.", "https://x/b5"),  # b1 was removed by its URL: its paragraphs were not seen
    ])
    write_jsonl_gz(root / "a-books" / "a-00000.jsonl.gz", [
        doc("a1", "Shared paragraph one.\nShared paragraph two.", "https://x/1"),
        doc("a2", "A text that a-books also has."),
    ])
    write_jsonl_gz(root / "a-books" / "a-00001.jsonl.gz", [
        doc("a3", "A text that a-books also has.", "https://x/a3"),  # exact copy of a2 (earlier shard)
    ])
    return root


def kept_docs(out, source):
    return {d["id"]: d["text"] for path in list_shards(out / "documents" / source) for _, d in read_documents(path)}


def output_bytes(out):
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted((out / "documents").rglob("*"))
            if path.is_file()}


def balanced(stats):
    return stats["documents_in"] == (stats["removed_contaminated"] + stats["removed_url"] + stats["removed_exact"]
                                     + stats["documents_emptied"] + stats["documents_kept"])


def test_first_occurrence_across_sources_is_kept(corpus, tmp_path):
    stats = deduplicate(corpus, tmp_path / "out", DedupConfig())
    assert kept_docs(tmp_path / "out", "a-books") == {
        "a1": "Shared paragraph one.\nShared paragraph two.", "a2": "A text that a-books also has."}
    assert kept_docs(tmp_path / "out", "b-web") == {"b4": "Fresh start.\nFresh end.", "b5": "Only in b1."}
    a, b = stats["sources"]["a-books"], stats["sources"]["b-web"]
    assert a == {"documents_in": 3, "removed_contaminated": 0, "documents_without_url": 1, "removed_url": 0,
                 "removed_exact": 1, "paragraphs_removed": 0, "documents_emptied": 0, "documents_kept": 2,
                 "bytes_kept": 72}
    assert b == {"documents_in": 5, "removed_contaminated": 0, "documents_without_url": 0, "removed_url": 1,
                 "removed_exact": 1, "paragraphs_removed": 3, "documents_emptied": 1, "documents_kept": 2,
                 "bytes_kept": 34}
    assert balanced(a) and balanced(b)
    # URLs of every document; texts of those not removed by URL; paragraphs of those not removed either
    assert stats["distinct_items"] == {"url": 6, "text": 5, "paragraph": 6}
    assert not list((tmp_path / "out").glob(".dedup-*"))  # the scratch folder is gone


def test_documents_kept_whole_keep_their_line_and_the_others_are_written_as_every_stage_writes(corpus, tmp_path):
    (corpus / "c-raw").mkdir()
    (corpus / "c-raw" / "c.jsonl").write_text('{"text": "Kept whole.",  "id": "c1", "source": "s"}\n\n'
                                              '{"text": "Fresh.\\nShared paragraph one.", "id": "c2", "source": "s"}\n')
    deduplicate(corpus, tmp_path / "out", DedupConfig())
    written = output_bytes(tmp_path / "out")["documents/c-raw/c.jsonl.gz"]
    assert gzip.decompress(written).decode().splitlines() == [
        '{"text": "Kept whole.",  "id": "c1", "source": "s"}',
        '{"id": "c2", "source": "s", "text": "Fresh."}']


def test_documents_holding_a_long_paragraph_of_an_evaluation_set_are_removed_and_counted(corpus, tmp_path):
    copa = load_task("copa")
    leaked = next(p for q in copa for text in q.contexts + q.continuations for p in long_paragraphs(text, 5))
    write_jsonl_gz(corpus / "c-forum" / "c-00000.jsonl.gz", [
        doc("c1", f"Intro line.\n  {leaked}  \nOutro.", "https://x/c1"),  # a 5+ word COPA paragraph: removed
        doc("c2", f"{leaked} and more words after it.", "https://x/c2"),  # not the same paragraph: kept
        doc("c3", "Intro line.", "https://x/c3"),  # c1 added nothing: its paragraph "Intro line." is new here
    ])
    config = DedupConfig.from_dict({"decontaminate": ["copa"], "decontamination_min_words": 5})
    stats = deduplicate(corpus, tmp_path / "out", config, work_dir=tmp_path / "work" / "dedup")
    c = stats["sources"]["c-forum"]
    assert kept_docs(tmp_path / "out", "c-forum") == {"c2": f"{leaked} and more words after it.", "c3": "Intro line."}
    assert (c["removed_contaminated"], c["documents_emptied"], c["documents_kept"]) == (1, 0, 2) and balanced(c)
    assert stats["total"]["removed_contaminated"] == 1
    assert stats["decontamination"]["tasks"] == ["copa"] and stats["decontamination"]["paragraphs"] > 100
    plain = deduplicate(corpus, tmp_path / "plain", DedupConfig())
    assert plain["sources"]["c-forum"]["removed_contaminated"] == 0
    assert kept_docs(tmp_path / "plain", "c-forum").keys() == {"c1", "c2"}  # c3 repeats c1's first line
    with pytest.raises(ConfigError, match="dedup.decontaminate: unknown task 'nope'"):
        DedupConfig.from_dict({"decontaminate": ["nope"]})


def test_each_dedup_kind_can_be_switched_off(corpus, tmp_path):
    stats = deduplicate(corpus, tmp_path / "out", DedupConfig.from_dict({"url": False, "paragraph": False}))
    b = stats["sources"]["b-web"]
    assert (b["removed_url"], b["removed_exact"], b["paragraphs_removed"], b["documents_kept"]) == (0, 1, 0, 4)
    assert kept_docs(tmp_path / "out", "b-web")["b1"] == "Shared paragraph one.\nOnly in b1."
    assert stats["distinct_items"].keys() == {"text"}


def test_paragraph_dedup_skips_code_sources_by_default(tmp_path):
    lines = "def f():\n    return None\n"
    write_jsonl_gz(tmp_path / "in" / "python-code" / "c.jsonl.gz", [doc("f", lines), doc("g", "# g\n" + lines)])
    stats = deduplicate(tmp_path / "in", tmp_path / "out", DedupConfig())
    assert stats["sources"]["python-code"]["paragraphs_removed"] == 0
    assert kept_docs(tmp_path / "out", "python-code")["g"] == "# g\n" + lines
    stats = deduplicate(tmp_path / "in", tmp_path / "all", DedupConfig.from_dict({"paragraph_sources": "*"}))
    assert stats["sources"]["python-code"]["paragraphs_removed"] == 2
    assert kept_docs(tmp_path / "all", "python-code")["g"] == "# g\n"


def random_corpus(root, seed=0, leaked=()):
    """Three sources of three shards with repeated URLs, texts and paragraphs across shards and sources, missing
    URLs, blank lines, blank documents, a code source, and now and then a ``leaked`` paragraph."""
    rng = random.Random(seed)
    pool = [f"paragraph {i} " + "word " * rng.randrange(1, 8) for i in range(300)] + list(leaked)
    made = []
    for source in ("a-web", "b-books", "c-code"):
        for shard in range(3):
            rows = []
            for i in range(60):
                lines = [rng.choice(pool) if rng.random() < 0.8 else "  " for _ in range(rng.randrange(1, 6))]
                text = rng.choice(made) if made and rng.random() < 0.1 else "\n".join(lines)
                text = " \n\t" if rng.random() < 0.02 else text
                url = f"https://u/{rng.randrange(400)}" if rng.random() < 0.9 else None
                rows.append(doc(f"{source}-{shard}-{i}", text, url))
                made.append(text)
            write_jsonl_gz(root / source / f"{source}-{shard:05d}.jsonl.gz", rows)
    return root


def reference(root, config):
    """The stage's semantics with Python sets, document by document in global order: kept texts, stats."""
    evaluation = set(task_paragraphs(config.decontaminate, config.decontamination_min_words))
    seen, kept, stats = set(), {}, {}
    for source in sorted(p.name for p in root.iterdir()):
        kept[source], s = {}, dedup._empty_stats()
        for path in list_shards(root / source):
            for _, d in read_documents(path):
                s["documents_in"] += 1
                url, text = (d.get("metadata") or {}).get("url"), d["text"]
                s["documents_without_url"] += config.url and url is None  # contaminated or not
                if any(is_long(line.strip(), config.decontamination_min_words) and line.strip() in evaluation
                       for line in text.split("\n")):
                    s["removed_contaminated"] += 1
                    continue
                if config.url and url is not None:
                    if ("url", url) in seen:
                        s["removed_url"] += 1
                        continue
                    seen.add(("url", url))
                if config.exact:
                    if ("text", text) in seen:
                        s["removed_exact"] += 1
                        continue
                    seen.add(("text", text))
                if config.dedups_paragraphs(source):
                    lines = []
                    for line in text.split("\n"):
                        key = ("paragraph", line.strip())
                        if line.strip() and key in seen:
                            s["paragraphs_removed"] += 1
                        else:
                            lines.append(line)
                            seen.add(key)
                    text = "\n".join(lines)
                    if not text.strip():
                        s["documents_emptied"] += 1
                        continue
                kept[source][d["id"]] = text
        s["documents_kept"] = len(kept[source])
        s["bytes_kept"] = sum(len(text.encode("utf-8")) for text in kept[source].values())
        stats[source] = s
    return kept, stats


LEAKED = tuple(p for q in load_task("copa")[:40] for text in q.contexts for p in long_paragraphs(text, 4))


@pytest.mark.parametrize("seed, settings", [
    (0, {}),
    (1, {"url": False}),
    (2, {"exact": False, "paragraph_sources": "*"}),
    (3, {"decontaminate": ["copa"], "decontamination_min_words": 4}),
])
def test_decisions_equal_a_brute_force_reference_for_any_partition_count(tmp_path, seed, settings):
    root = random_corpus(tmp_path / "in", seed, LEAKED)
    config = DedupConfig.from_dict(settings)
    expected_kept, expected_stats = reference(root, config)
    runs = []
    for partitions in (1, 2, 3, 7):
        out = tmp_path / f"out{partitions}"
        runs.append((deduplicate(root, out, config, partitions=partitions), output_bytes(out)))
        assert {source: kept_docs(out, source) for source in expected_kept} == expected_kept
    stats, written = runs[0]
    assert stats["sources"] == expected_stats and all(balanced(s) for s in expected_stats.values())
    assert all(run == runs[0] for run in runs[1:])  # stats and bytes
    total = stats["total"]
    assert total["paragraphs_removed"] > 100 and total["removed_url"] + total["removed_exact"] > 20
    assert total["removed_contaminated"] > 5 if settings.get("decontaminate") else total["removed_contaminated"] == 0


def test_every_exact_repeat_is_removed_and_the_first_kept(tmp_path):
    rng = random.Random(1)
    texts = [f"document number {i}\nwith a second line" for i in range(1_000)]
    first_ids, removed = {}, 0
    for source in ("a", "b"):
        for shard in range(3):
            rows = [doc(f"{source}{shard}-{i}", rng.choice(texts)) for i in range(500)]
            write_jsonl_gz(tmp_path / "in" / source / f"{shard:05d}.jsonl.gz", rows)
            for row in rows:
                removed += row["text"] in first_ids
                first_ids.setdefault(row["text"], row["id"])
    stats = deduplicate(tmp_path / "in", tmp_path / "out", DedupConfig.from_dict({"url": False, "paragraph": False}),
                        partitions=4)
    assert stats["total"]["removed_exact"] == removed > 1_500
    kept = {**kept_docs(tmp_path / "out", "a"), **kept_docs(tmp_path / "out", "b")}
    assert kept == {doc_id: text for text, doc_id in first_ids.items()}


def test_output_is_the_same_on_one_process_or_two(tmp_path):
    root = random_corpus(tmp_path / "in", seed=4)
    one = deduplicate(root, tmp_path / "one", DedupConfig(), engine=LocalEngine(1))
    two = deduplicate(root, tmp_path / "two", DedupConfig(), engine=LocalEngine(2))  # partitions: 2 by default
    assert one == two
    assert output_bytes(tmp_path / "one") == output_bytes(tmp_path / "two")
    assert len(output_bytes(tmp_path / "one")) == 9


def test_a_partition_job_holds_only_its_keys(tmp_path):
    root = random_corpus(tmp_path / "in", seed=5)
    deduplicate(root, tmp_path / "out", DedupConfig(), work_dir=tmp_path / "work", partitions=3)
    run = dedup.DedupRun(tmp_path / "work", 3, DedupConfig().kinds)
    for key in run.shard_keys():
        for kind in run.kinds:
            everything = load_array(run.items(key, kind))
            parts = [run.partition_items(key, kind, p) for p in range(3)]
            assert sum(len(part) for part in parts) == len(everything)
            for p, part in enumerate(parts):
                assert (part["digest"][:, 0] % 3 == p).all()
                assert (np.diff(part["doc"].astype(np.int64) * 100 + part["line"]) > 0).all()  # document order


PHASES = {"hash": "hash_shard", "url": "decide_partition", "text": "decide_partition",
          "paragraph": "decide_partition", "write": "write_shard"}


def count_jobs(monkeypatch):
    """Record the phase and key of every job run (in this process: LocalEngine(1))."""
    calls = []
    for name in set(PHASES.values()):
        original = getattr(dedup, name)

        def counted(job, original=original):
            calls.append((getattr(job, "kind", None) or ("hash" if isinstance(job, HashJob) else "write"), job.key))
            return original(job)

        monkeypatch.setattr(dedup, name, counted)
    return calls


@pytest.mark.parametrize("phase, when", [
    ("hash", "before"), ("url", "after"), ("text", "before"), ("paragraph", "after"), ("write", "before"),
    ("write", "after"),
])
def test_a_rerun_after_a_failed_job_redoes_only_unfinished_jobs_and_writes_the_same_bytes(
        tmp_path, monkeypatch, phase, when):
    root = random_corpus(tmp_path / "in", seed=6)
    config, partitions = DedupConfig(), 3
    expected = deduplicate(root, tmp_path / "clean", config, partitions=partitions)
    name, original, calls = PHASES[phase], getattr(dedup, PHASES[phase]), []

    def failing(job):
        if phase in ("hash", "write") or job.kind == phase:
            calls.append(job.key)
            if len(calls) == 2:  # the second job of the phase fails, before or after writing its outputs
                if when == "after":
                    original(job)
                raise RuntimeError("worker died")
        return original(job)

    with monkeypatch.context() as patch:
        patch.setattr(dedup, name, failing)
        with pytest.raises(RuntimeError, match="worker died"):
            deduplicate(root, tmp_path / "out", config, tmp_path / "work", partitions=partitions)
    jobs = count_jobs(monkeypatch)
    assert deduplicate(root, tmp_path / "out", config, tmp_path / "work", partitions=partitions) == expected
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")
    phases = list(PHASES)
    for other in phases:
        ran = [key for ran_phase, key in jobs if ran_phase == other]
        total = 9 if other in ("hash", "write") else partitions
        done_before = total if phases.index(other) < phases.index(phase) else 1 if other == phase else 0
        assert len(ran) == total - done_before, other
    jobs.clear()
    assert deduplicate(root, tmp_path / "out", config, tmp_path / "work", partitions=partitions) == expected
    assert jobs == []  # a finished run runs no job again


def test_a_rerun_without_a_partition_count_keeps_the_unfinished_runs(tmp_path, monkeypatch, caplog):
    """The default count follows the engine's size, which may differ after a crash: the work done is kept."""
    root = random_corpus(tmp_path / "in", seed=8)
    expected = deduplicate(root, tmp_path / "clean", DedupConfig())

    def failing(job):
        raise RuntimeError("worker died")

    with monkeypatch.context() as patch:
        patch.setattr(dedup, "write_shard", failing)
        with pytest.raises(RuntimeError, match="worker died"):
            deduplicate(root, tmp_path / "out", DedupConfig(), tmp_path / "work", partitions=3)
    jobs = count_jobs(monkeypatch)
    with caplog.at_level("WARNING"):
        assert deduplicate(root, tmp_path / "out", DedupConfig(), tmp_path / "work", LocalEngine(1)) == expected
    assert "starting over" not in caplog.text
    assert {phase for phase, _ in jobs} == {"write"}  # not one hash or partition job again
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")


def test_a_work_dir_of_other_settings_starts_over(tmp_path, caplog):
    root = random_corpus(tmp_path / "in", seed=7)
    deduplicate(root, tmp_path / "out", DedupConfig.from_dict({"paragraph": False}), tmp_path / "work", partitions=2)
    expected = deduplicate(root, tmp_path / "clean", DedupConfig())
    for partitions in (2, 3):  # another config, then another partition count
        with caplog.at_level("WARNING"):
            stats = deduplicate(root, tmp_path / "out", DedupConfig(), tmp_path / "work", partitions=partitions)
        assert "starting over" in caplog.text
        caplog.clear()
        assert stats == expected
        assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")


def test_dedup_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"dedup: unknown key\(s\) 'urls'"):
        DedupConfig.from_dict({"urls": True})
    with pytest.raises(ConfigError, match=r"dedup\.paragraph_sources"):
        DedupConfig.from_dict({"paragraph_sources": "code"})
    with pytest.raises(ValueError, match="partitions must be >= 1, got 0"):
        deduplicate(tmp_path, tmp_path / "out", DedupConfig(), partitions=0)
