import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from steps.common.documents import read_documents
from steps.data.tokenize import SUMMARY_FILE, token_dtype, tokenize_documents
from steps.data.tokenizer import olmo_tokenizers_dir
from steps.common.engine import LocalEngine

OLMO_EOS = 50279


def provenance_rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def all_output_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "max_id, dtype", [(0, "uint16"), (50279, "uint16"), (65535, "uint16"), (65536, "uint32"), (2**32 - 1, "uint32")]
)
def test_dtype_is_the_narrowest_that_holds_every_id(max_id, dtype):
    assert token_dtype(max_id) == dtype


def test_dtype_rejects_ids_beyond_uint32():
    with pytest.raises(ValueError, match="does not fit"):
        token_dtype(2**32)


def test_summary_lists_every_shard_with_its_counts(tokenized, corpus):
    output, summary = tokenized
    assert [f["path"] for f in summary["files"]] == [
        "tokens/web/part-00000.npy",
        "tokens/web/part-00001.npy",
        "tokens/wiki/part-00000.npy",
        "tokens/wiki/part-00001.npy",
    ]
    assert summary["dtype"] == "uint16" and {f["dtype"] for f in summary["files"]} == {"uint16"}
    assert summary["total_documents"] == len(corpus[1]) == sum(f["documents"] for f in summary["files"])
    assert summary["total_tokens"] == sum(f["tokens"] for f in summary["files"])
    assert json.loads((output / SUMMARY_FILE).read_text()) == summary


def test_token_files_are_raw_memmaps_without_header(tokenized):
    output, summary = tokenized
    for f in summary["files"]:
        raw = (output / f["path"]).read_bytes()
        assert len(raw) == f["tokens"] * 2
        assert not raw.startswith(b"\x93NUMPY")
        tokens = np.memmap(output / f["path"], dtype=np.uint16, mode="r")
        assert tokens[-1] == OLMO_EOS


def test_provenance_points_back_to_the_documents(tokenized, corpus, olmo_tokenizer):
    output, summary = tokenized
    documents_dir, _ = corpus
    for f in summary["files"]:
        tokens = np.memmap(output / f["path"], dtype=np.uint16, mode="r")
        rows = provenance_rows(output / f["provenance"])
        source_docs = list(read_documents(documents_dir / f["source_shard"]))
        assert len(rows) == f["documents"] == len(source_docs)
        previous_end = 0
        for (start, end, doc_id, src, loc, source), (location, doc) in zip(rows, source_docs):
            start, end = int(start), int(end)
            assert start == previous_end and end > start
            assert tokens[end - 1] == OLMO_EOS and OLMO_EOS not in tokens[start : end - 1]
            assert olmo_tokenizer.decode(tokens[start : end - 1].tolist()) == doc["text"]
            assert (doc_id, src, int(loc), source) == (doc["id"], f["source_shard"], location.line, doc["source"])
            previous_end = end
        assert previous_end == f["tokens"]


def test_worker_count_does_not_change_the_output(corpus, olmo_tokenizer_file, tmp_path):
    for workers in (1, 2):
        tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path / str(workers), OLMO_EOS, engine=LocalEngine(workers))
    one, two = all_output_bytes(tmp_path / "1"), all_output_bytes(tmp_path / "2")
    assert len(one) > 3 and one == two


def test_batch_size_does_not_change_the_output(tokenized, corpus, olmo_tokenizer_file, tmp_path):
    tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path, OLMO_EOS, batch_size=1000)
    assert all_output_bytes(tmp_path) == all_output_bytes(tokenized[0])


def test_finished_shards_are_skipped_on_rerun(corpus, olmo_tokenizer_file, tmp_path):
    first = tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path, OLMO_EOS)
    token_files = {f["path"]: tmp_path / f["path"] for f in first["files"]}
    written = {path: p.stat().st_mtime_ns for path, p in token_files.items()}
    (tmp_path / "done/wiki/part-00001.json").unlink()  # as if the run died before finishing this shard

    second = tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path, OLMO_EOS)
    assert second == first
    rewritten = {path for path, p in token_files.items() if p.stat().st_mtime_ns != written[path]}
    assert rewritten == {"tokens/wiki/part-00001.npy"}


def test_done_marker_with_other_settings_is_not_trusted(corpus, olmo_tokenizer_file, tmp_path):
    tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path, OLMO_EOS)
    changed = tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path, eos_token_id=0)
    tokens = np.memmap(tmp_path / changed["files"][0]["path"], dtype=np.uint16, mode="r")
    assert tokens[-1] == 0


