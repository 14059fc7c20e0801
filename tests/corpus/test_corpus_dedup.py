"""Bloom filter sizing and accuracy; URL, exact and paragraph dedup across sources; determinism and resume."""
import json
import math
import random

import numpy as np
import pytest

from steps.common.documents import list_shards, read_documents, write_jsonl_gz
from steps.corpus import dedup
from olmo_model.config import ConfigError
from steps.corpus.decontamination import long_paragraphs
from steps.corpus.dedup import BloomFilter, DedupConfig, bloom_size, deduplicate, item_digests
from steps.common.tasks import load_task


def add(bloom, digests):
    """Add a batch of items the way the dedup stage does; return which were new."""
    new = bloom.new_items(digests)
    bloom.set_bits(digests[new], bloom.unset_bits(digests[new]))
    return new


def test_bloom_size_formula():
    bits, hashes = bloom_size(20_000, 1e-2)
    assert bits == math.ceil(-20_000 * math.log(1e-2) / math.log(2) ** 2) == 191_702
    assert hashes == math.ceil(bits / 20_000 * math.log(2)) == 7
    assert bloom_size(60_000_000_000, 1e-6)[1] == 20  # Dolma's setting
    with pytest.raises(ValueError):
        bloom_size(10, 1.5)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        bloom_size(10**18, 1e-6)


def test_bloom_file_holds_ceil_bits_over_8_bytes(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 1_000, 1e-6)
    assert bloom.bits % 8 != 0
    assert (tmp_path / "f.bloom").stat().st_size == math.ceil(bloom.bits / 8)
    params = json.loads((tmp_path / "f.bloom.json").read_text())
    assert (params["bits"], params["hashes"]) == bloom_size(1_000, 1e-6)


def test_positions_are_exact_double_hashing_without_overflow(tmp_path):
    bloom = BloomFilter(tmp_path / "f.bloom", bits=64, hashes=20, mode="w+")
    bloom.bits = 2**62 + 11  # positions only: h1 + i * h2 would overflow 64 bits without reduction
    digests = np.array([[2**64 - 1, 2**64 - 2], [12345, 2**63 + 1], [0, 0]], dtype=np.uint64)
    for row, (h1, h2) in zip(bloom.positions(digests).tolist(), digests.tolist()):
        assert row == [(h1 + i * (h2 | 1)) % bloom.bits for i in range(20)]


def test_bloom_false_positive_rate_is_as_configured(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 20_000, 1e-2)
    members = item_digests([f"member-{i}" for i in range(20_000)], "paragraph")
    for start in range(0, 20_000, 1_000):
        add(bloom, members[start:start + 1_000])
    assert bloom.contains(members).all()  # never a false negative
    strangers = item_digests([f"stranger-{i}" for i in range(20_000)], "paragraph")
    assert 0.005 < bloom.contains(strangers).mean() < 0.02


def test_bloom_filter_is_a_reusable_file(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 100, 1e-6)
    item = item_digests(["paragraph"], "paragraph")
    assert add(bloom, item).tolist() == [True] and add(bloom, item).tolist() == [False]
    bloom.flush()
    reopened = BloomFilter.open(tmp_path / "f.bloom")
    assert reopened.contains(np.concatenate([item, item_digests(["other"], "paragraph")])).tolist() == [True, False]
    assert not reopened.contains(item_digests(["paragraph"], "url"))  # kinds never collide
    assert (reopened.bits, reopened.hashes) == (bloom.bits, bloom.hashes)


def test_an_overfull_filter_still_finds_every_repeat(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 500, 0.05)  # 10x overfull: many false positives
    rng = random.Random(0)
    items = [f"item-{rng.randrange(3_000)}" for _ in range(10_000)]
    digests = item_digests(items, "text")
    new = np.concatenate([add(bloom, digests[start:start + 700]) for start in range(0, len(items), 700)])
    seen = set()
    for item, is_new in zip(items, new.tolist()):
        assert not (is_new and item in seen)  # a repeat, in the same batch or an earlier one, is never new
        seen.add(item)
    assert new.sum() < len(seen)  # the filter is overfull: some first occurrences were taken for repeats


