"""Corpus sources: the offline embedded corpus, fsspec shards, local Hugging Face datasets."""
import gzip
import json
from collections import Counter

import fsspec
import pytest

from steps.common.documents import DocumentFormatError, list_shards, read_documents, write_jsonl_gz
from steps.corpus import embedded
from olmo_model.config import ConfigError
from steps.corpus.sources import iter_source_documents, source_fingerprint, validate_source, write_source
from steps.common.engine import LocalEngine


def docs_source(n=25, **extra):
    return {"name": "python-docs", "type": "embedded", "kind": "python-docs", "max_documents": n, **extra}


def test_python_docs_are_real_english_offline():
    docs = list(iter_source_documents(validate_source(docs_source(40))))
    assert len(docs) >= 20
    words = Counter(w.lower() for doc in docs for w in doc["text"].split())
    assert words["the"] > 100 and words["of"] > 30 and words["is"] > 30
    for doc in docs:
        assert doc["id"].startswith("python-docs/") and "/" not in doc["id"][len("python-docs/"):]
        assert doc["source"] == "python-docs"
        assert doc["metadata"]["url"] == "python://" + doc["id"][len("python-docs/"):]
        assert doc["text"].strip()


def test_embedded_selection_is_first_n_sorted_and_capped():
    capped = validate_source(docs_source(60, max_chars_per_document=200))
    ids = [d["id"] for d in iter_source_documents(capped)]
    assert ids == sorted(ids)
    first = [d["id"] for d in iter_source_documents(validate_source(docs_source(10)))]
    assert first == ids[: len(first)]
    assert all(len(d["text"]) <= 200 for d in iter_source_documents(capped))


def test_python_code_package_metadata_and_system_docs():
    code = list(iter_source_documents(validate_source({"name": "stdlib-code", "type": "embedded",
                                                       "kind": "python-code", "max_documents": 5})))
    assert len(code) == 5 and all("import" in d["text"] or "def " in d["text"] for d in code)
    assert code[0]["metadata"]["url"].startswith("python-source://")
    packages = list(iter_source_documents(validate_source({"name": "pkgs", "type": "embedded",
                                                           "kind": "package-metadata"})))
    assert any(d["id"] == "package-metadata/numpy" and d["metadata"]["url"] == "pypi://numpy" for d in packages)
    system = list(iter_source_documents(validate_source({"name": "sys", "type": "embedded", "kind": "system-docs",
                                                         "max_documents": 3})))
    assert len(system) <= 3  # /usr/share/doc may be empty on a slim machine


def test_embedded_fingerprint_is_stable_and_follows_the_selection():
    assert source_fingerprint(docs_source(15)) == source_fingerprint(docs_source(15))
    assert source_fingerprint(docs_source(15)) != source_fingerprint(docs_source(16))
    assert source_fingerprint(docs_source(15)) != source_fingerprint(docs_source(15, max_chars_per_document=99))


def test_system_docs_skip_and_count_bad_files(tmp_path, monkeypatch):
    doc_root, licenses = tmp_path / "doc", tmp_path / "licenses"
    (doc_root / "pkg").mkdir(parents=True)
    licenses.mkdir()
    (doc_root / "pkg" / "README").write_text("A readme for the package.\n")
    (doc_root / "pkg" / "changelog.Debian.gz").write_bytes(gzip.compress(b"pkg (1.0) unstable; urgency=low\n"))
    (doc_root / "pkg" / "notes.txt").write_bytes(b"caf\xe9 latin-1\n")  # not UTF-8
    (doc_root / "pkg" / "README.md").write_text("  \n")  # empty
    (doc_root / "pkg" / "logo.png").write_bytes(b"\x89PNG")  # not a doc name
    (licenses / "MIT").write_text("Permission is hereby granted, free of charge.\n")
    monkeypatch.setattr(embedded, "SYSTEM_DOC_ROOTS", (("doc", doc_root), ("common-licenses", licenses)))
    spec = validate_source({"name": "sys", "type": "embedded", "kind": "system-docs"})

    stats = write_source(spec, tmp_path / "out")
    assert stats["documents"] == 3 and stats["skipped"] == {"empty": 1, "not_utf8": 1}
    docs = [doc for shard in list_shards(tmp_path / "out" / "documents" / "sys") for _, doc in read_documents(shard)]
    assert [d["id"] for d in docs] == ["system-docs/common-licenses/MIT", "system-docs/doc/pkg/README",
                                       "system-docs/doc/pkg/changelog.Debian.gz"]
    assert docs[2]["text"].startswith("pkg (1.0)")
    assert docs[1]["metadata"]["url"] == (doc_root / "pkg" / "README").as_uri()

    before = source_fingerprint(spec)
    (doc_root / "pkg" / "README").write_text("A changed readme.\n")
    assert source_fingerprint(spec) != before


