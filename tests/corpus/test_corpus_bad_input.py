"""Bad input is quarantined with its file and line (or, strict, raised), never crashes nor vanishes."""
import gzip
import json
import tracemalloc
import zlib

import pytest
import zstandard

from steps.common.documents import (
    BadRecord, DocumentFormatError, Quarantine, ShardWriter, list_shards, read_documents, read_records,
    write_jsonl_gz,
)


def line(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def good(n: int) -> bytes:
    return line(id=f"d{n}", text=f"document number {n}.", source="web")


def records(path, **kwargs):
    return [(location.line, record) for location, record in read_records(path, **kwargs)]


@pytest.mark.parametrize("raw, reason, expected", [
    (b'{"id": "a", "text": "unterminated}\n', "invalid_json", "column 21: Unterminated string"),
    (b'{"id": "a", "text": "x"} trailing\n', "invalid_json", "column 26: Extra data"),
    (b'{"id": "a", "n": ' + b"9" * 5000 + b"}\n", "invalid_json", "ValueError"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "invalid_json", "RecursionError"),
    (b'["id", "text"]\n', "not_an_object", "expected a JSON object, not an array"),
    (b'{"id": "a", "source": "web"}\n', "missing_text", "expected a field 'text'"),
    (b'{"id": "a", "text": ["x"]}\n', "text_not_string", "field 'text' to be a string, not an array"),
    (b'{"id": "a", "text": null}\n', "text_not_string", "not null"),
    (b'{"text": "no id here"}\n', "missing_id", "expected a field 'id'"),
    (b'{"id": 1.5, "text": "x"}\n', "id_not_string", "not a number"),
    (b'{"id": "a", "text": "caf\xe9"}\n', "invalid_utf8", "byte 0xe9 at byte offset 24"),
    (b'{"id": "a", "text": "half \\ud800 a pair"}\n', "invalid_utf8", "lone surrogate"),
    (b'{"id": "a", "text": ""}\n', "empty_text", "non-empty field 'text'"),
    (b'{"id": "a", "text": " \\n\\t "}\n', "empty_text", "non-empty field 'text'"),
])
def test_each_bad_line_becomes_a_bad_record_naming_file_line_and_what_was_expected(tmp_path, raw, reason, expected):
    path = tmp_path / "shard.jsonl"
    path.write_bytes(good(1) + raw + good(3))
    (first, doc1), (number, bad), (last, doc3) = records(path)
    assert (first, doc1["id"], last, doc3["id"]) == (1, "d1", 3, "d3")
    assert isinstance(bad, BadRecord) and number == 2 and bad.reason == reason
    assert expected in bad.expected
    assert bad.message.startswith(f"{path}:2: ")
    assert bad.raw == raw[:1024].rstrip(b"\n").decode("utf-8", errors="backslashreplace")


def test_integer_id_is_accepted_as_a_string_and_source_may_be_missing(tmp_path):
    path = tmp_path / "shard.jsonl"
    path.write_bytes(b'{"id": 7, "text": "seven"}\n')
    assert records(path) == [(1, {"id": "7", "text": "seven"})]


def test_good_records_around_bad_ones_keep_their_order_and_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl.gz"
    body = good(1) + b"not json\n" + b"\n   \n" + good(5) + b'{"id": "x", "text": " "}\n' + good(7) + b"{"
    path.write_bytes(gzip.compress(body))
    got = [(n, r["id"] if isinstance(r, dict) else r.reason) for n, r in records(path)]
    assert got == [(1, "d1"), (2, "invalid_json"), (5, "d5"), (6, "empty_text"), (7, "d7"), (8, "invalid_json")]


def test_a_truncated_gzip_shard_yields_the_records_before_the_break_then_says_where_it_broke(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    rows = [{"id": f"d{i}", "text": f"document {i} " + "word " * (i % 50), "source": "web"} for i in range(5_000)]
    write_jsonl_gz(path, rows)
    cut = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(cut)
    complete_lines = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    *docs, (number, bad) = records(path)
    assert 0 < len(docs) == complete_lines < len(rows)
    assert [doc for _, doc in docs] == rows[: len(docs)]
    assert [n for n, _ in docs] == list(range(1, len(docs) + 1))
    assert bad.reason == "truncated_shard" and number == len(docs) + 1
    assert f"{path}:{number}: shard is truncated or corrupt after line {len(docs)}: EOFError" in bad.message
    with pytest.raises(DocumentFormatError, match=rf"cut\.jsonl\.gz:{number}: shard is truncated"):
        list(read_documents(path))


def test_a_corrupt_gzip_shard_is_reported_not_raised(tmp_path):
    path = tmp_path / "corrupt.jsonl.gz"
    compressed = bytearray(gzip.compress(b"".join(good(i) for i in range(3000))))
    compressed[len(compressed) // 2: len(compressed) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(compressed))
    *_, (_, bad) = records(path)
    assert bad.reason == "truncated_shard" and "corrupt" in bad.expected


def test_a_100_mb_document_is_reported_too_large_without_being_held_in_memory(tmp_path):
    path = tmp_path / "huge.jsonl.gz"
    head = b'{"id": "big", "text": "'
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(good(1) + head)
        for _ in range(100):
            out.write(b"lorem ipsum " * (2**20 // 12) + b"abcd")
        out.write(b'"}\n' + good(3))
    size = len(head) + 100 * 2**20 + 2
    limit = 8 * 2**20
    tracemalloc.start()
    try:
        got = records(path, max_document_bytes=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20
    assert [n for n, _ in got] == [1, 2, 3] and got[0][1]["id"] == "d1" and got[2][1]["id"] == "d3"
    bad = got[1][1]
    assert bad.reason == "too_large"
    assert bad.message == f"{path}:2: document of {size} bytes exceeds max_document_bytes={limit}"
    assert bad.raw.startswith('{"id": "big", "text": "lorem ipsum') and len(bad.raw) == 1024


def test_a_line_of_exactly_max_document_bytes_is_a_document(tmp_path):
    path = tmp_path / "edge.jsonl"
    doc = good(1)[:-1]
    path.write_bytes(doc + b"\n" + doc)
    assert [type(r) for _, r in records(path, max_document_bytes=len(doc))] == [dict, dict]
    assert [r.reason for _, r in records(path, max_document_bytes=len(doc) - 1)] == ["too_large", "too_large"]


def test_jsonl_zst_shards_are_read_across_frames_and_a_cut_one_is_reported(tmp_path):
    path = tmp_path / "shard.jsonl.zst"
    first = zstandard.ZstdCompressor().compress(b"".join(good(i) for i in range(1, 3001)))
    second = zstandard.ZstdCompressor().compress(good(3001))
    path.write_bytes(first + second)
    got = records(path)
    assert [(n, r["id"]) for n, r in got] == [(i, f"d{i}") for i in range(1, 3002)]
    assert [d["id"] for _, d in read_documents(path)][-1] == "d3001"
    for cut in (6, len(second) - 20):  # python-zstandard itself is silent on the first, lax on the second
        path.write_bytes(first + second[:cut])
        *docs, (number, bad) = records(path)
        assert len(docs) == 3000 and number == 3001 and bad.reason == "truncated_shard"
        assert "ends inside a frame" in bad.expected


def test_shards_are_read_by_their_bytes_whatever_their_name_and_a_leading_bom_skipped(tmp_path):
    body = b"\xef\xbb\xbf" + good(1) + good(2)
    shards = {"gzip.jsonl": gzip.compress(body), "plain.jsonl.gz": body,
              "zstd.jsonl.gz": zstandard.ZstdCompressor().compress(body)}
    for name, data in shards.items():
        (tmp_path / name).write_bytes(data)
        assert [(n, d["id"]) for n, d in records(tmp_path / name)] == [(1, "d1"), (2, "d2")]
        assert [(location.line, d["id"]) for location, d in read_documents(tmp_path / name)] == [(1, "d1"), (2, "d2")]


def test_strict_quarantine_raises_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good(1) + b'{"id": "a"}\n')
    with Quarantine(tmp_path / "q.jsonl.gz", strict=True) as quarantine:
        with pytest.raises(DocumentFormatError, match=r"bad\.jsonl:2: expected a field 'text'$"):
            for _, record in read_records(path):
                if isinstance(record, BadRecord):
                    quarantine.add(record)
    assert not (tmp_path / "q.jsonl.gz").exists()


def test_quarantine_keeps_every_bad_record_with_file_line_and_reason_and_counts_add_up(tmp_path):
    shards = {
        "a.jsonl": good(1) + b"{oops\n" + good(3) + b'{"id": "e", "text": ""}\n',
        "b.jsonl": b'{"text": "no id"}\n' + b"\n" + good(6) + b"{oops\n",
    }
    for name, body in shards.items():
        (tmp_path / name).write_bytes(body)
    kept = []
    with Quarantine(tmp_path / "quarantine" / "rows.jsonl.gz") as quarantine:
        for name in shards:
            for _, record in read_records(tmp_path / name):
                if isinstance(record, BadRecord):
                    quarantine.add(record)
                else:
                    kept.append(record["id"])
    records_in = sum(1 for body in shards.values() for raw in body.splitlines() if raw.strip())
    assert records_in == len(kept) + quarantine.total == 7
    assert quarantine.counts == {"invalid_json": 2, "empty_text": 1, "missing_id": 1}
    with gzip.open(tmp_path / "quarantine" / "rows.jsonl.gz", "rt") as rows:
        found = [json.loads(row) for row in rows]
    assert [(row["file"], row["line"], row["reason"]) for row in found] == [
        (str(tmp_path / "a.jsonl"), 2, "invalid_json"), (str(tmp_path / "a.jsonl"), 4, "empty_text"),
        (str(tmp_path / "b.jsonl"), 1, "missing_id"), (str(tmp_path / "b.jsonl"), 4, "invalid_json"),
    ]
    assert found[0]["raw"] == "{oops" and found[0]["message"].startswith(f"{tmp_path / 'a.jsonl'}:2: expected")


def test_a_quarantine_with_nothing_bad_writes_no_file(tmp_path):
    with Quarantine(tmp_path / "q.jsonl.gz") as quarantine:
        assert quarantine.total == 0
    assert not (tmp_path / "q.jsonl.gz").exists()


def test_shard_writer_streams_rolls_over_and_never_leaves_a_half_shard(tmp_path):
    docs = [{"id": str(i), "text": "x" * 100, "source": "web"} for i in range(10)]
    with ShardWriter(tmp_path / "out", "part", max_shard_bytes=250) as writer:
        for doc in docs:
            writer.write(doc)
    assert [p.name for p in writer.paths] == [f"part-{i:05d}.jsonl.gz" for i in range(5)]
    assert [d for p in list_shards(tmp_path / "out") for _, d in read_documents(p)] == docs
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "crash", "part", max_shard_bytes=250) as writer:
        for doc in docs[:3]:
            writer.write(doc)
        raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "crash").iterdir()) == ["part-00000.jsonl.gz"]


def test_written_shards_are_byte_for_byte_deterministic(tmp_path):
    rows = [{"id": str(i), "text": f"text {i}", "source": "web"} for i in range(100)]
    write_jsonl_gz(tmp_path / "a" / "x.jsonl.gz", rows)
    write_jsonl_gz(tmp_path / "b" / "x.jsonl.gz", rows)
    assert (tmp_path / "a" / "x.jsonl.gz").read_bytes() == (tmp_path / "b" / "x.jsonl.gz").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_format_errors_cross_process_boundaries_intact():
    import pickle

    error = pickle.loads(pickle.dumps(DocumentFormatError("web/a.jsonl.gz", 7, "expected a JSON object")))
    assert str(error) == "web/a.jsonl.gz:7: expected a JSON object" and (error.path, error.line) == ("web/a.jsonl.gz", 7)