def test_vocabulary_beyond_uint16_writes_uint32(corpus, tmp_path):
    dolma2 = olmo_tokenizers_dir() / "allenai_dolma2.json"  # 100,278 ids, EOS 100257
    summary = tokenize_documents(corpus[0], dolma2, tmp_path, eos_token_id=100257)
    assert summary["dtype"] == "uint32"
    f = summary["files"][0]
    assert (tmp_path / f["path"]).stat().st_size == f["tokens"] * 4
    assert np.fromfile(tmp_path / f["path"], dtype="<u4")[-1] == 100257


def test_directory_without_shards_is_an_error(tmp_path, olmo_tokenizer_file):
    with pytest.raises(ValueError, match="no document shards"):
        tokenize_documents(tmp_path, olmo_tokenizer_file, tmp_path / "out", OLMO_EOS)


def test_eos_outside_the_vocabulary_is_an_error(corpus, tmp_path, olmo_tokenizer_file):
    with pytest.raises(ValueError, match="eos_token_id 70000 is outside"):
        tokenize_documents(corpus[0], olmo_tokenizer_file, tmp_path, 70000)


def test_bad_document_names_file_and_line(tmp_path, olmo_tokenizer_file):
    shard = tmp_path / "docs/web/part-00000.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text('{"id": "a", "text": "fine", "source": "web"}\n{"id": "b", "source": "web"}\n')
    with pytest.raises(ValueError, match=r"part-00000.jsonl:2: document lacks field\(s\) text"):
        tokenize_documents(tmp_path / "docs", olmo_tokenizer_file, tmp_path / "out", OLMO_EOS)


def test_texts_are_stripped_and_blank_documents_skipped_and_counted(tmp_path, olmo_tokenizer_file, olmo_tokenizer):
    shard = tmp_path / "docs/web/part-00000.jsonl"
    shard.parent.mkdir(parents=True)
    rows = [{"id": "a", "text": "  Hello world.\n\n"}, {"id": "blank", "text": " \n\t "}, {"id": "b", "text": "Bye."}]
    shard.write_text("".join(json.dumps({**row, "source": "web"}) + "\n" for row in rows))
    summary = tokenize_documents(tmp_path / "docs", olmo_tokenizer_file, tmp_path / "out", OLMO_EOS)

    assert (summary["total_documents"], summary["total_empty_documents"]) == (2, 1)
    f = summary["files"][0]
    tokens = np.fromfile(tmp_path / "out" / f["path"], dtype="<u2").tolist()
    expected = [*olmo_tokenizer.encode("Hello world.").ids, OLMO_EOS, *olmo_tokenizer.encode("Bye.").ids, OLMO_EOS]
    assert tokens == expected
    ids_and_lines = [(row[2], row[4]) for row in provenance_rows(tmp_path / "out" / f["provenance"])]
    assert ids_and_lines == [("a", "1"), ("b", "3")]


def test_a_text_ending_in_the_eos_token_gets_no_second_eos_as_in_dolma(tmp_path, olmo_tokenizer_file, olmo_tokenizer):
    shard = tmp_path / "docs/web/part-00000.jsonl"
    shard.parent.mkdir(parents=True)
    rows = [{"id": "ends", "text": "Hello world.<|endoftext|>"}, {"id": "inside", "text": "A<|endoftext|>B."},
            {"id": "plain", "text": "Bye."}]
    shard.write_text("".join(json.dumps({**row, "source": "web"}) + "\n" for row in rows))
    summary = tokenize_documents(tmp_path / "docs", olmo_tokenizer_file, tmp_path / "out", OLMO_EOS)

    f = summary["files"][0]
    tokens = np.fromfile(tmp_path / "out" / f["path"], dtype="<u2").tolist()
    hello, inside = olmo_tokenizer.encode("Hello world.").ids, olmo_tokenizer.encode("A<|endoftext|>B.").ids
    assert olmo_tokenizer.encode(rows[0]["text"]).ids == [*hello, OLMO_EOS]  # the literal is the EOS token
    assert tokens == [*hello, OLMO_EOS, *inside, OLMO_EOS, *olmo_tokenizer.encode("Bye.").ids, OLMO_EOS]
    spans = [(int(row[0]), int(row[1])) for row in provenance_rows(tmp_path / "out" / f["provenance"])]
    assert spans[0] == (0, len(hello) + 1) and all(tokens[end - 1] == OLMO_EOS for _, end in spans)
    assert summary["total_tokens"] == len(tokens)