def test_clear_bits_undoes_set_bits(tmp_path):
    bloom = BloomFilter.create(tmp_path / "f.bloom", 1_000, 1e-3)
    add(bloom, item_digests([f"old-{i}" for i in range(300)], "url"))
    before = np.fromfile(tmp_path / "f.bloom", dtype=np.uint8)
    batch = item_digests([f"new-{i}" for i in range(300)] + [f"old-{i}" for i in range(10)], "url")
    unset = bloom.unset_bits(batch)
    bloom.set_bits(batch, unset)
    bloom.flush()
    assert not np.array_equal(np.fromfile(tmp_path / "f.bloom", dtype=np.uint8), before)
    bloom.clear_bits(batch, unset)
    bloom.flush()
    assert np.array_equal(np.fromfile(tmp_path / "f.bloom", dtype=np.uint8), before)


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


def test_first_occurrence_across_sources_is_kept(corpus, tmp_path):
    stats = deduplicate(corpus, tmp_path / "out", DedupConfig())
    assert kept_docs(tmp_path / "out", "a-books") == {
        "a1": "Shared paragraph one.\nShared paragraph two.", "a2": "A text that a-books also has."}
    assert kept_docs(tmp_path / "out", "b-web") == {"b4": "Fresh start.\nFresh end.", "b5": "Only in b1."}
    a, b = stats["sources"]["a-books"], stats["sources"]["b-web"]
    assert a == {"documents_in": 3, "removed_contaminated": 0, "documents_without_url": 1, "removed_url": 0, "removed_exact": 1,
                 "paragraphs_removed": 0, "documents_emptied": 0, "documents_kept": 2, "bytes_kept": 72}
    assert b == {"documents_in": 5, "removed_contaminated": 0, "documents_without_url": 0, "removed_url": 1, "removed_exact": 1,
                 "paragraphs_removed": 3, "documents_emptied": 1, "documents_kept": 2, "bytes_kept": 34}
    for s in (a, b):
        assert s["documents_in"] == (s["removed_contaminated"] + s["removed_url"] + s["removed_exact"]
                                     + s["documents_emptied"] + s["documents_kept"])
    assert stats["bloom"]["items"] > 0 and stats["bloom"]["hashes"] == 20
    assert not list((tmp_path / "out").glob(".bloom-*"))  # the scratch filter is gone


def test_documents_holding_a_long_paragraph_of_an_evaluation_set_are_removed_and_counted(corpus, tmp_path):
    copa = load_task("copa")
    leaked = next(p for q in copa for text in q.contexts + q.continuations for p in long_paragraphs(text, 5))
    write_jsonl_gz(corpus / "c-forum" / "c-00000.jsonl.gz", [
        doc("c1", f"Intro line.\n  {leaked}  \nOutro.", "https://x/c1"),  # a 5+ word COPA paragraph: removed
        doc("c2", f"{leaked} and more words after it.", "https://x/c2"),  # not the same paragraph: kept
        doc("c3", "Shared paragraph one.", "https://x/c3"),  # the URL of c1 is not seen: paragraph dedup as usual
    ])
    config = DedupConfig.from_dict({"decontaminate": ["copa"], "decontamination_min_words": 5})
    stats = deduplicate(corpus, tmp_path / "out", config, work_dir=tmp_path / "work" / "dedup")
    c = stats["sources"]["c-forum"]
    assert kept_docs(tmp_path / "out", "c-forum") == {"c2": f"{leaked} and more words after it."}
    assert (c["removed_contaminated"], c["documents_emptied"], c["documents_kept"]) == (1, 1, 1)
    assert stats["total"]["removed_contaminated"] == 1
    assert stats["decontamination"]["tasks"] == ["copa"] and stats["decontamination"]["paragraphs"] > 100
    plain = deduplicate(corpus, tmp_path / "plain", DedupConfig())
    assert plain["sources"]["c-forum"]["removed_contaminated"] == 0
    assert plain["sources"]["c-forum"]["documents_kept"] == 2
    with pytest.raises(ConfigError, match="dedup.decontaminate: unknown task 'nope'"):
        DedupConfig.from_dict({"decontaminate": ["nope"]})