def test_files_source_fingerprint_follows_content(tmp_path):
    shard = tmp_path / "a" / "part-0.jsonl"
    shard.parent.mkdir()
    shard.write_text(json.dumps({"id": "1", "text": "hello there.", "source": "web"}) + "\n")
    spec = {"name": "crawl", "type": "files", "paths": [str(tmp_path / "a" / "*.jsonl")]}
    first = source_fingerprint(spec)
    assert source_fingerprint(spec) == first

    moved = tmp_path / "b" / "part-0.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(shard.read_bytes())
    assert source_fingerprint({**spec, "paths": [str(moved)]}) == first  # content, not location

    shard.write_text(json.dumps({"id": "1", "text": "hello there!", "source": "web"}) + "\n")
    assert source_fingerprint(spec) != first


def test_files_source_sets_source_and_keeps_the_original(tmp_path):
    write_jsonl_gz(tmp_path / "s" / "x-0.jsonl.gz", [
        {"id": "1", "text": "one.", "source": "cc", "metadata": {"url": "http://a"}},
        {"id": "2", "text": "two.", "source": "crawl"},
    ])
    spec = validate_source({"name": "crawl", "type": "files", "paths": [str(tmp_path / "s")]})
    docs = list(iter_source_documents(spec))
    assert [d["source"] for d in docs] == ["crawl", "crawl"]
    assert docs[0]["metadata"] == {"url": "http://a", "original_source": "cc"}
    assert "metadata" not in docs[1]


def test_files_source_over_a_remote_filesystem():
    fs = fsspec.filesystem("memory")
    with fs.open("/corpus/web-0.jsonl", "w") as handle:
        handle.write(json.dumps({"id": "r1", "text": "remote text.", "source": "web"}) + "\n")
    spec = validate_source({"name": "web", "type": "files", "paths": ["memory://corpus/*.jsonl"]})
    assert [d["id"] for d in iter_source_documents(spec)] == ["r1"]
    assert source_fingerprint(spec) == source_fingerprint(spec)


def _bad_shard(path):
    good = json.dumps({"id": "1", "text": "ok.", "source": "w"})
    lines = [good, "{not json", json.dumps({"id": "2", "text": 3}), good.replace('"1"', '"3"'),
             json.dumps({"id": "4", "text": "fine.", "metadata": "not an object"})]
    path.write_text("\n".join(lines) + "\n")


def test_files_source_quarantines_bad_records_with_file_and_line(tmp_path):
    _bad_shard(tmp_path / "bad.jsonl")
    spec = validate_source({"name": "w", "type": "files", "paths": [str(tmp_path / "bad.jsonl")]})
    stats = write_source(spec, tmp_path / "out")
    assert stats["records_in"] == 5 and stats["documents"] == 2
    assert stats["quarantined"] == {"invalid_json": 1, "text_not_string": 1, "metadata_not_object": 1}
    assert stats["records_in"] == stats["documents"] + sum(stats["quarantined"].values())
    rows = [json.loads(line) for shard in list_shards(tmp_path / "out" / "quarantine")
            for line in gzip.open(shard, "rt")]
    assert [(row["line"], row["reason"]) for row in rows] == [(2, "invalid_json"), (3, "text_not_string"),
                                                              (5, "metadata_not_object")]
    assert all(row["file"].endswith("bad.jsonl") for row in rows)
    assert [d["id"] for d in iter_source_documents(spec)] == ["1", "3"]


def test_strict_files_source_fails_naming_the_file_and_line(tmp_path):
    _bad_shard(tmp_path / "bad.jsonl")
    spec = validate_source({"name": "w", "type": "files", "paths": [str(tmp_path / "bad.jsonl")], "strict": True})
    with pytest.raises(DocumentFormatError, match=r"bad\.jsonl:2: expected a JSON object"):
        write_source(spec, tmp_path / "out")


