"""Provenance files: blocked csv.gz plus ends and blocks sidecars, looked up by token span."""
import csv
import gzip

import numpy as np
import pytest

from steps.data.provenance import ProvenanceFile, ProvenanceWriter, read_documents, sidecar_paths

LENGTHS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # tokens per document, EOS included
NUM_TOKENS = sum(LENGTHS)


def write(path, block_rows=3):
    with ProvenanceWriter(path, *sidecar_paths(path), block_rows=block_rows) as writer:
        start = 0
        for row, length in enumerate(LENGTHS):
            writer.write(start, start + length, f"doc,{row}", "web/part-0.jsonl.gz", row + 1, "web")
            start += length
    return path


def brute_force(start, end):
    ends = np.cumsum(LENGTHS)
    return [f"doc,{row}" for row in range(len(LENGTHS)) if ends[row] - LENGTHS[row] < end and ends[row] > start]


def test_the_blocked_file_is_one_csv_gz_for_any_reader(tmp_path):
    path = write(tmp_path / "part-0.csv.gz")
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[2] for row in rows] == [f"doc,{n}" for n in range(10)] and rows[4][:2] == ["9", "14"]
    ends_path, blocks_path = sidecar_paths(path)
    assert np.fromfile(ends_path, dtype="<i8").tolist() == np.cumsum(LENGTHS).tolist()
    assert np.fromfile(blocks_path, dtype="<i8").reshape(-1, 2)[:, 1].tolist() == [0, 3, 6, 9]


@pytest.mark.parametrize("sidecars", [True, False])
def test_documents_of_every_span_are_found(tmp_path, sidecars):
    path = write(tmp_path / "part-0.csv.gz")
    if not sidecars:  # as dolma writes it: the whole file is read
        for sidecar in sidecar_paths(path):
            sidecar.unlink()
    provenance = ProvenanceFile(path, NUM_TOKENS)
    for start in range(NUM_TOKENS):
        for end in range(start + 1, NUM_TOKENS + 1):
            found = provenance.overlapping(start, end)
            assert [d.id for d in found] == brute_force(start, end), (start, end)
    assert list(provenance.documents()) == list(read_documents(path))
    assert provenance.document(4) == ("doc,4", "web", "web/part-0.jsonl.gz", 5, 9, 14)


def test_sidecars_that_do_not_match_are_reported(tmp_path):
    path = write(tmp_path / "part-0.csv.gz")
    with pytest.raises(ValueError, match=r"part-0.ends.bin: ends at token 39, its token file has 40 tokens"):
        ProvenanceFile(path, NUM_TOKENS + 1)
    ends_path, _ = sidecar_paths(path)
    ends = np.fromfile(ends_path, dtype="<i8")
    ends[3] += 1
    ends.tofile(ends_path)
    with pytest.raises(ValueError, match=r"part-0.csv.gz:4: the row's span disagrees with the ends sidecar"):
        ProvenanceFile(path, NUM_TOKENS).document(3)
