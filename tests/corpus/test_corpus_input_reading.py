"""Input shards of a files source: a BOM, compression told by magic bytes, truncated shards' records kept and
their lost bytes counted, duplicate ids counted, one summary line per source, one name per file."""
import gzip
import json
import logging
import re
import zlib

import fsspec
import pytest
import zstandard

from steps.common.compressed import compression_of
from steps.common.documents import DocumentFormatError, list_shards, read_documents, read_records
from steps.corpus.duplicate_ids import count_duplicates, id_digest, write_digests
from steps.corpus.sources import validate_source, write_source
from steps.common.engine import LocalEngine


def jsonl(ids, **extra) -> bytes:
    return b"".join(json.dumps({"id": i, "text": f"document {i}: " + "some words " * 5, **extra}).encode() + b"\n"
                    for i in ids)


def source(*paths, **extra):
    return validate_source({"name": "web", "type": "files", "paths": [str(p) for p in paths], **extra})


def quarantine_rows(out):
    return [json.loads(line) for shard in list_shards(out / "quarantine") for line in gzip.open(shard, "rt")]


def kept_ids(out):
    return [d["id"] for shard in list_shards(out / "documents") for _, d in read_documents(shard)]


# --- 7: a UTF-8 BOM at the start of a file ------------------------------------------------------------


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, zstandard.ZstdCompressor().compress])
def test_a_bom_at_the_start_of_a_file_is_skipped_and_the_first_record_kept(tmp_path, compress):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(compress(b"\xef\xbb\xbf" + jsonl(["a", "b", "c"])))
    stats = write_source(source(path), tmp_path / "out")
    assert (stats["records_in"], stats["documents"], stats["quarantined"]) == (3, 3, {})
    assert kept_ids(tmp_path / "out") == ["a", "b", "c"]