def test_files_source_runs_shards_in_parallel_and_resumes(tmp_path):
    for index in range(3):
        write_jsonl_gz(tmp_path / "in" / f"s{index}.jsonl.gz",
                       [{"id": f"{index}-{i}", "text": f"document {i} of shard {index}."} for i in range(20)])
    spec = validate_source({"name": "web", "type": "files", "paths": [str(tmp_path / "in")]})
    one = write_source(spec, tmp_path / "one", max_shard_bytes=200)
    two = write_source(spec, tmp_path / "two", max_shard_bytes=200, engine=LocalEngine(2), markers=tmp_path / "done")
    assert one == two and one["inputs"] == 3 and one["documents"] == 60

    def contents(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jsonl.gz"))}

    assert contents(tmp_path / "one") == contents(tmp_path / "two")
    (tmp_path / "done" / "web" / "00001.json").unlink()  # as if the run died while on the second shard
    stale = tmp_path / "two" / "documents" / "web" / "web-00001-00009.jsonl.gz"
    stale.write_bytes(b"half a shard")
    again = write_source(spec, tmp_path / "two", max_shard_bytes=200, markers=tmp_path / "done")
    assert again == one and not stale.exists()
    assert contents(tmp_path / "two") == contents(tmp_path / "one")


def test_missing_files_are_reported_by_path_index(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"paths\[0\]"):
        source_fingerprint({"name": "w", "type": "files", "paths": [str(tmp_path / "missing-*.jsonl")]})


def test_huggingface_local_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"content": ["First text.", "", "Third text."], "key": ["a", "b", "c"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    spec = {"name": "hf", "type": "huggingface", "dataset": str(tmp_path / "ds"), "text_field": "content",
            "id_field": "key"}
    docs = list(iter_source_documents(validate_source(spec)))
    assert [(d["id"], d["text"], d["source"]) for d in docs] == [("a", "First text.", "hf"), ("c", "Third text.", "hf")]
    stats = write_source(validate_source(spec), tmp_path / "out")
    assert stats["records_in"] == 3 and stats["quarantined"] == {"empty_text": 1}
    assert source_fingerprint(spec) == source_fingerprint(spec)
    assert source_fingerprint(spec) != source_fingerprint({**spec, "max_documents": 1})
    assert [d["id"] for d in iter_source_documents(validate_source({**spec, "max_documents": 1}))] == ["a"]
    with pytest.raises(ConfigError, match="'validation' not in"):
        list(iter_source_documents(validate_source({**spec, "split": "validation"})))


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "x", "type": "web"}, r"source 'x'\.type: expected one of embedded, files, huggingface"),
        ({"name": "x", "type": "embedded", "kind": "poems"}, r"source 'x'\.kind: expected one of 'python-docs'"),
        ({"name": "x", "type": "embedded", "kind": "python-docs", "max_docs": 3}, r"unknown key\(s\) 'max_docs'"),
        ({"name": "x", "type": "embedded"}, r"missing required key\(s\) 'kind'"),
        ({"name": "x", "type": "files", "paths": "a.jsonl"}, r"source 'x'\.paths: expected a list \(a string each\)"),
        ({"name": "a/b", "type": "files", "paths": ["a"]}, r"source\.name: expected a folder-safe name"),
        ({"name": "x", "type": "embedded", "kind": "python-docs", "max_documents": 0}, r"max_documents"),
    ],
)
def test_validate_source_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        validate_source(spec)


def test_unreachable_remote_source_gets_an_unverified_fingerprint(monkeypatch):
    from steps.corpus import sources

    def offline(spec):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(sources, "_expand_paths", offline)
    remote = {"name": "web", "type": "files", "paths": ["s3://bucket/web/*.jsonl.gz"]}
    moved = {**remote, "paths": ["s3://bucket/other/*.jsonl.gz"]}
    assert sources.source_fingerprint(remote) == sources.source_fingerprint(remote)
    assert sources.source_fingerprint(remote) != sources.source_fingerprint(moved)
    with pytest.raises(ConnectionError):  # local paths never fall back: their content must be hashed
        sources.source_fingerprint({"name": "local", "type": "files", "paths": ["/tmp/x/*.jsonl.gz"]})


def test_a_large_input_shard_is_copied_with_bounded_memory(tmp_path):
    import tracemalloc

    text = "A sentence of the large input shard, repeated to make the document longer. " * 40
    lines = (json.dumps({"id": str(i), "text": f"{i} {text}"}) + "\n" for i in range(8000))
    with gzip.open(tmp_path / "big.jsonl.gz", "wt", compresslevel=1) as handle:
        handle.writelines(lines)  # about 24 MB of text in one input shard
    spec = validate_source({"name": "web", "type": "files", "paths": [str(tmp_path / "big.jsonl.gz")]})
    tracemalloc.start()
    stats = write_source(spec, tmp_path / "out", max_shard_bytes=2**20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stats["documents"] == 8000 and stats["bytes"] > 24_000_000
    assert len(list_shards(tmp_path / "out" / "documents" / "web")) >= 23  # split into 1 MiB shards
    assert peak < 8 * 2**20  # streamed: memory follows the output shard size, not the input


def test_a_missing_fsspec_backend_says_how_to_install_it(monkeypatch):
    from steps.corpus import sources

    def no_backend(url):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(sources.fsspec.core, "url_to_fs", no_backend)
    spec = validate_source({"name": "cc", "type": "files", "paths": ["s3://bucket/cc/*.jsonl.gz"]})
    with pytest.raises(ImportError, match=r"source 'cc'\.paths\[0\]: s3://bucket.*pip install -e '\.\[cloud\]'"):
        list(sources.iter_source_documents(spec))