def test_each_dedup_kind_can_be_switched_off(corpus, tmp_path):
    stats = deduplicate(corpus, tmp_path / "out", DedupConfig.from_dict({"url": False, "paragraph": False}))
    b = stats["sources"]["b-web"]
    assert (b["removed_url"], b["removed_exact"], b["paragraphs_removed"], b["documents_kept"]) == (0, 1, 0, 4)
    assert kept_docs(tmp_path / "out", "b-web")["b1"] == "Shared paragraph one.\nOnly in b1."


def test_paragraph_dedup_skips_code_sources_by_default(tmp_path):
    lines = "def f():\n    return None\n"
    write_jsonl_gz(tmp_path / "in" / "python-code" / "c.jsonl.gz", [doc("f", lines), doc("g", "# g\n" + lines)])
    stats = deduplicate(tmp_path / "in", tmp_path / "out", DedupConfig())
    assert stats["sources"]["python-code"]["paragraphs_removed"] == 0
    assert kept_docs(tmp_path / "out", "python-code")["g"] == "# g\n" + lines
    stats = deduplicate(tmp_path / "in", tmp_path / "all", DedupConfig.from_dict({"paragraph_sources": "*"}))
    assert stats["sources"]["python-code"]["paragraphs_removed"] == 2
    assert kept_docs(tmp_path / "all", "python-code")["g"] == "# g\n"


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
    stats = deduplicate(tmp_path / "in", tmp_path / "out", DedupConfig.from_dict({"url": False, "paragraph": False}))
    assert stats["total"]["removed_exact"] == removed > 1_500
    kept = {**kept_docs(tmp_path / "out", "a"), **kept_docs(tmp_path / "out", "b")}
    assert kept == {doc_id: text for text, doc_id in first_ids.items()}


def random_corpus(root, seed=0):
    """Three sources of three shards with repeated URLs, texts, paragraphs, blank lines and blank documents."""
    rng = random.Random(seed)
    pool = [f"paragraph {i} " + "word " * rng.randrange(1, 8) for i in range(300)]
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


def item_by_item(root, config):
    """The stage's semantics with exact Python sets, document by document: kept texts and stats per source."""
    seen, kept, stats = set(), {}, {}
    for source in sorted(p.name for p in root.iterdir()):
        kept[source], s = {}, dedup._empty_stats()
        for path in list_shards(root / source):
            for _, d in read_documents(path):
                s["documents_in"] += 1
                url, text = (d.get("metadata") or {}).get("url"), d["text"]
                if config.url and url is None:
                    s["documents_without_url"] += 1
                elif config.url:
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


@pytest.mark.parametrize("settings", [{}, {"url": False}, {"exact": False, "paragraph_sources": "*"}])
def test_shard_decisions_equal_item_by_item_decisions(tmp_path, settings):
    root = random_corpus(tmp_path / "in")
    config = DedupConfig.from_dict(settings)
    stats = deduplicate(root, tmp_path / "out", config)
    expected_kept, expected_stats = item_by_item(root, config)
    assert stats["sources"] == expected_stats
    assert {source: kept_docs(tmp_path / "out", source) for source in expected_kept} == expected_kept
    total = stats["total"]
    assert total["paragraphs_removed"] > 100 and total["removed_url"] + total["removed_exact"] > 20


def test_output_is_deterministic_whatever_the_number_of_workers(tmp_path):
    root = random_corpus(tmp_path / "in", seed=1)
    runs = [deduplicate(root, tmp_path / f"out{i}", DedupConfig(), num_workers=workers)
            for i, workers in enumerate((1, 1, 2))]
    assert runs[0] == runs[1] == runs[2]
    assert output_bytes(tmp_path / "out0") == output_bytes(tmp_path / "out1") == output_bytes(tmp_path / "out2")
    assert len(output_bytes(tmp_path / "out0")) == 9


class Crash(Exception):
    pass


def crash_on(monkeypatch, name, count, when="before", folder=None):
    """Make module function ``name`` raise on its ``count``-th call (for files under ``folder`` if given)."""
    original, calls = getattr(dedup, name), []

    def wrapped(path, *args):
        counted = folder is None or folder in path.parts
        calls.extend([path] if counted else [])
        crash = counted and len(calls) == count
        if crash and when == "before":
            raise Crash(path)
        result = original(path, *args)
        if crash:
            raise Crash(path)
        return result

    monkeypatch.setattr(dedup, name, wrapped)