def test_a_bom_anywhere_but_the_start_is_still_bad_input(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_bytes(jsonl(["a"]) + b"\xef\xbb\xbf" + jsonl(["b"]))
    stats = write_source(source(path), tmp_path / "out")
    assert stats["documents"] == 1 and stats["quarantined"] == {"invalid_json": 1}


def test_a_bom_does_not_count_toward_max_document_bytes_and_long_lines_are_measured_whole(tmp_path):
    path = tmp_path / "edge.jsonl"
    doc = jsonl(["a"])[:-1]
    long = json.dumps({"id": "long", "text": "x" * 5000}).encode()
    path.write_bytes(b"\xef\xbb\xbf" + doc + b"\n" + long + b"\n" + doc)
    got = [record for _, record in read_records(str(path), max_document_bytes=len(doc))]
    assert [r["id"] if isinstance(r, dict) else r.reason for r in got] == ["a", "too_large", "a"]
    assert got[1].expected == f"document of {len(long)} bytes exceeds max_document_bytes={len(doc)}"
    got = [record for _, record in read_records(str(path), max_document_bytes=len(doc) - 1)]
    assert [r.reason for r in got] == ["too_large"] * 3
    assert got[0].expected == f"document of {len(doc)} bytes exceeds max_document_bytes={len(doc) - 1}"


# --- 8: compression by magic bytes; truncated shards ---------------------------------------------------


def test_compression_is_told_by_magic_bytes():
    assert compression_of(b"\x1f\x8b\x08\x00") == "gzip"
    assert compression_of(b"\x28\xb5\x2f\xfd") == "zstd"
    assert compression_of((0x184D2A53).to_bytes(4, "little")) == "zstd"  # a skippable frame
    assert compression_of(b'{"id') == compression_of(b"") == "plain"


def test_a_plain_file_named_gz_and_a_compressed_file_named_jsonl_are_read_by_their_bytes(tmp_path, caplog):
    (tmp_path / "plain.jsonl.gz").write_bytes(jsonl(["p1", "p2"]))
    (tmp_path / "gzip.jsonl").write_bytes(gzip.compress(jsonl(["g1"])))
    (tmp_path / "zstd.jsonl.gz").write_bytes(zstandard.ZstdCompressor().compress(jsonl(["z1"])))
    with caplog.at_level(logging.WARNING, logger="steps.common.compressed"):
        stats = write_source(source(tmp_path), tmp_path / "out")
    assert (stats["records_in"], stats["documents"], stats["quarantined"]) == (4, 4, {})
    assert sorted(kept_ids(tmp_path / "out")) == ["g1", "p1", "p2", "z1"]
    assert f"{tmp_path / 'plain.jsonl.gz'}: the name says gzip but the bytes are plain" in caplog.text


def test_a_truncated_zstd_shard_in_one_block_counts_all_its_bytes_unreadable(tmp_path):
    path = tmp_path / "cut.jsonl.zst"
    whole = zstandard.ZstdCompressor().compress(jsonl(range(50)))
    path.write_bytes(whole[: len(whole) // 2])  # one block: nothing before the cut can be decoded
    stats = write_source(source(path), tmp_path / "out")
    assert stats["records_in"] == 1 and stats["quarantined"] == {"truncated_shard": 1}
    assert stats["unreadable_bytes"] == len(whole) // 2 and stats["records_recovered"] == 0
    (row,) = quarantine_rows(tmp_path / "out")
    assert row["reason"] == "truncated_shard" and row["file"] == str(path) and row["line"] == 1
    assert f"{len(whole) // 2} of {len(whole) // 2} compressed bytes decode to no record" in row["message"]


def test_a_truncated_zstd_shard_keeps_the_records_of_its_whole_frames_and_blocks(tmp_path):
    path = tmp_path / "cut.jsonl.zst"
    compressor = zstandard.ZstdCompressor(write_checksum=False)
    first, second = compressor.compress(jsonl(range(30))), compressor.compress(jsonl(range(30, 50)))
    cut = first + second[: len(second) - 10]
    path.write_bytes(cut)
    stats = write_source(source(path), tmp_path / "out")
    assert stats["documents"] == 30 and stats["records_in"] == 31 and stats["quarantined"] == {"truncated_shard": 1}
    assert stats["records_recovered"] == 30
    assert stats["unreadable_bytes"] == len(cut) - len(first)  # the fewest bytes giving the 30 records: frame 1
    assert kept_ids(tmp_path / "out") == [str(i) for i in range(30)]
    # many blocks in one frame: every whole block before the cut is decoded
    big = jsonl(range(20_000))
    whole = zstandard.ZstdCompressor().compress(big)
    path.write_bytes(whole[: len(whole) // 2])
    *docs, (_, bad) = list(read_records(str(path)))
    assert 0 < len(docs) < 20_000 and [d["id"] for _, d in docs] == [str(i) for i in range(len(docs))]
    assert bad.reason == "truncated_shard" and bad.records_recovered == len(docs)
    assert 0 < bad.unreadable_bytes < len(whole) // 2 and bad.compressed_bytes == len(whole) // 2


def test_a_truncated_gzip_shard_keeps_every_complete_record_and_counts_the_bytes_after_them(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(jsonl(range(5_000)))
    cut = whole[: len(whole) // 2]
    path.write_bytes(cut)
    complete = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    *docs, (number, bad) = [(location.line, record) for location, record in read_records(str(path))]
    assert len(docs) == complete == bad.records_recovered and number == complete + 1
    kept = len(cut) - bad.unreadable_bytes  # the fewest leading bytes that decode to every record kept
    assert zlib.decompressobj(wbits=31).decompress(cut[:kept]).count(b"\n") == complete
    assert zlib.decompressobj(wbits=31).decompress(cut[:kept - 1]).count(b"\n") == complete - 1
    stats = write_source(source(path), tmp_path / "out")
    assert stats["documents"] == complete and stats["records_in"] == complete + 1
    assert stats["unreadable_bytes"] == bad.unreadable_bytes > 0


def test_a_corrupt_gzip_member_keeps_the_members_before_it(tmp_path):
    path = tmp_path / "members.jsonl.gz"
    first = gzip.compress(jsonl(range(100)))
    path.write_bytes(first + b"\0\0" + gzip.compress(jsonl(range(100, 200))) + b"not gzip")
    stats = write_source(source(path), tmp_path / "out")
    assert stats["documents"] == 200 and stats["quarantined"] == {"truncated_shard": 1}
    assert stats["unreadable_bytes"] >= len(b"not gzip")


# --- 9: the same id twice in a source -------------------------------------------------------------------


def test_duplicate_ids_across_the_files_of_a_source_are_kept_and_counted(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl(["x", "y", "z"]))
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(["y", "w", "x", "x"])))
    one = write_source(source(tmp_path / "in"), tmp_path / "one")
    assert one["documents"] == 7 and one["duplicate_ids"] == 3  # y once more, x twice more: all kept
    assert sorted(kept_ids(tmp_path / "one")) == ["w", "x", "x", "x", "y", "y", "z"]
    two = write_source(source(tmp_path / "in"), tmp_path / "two", engine=LocalEngine(2), markers=tmp_path / "done",
                       ids_dir=tmp_path / "ids")
    assert two == one
    for leftover in (tmp_path / "ids").rglob("*.npy"):  # resumed without the digests: rebuilt from the output
        leftover.unlink()
    assert write_source(source(tmp_path / "in"), tmp_path / "two", markers=tmp_path / "done",
                        ids_dir=tmp_path / "ids") == one


def test_duplicate_count_over_digest_files_in_ranges(tmp_path, monkeypatch):
    from steps.corpus import duplicate_ids

    monkeypatch.setattr(duplicate_ids, "RANGE_ITEMS", 3)  # many value ranges, each read from every file
    ids = [[f"d{i}" for i in range(40)], [f"d{i}" for i in range(30, 60)], ["d5", "d5", "new"]]
    for index, group in enumerate(ids):
        write_digests(tmp_path / f"{index}.npy", (id_digest(i) for i in group))
    assert count_duplicates(tmp_path / f"{index}.npy" for index in range(3)) == 10 + 2
    assert count_duplicates([]) == 0


# --- 10: one line per source saying what was quarantined -------------------------------------------------


def test_the_end_of_a_source_logs_one_line_with_the_quarantined_records_by_reason(tmp_path, caplog):
    lines = [b"{broken", b'{"id": "t", "text": 3}', b"{also broken", b'{"id": "u", "text": ["x"]}', b"[1]"]
    (tmp_path / "w.jsonl").write_bytes(jsonl(["a", "b", "c"]) + b"\n".join(lines) + b"\n" + jsonl(["a"]))
    with caplog.at_level(logging.INFO, logger="steps.corpus.sources"):
        write_source(source(tmp_path / "w.jsonl"), tmp_path / "out")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "steps.corpus.sources"]
    assert line == (f"source 'web': 5 of 9 records quarantined: invalid_json 2, text_not_string 2, not_an_object 1; "
                    f"1 kept records reuse an id seen before in this source; see quarantine/web/ in {tmp_path / 'out'}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="steps.corpus.sources"):
        write_source(source(tmp_path / "w.jsonl", name="clean", paths=[str(tmp_path / "out" / "documents")]),
                     tmp_path / "again")
    assert [r.getMessage() for r in caplog.records if r.name == "steps.corpus.sources"] == [
        "source 'clean': 4 records, none quarantined; 1 kept records reuse an id seen before in this source"]


# --- 11: one name per file -----------------------------------------------------------------------------------


def test_quarantine_rows_and_errors_name_a_local_file_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl(["1"]) + b"{bad\n")
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(["2", "3"]))[:-30])
    monkeypatch.chdir(tmp_path)
    for paths in (["in"], [f"file://{tmp_path / 'in'}"], ["in/*.jsonl*"]):
        write_source(source(*paths), tmp_path / "out")
        rows = quarantine_rows(tmp_path / "out")
        expected = [str(tmp_path / "in" / "a.jsonl"), str(tmp_path / "in" / "b.jsonl.gz")]
        assert [row["file"] for row in rows] == expected
        assert [row["message"].split(":")[0] for row in rows] == expected
    with pytest.raises(DocumentFormatError, match="^" + re.escape(f"{tmp_path / 'in' / 'a.jsonl'}:2: expected a JSON")):
        write_source(source("in", strict=True), tmp_path / "strict")


def test_a_remote_file_is_named_by_its_url_and_a_local_dataset_by_its_absolute_path(tmp_path, monkeypatch):
    fs = fsspec.filesystem("memory")
    with fs.open("/naming/web-0.jsonl", "wb") as handle:
        handle.write(jsonl(["r1"]) + b"{bad\n")
    write_source(source("memory://naming/*.jsonl"), tmp_path / "remote")
    assert [row["file"] for row in quarantine_rows(tmp_path / "remote")] == [fs.unstrip_protocol("/naming/web-0.jsonl")]
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["fine.", ""]}).save_to_disk(str(tmp_path / "ds"))
    monkeypatch.chdir(tmp_path)
    write_source(validate_source({"name": "hf", "type": "huggingface", "dataset": "ds"}), tmp_path / "hf")
    assert [row["file"] for row in quarantine_rows(tmp_path / "hf")] == [f"{tmp_path / 'ds'} [train]"]