def count_reads(monkeypatch):
    reads = []
    original = dedup._read_shard
    monkeypatch.setattr(dedup, "_read_shard", lambda job, config: reads.append(job.key) or original(job, config))
    return reads


@pytest.mark.parametrize("crash, workers", [
    (("_write_file", "before", "undo"), 1),  # while saving the undo log: no bit set yet
    (("_write_output", "before", None), 1),  # bits set, no output
    (("_write_file", "before", "done"), 1),  # output written, no marker
    (("_write_file", "after", "done"), 1),  # marker written, undo log not deleted
    (("_write_file", "before", "done"), 2),  # later shards may have set their bits already
    (("_write_file", "after", "done"), 2),
])
def test_rerun_after_a_crash_skips_finished_shards_and_matches_an_uninterrupted_run(
        tmp_path, monkeypatch, crash, workers):
    root = random_corpus(tmp_path / "in", seed=2)
    expected = deduplicate(root, tmp_path / "clean", DedupConfig())
    name, when, folder = crash
    with monkeypatch.context() as patch:
        crash_on(patch, name, 4, when, folder)  # in this process: the filter's, not the workers' side
        with pytest.raises(Crash):
            deduplicate(root, tmp_path / "out", DedupConfig(), work_dir=tmp_path / "work", num_workers=workers)
    finished = len(list((tmp_path / "work" / "done").rglob("*.json")))
    assert finished == (4 if when == "after" else 3)
    reads = count_reads(monkeypatch)
    assert deduplicate(root, tmp_path / "out", DedupConfig(), work_dir=tmp_path / "work") == expected
    assert len(reads) == 9 - finished
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")
    assert not list((tmp_path / "work" / "undo").rglob("*.npz"))
    reads.clear()
    assert deduplicate(root, tmp_path / "out", DedupConfig(), work_dir=tmp_path / "work") == expected
    assert reads == []  # a finished run reads nothing again


def test_reopening_a_work_dir_clears_the_bits_of_every_unfinished_shard(tmp_path):
    config = DedupConfig(expected_items=1_000)
    jobs = [dedup.ShardJob("s", tmp_path / f"{i}.jsonl.gz", f"{i:05d}") for i in range(3)]
    items = [item_digests([f"{i}-{j}" for j in range(200)], "paragraph") for i in range(3)]
    work = dedup._WorkFolder(tmp_path / "work", config, durable=True)
    seen = work.open_filter(jobs)
    work.add(jobs[0], seen, items[0])
    work.finish(jobs[0], seen, {"stats": {}, "items": 200})
    after_first = (tmp_path / "work" / "seen.bloom").read_bytes()
    work.add(jobs[1], seen, items[1])  # two shards in flight, as with several workers
    work.add(jobs[2], seen, items[2])
    seen.flush()
    assert (tmp_path / "work" / "seen.bloom").read_bytes() != after_first
    dedup._WorkFolder(tmp_path / "work", config, durable=True).open_filter(jobs)
    assert (tmp_path / "work" / "seen.bloom").read_bytes() == after_first
    assert not list((tmp_path / "work" / "undo").rglob("*.npz"))


def test_other_settings_in_the_work_dir_start_over(tmp_path, caplog):
    root = random_corpus(tmp_path / "in", seed=3)
    deduplicate(root, tmp_path / "out", DedupConfig.from_dict({"paragraph": False}), work_dir=tmp_path / "work")
    config = DedupConfig.from_dict({"expected_items": 5_000})
    expected = deduplicate(root, tmp_path / "clean", config)
    with caplog.at_level("WARNING"):
        stats = deduplicate(root, tmp_path / "out", config, work_dir=tmp_path / "work")
    assert "starting over" in caplog.text
    assert stats == expected
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")


def test_dedup_config_errors():
    with pytest.raises(ConfigError, match=r"dedup: unknown key\(s\) 'urls'"):
        DedupConfig.from_dict({"urls": True})
    with pytest.raises(ConfigError, match=r"dedup\.false_positive_rate"):
        DedupConfig.from_dict({"false_positive_rate": 0})
    with pytest.raises(ConfigError, match=r"dedup\.paragraph_sources"):
        DedupConfig.from_dict({"paragraph_sources": "code"})
