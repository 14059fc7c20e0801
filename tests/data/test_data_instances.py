import copy
import gzip
import json

import numpy as np
import pytest

from steps.data.instances import InstanceIndex, OpenFiles, build_instances

SEQ_LEN = 64


def write_raw_tokens(path, tokens, dtype="<u2"):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.asarray(tokens, dtype=dtype).tofile(path)


@pytest.fixture
def hand_made(tmp_path):
    """Three token files of 10, 7 and 3 tokens, with token value = 100 * file + position."""
    files = []
    for k, n in enumerate((10, 7, 3)):
        write_raw_tokens(tmp_path / f"tokens/f{k}.npy", 100 * k + np.arange(n))
        files.append({"path": f"tokens/f{k}.npy", "tokens": n, "dtype": "uint16"})
    return tmp_path, {"files": files}


def test_each_file_is_cut_on_its_own_and_its_tail_dropped(hand_made):
    root, summary = hand_made
    index = build_instances(summary, seq_len=4)
    assert [f.num_instances for f in index.files] == [2, 1, 0]
    assert index.num_instances == 3
    assert index.dropped_tokens == 2 + 3 + 3
    assert index.read_instances(root, [0, 1, 2]).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [100, 101, 102, 103]]
    with pytest.raises(IndexError, match=r"instance 3 out of range \[0, 3\)"):
        index.read_instance(root, 3)


def test_uint32_files_are_read_as_uint32(tmp_path):
    write_raw_tokens(tmp_path / "big.npy", [70000, 1, 2**32 - 1, 5], dtype="<u4")
    index = build_instances({"files": [{"path": "big.npy", "tokens": 4, "dtype": "uint32"}]}, seq_len=2)
    assert index.read_instances(tmp_path, [0, 1]).tolist() == [[70000, 1], [2**32 - 1, 5]]
    assert index.read_instance(tmp_path, 0).dtype == np.int64


def test_token_file_of_the_wrong_size_is_reported(hand_made):
    root, summary = hand_made
    write_raw_tokens(root / "tokens/f0.npy", np.arange(9))
    with pytest.raises(ValueError, match=r"f0.npy: 18 bytes, expected 10 uint16 tokens"):
        build_instances(summary, seq_len=4).read_instance(root, 0)


@pytest.mark.parametrize("seq_len", [0, -1, 2.0])
def test_bad_seq_len_is_rejected(hand_made, seq_len):
    with pytest.raises(ValueError, match="seq_len"):
        build_instances(hand_made[1], seq_len)


def test_index_of_a_tokenize_output(tokenized):
    output, summary = tokenized
    index = build_instances(output, SEQ_LEN)
    assert index == build_instances(summary, SEQ_LEN)
    assert index.num_instances == sum(f["tokens"] // SEQ_LEN for f in summary["files"])
    assert index.dropped_tokens == sum(f["tokens"] % SEQ_LEN for f in summary["files"])
    assert index.num_instances * SEQ_LEN + index.dropped_tokens == summary["total_tokens"]
    last_of_first_file = index.files[0].num_instances - 1
    raw = np.fromfile(output / summary["files"][0]["path"], dtype="<u2")
    expected = raw[last_of_first_file * SEQ_LEN : (last_of_first_file + 1) * SEQ_LEN]
    assert np.array_equal(index.read_instance(output, last_of_first_file), expected)
    raw = np.fromfile(output / summary["files"][1]["path"], dtype="<u2")
    assert np.array_equal(index.read_instance(output, last_of_first_file + 1), raw[:SEQ_LEN])


def test_index_round_trips_through_json(tokenized):
    index = build_instances(tokenized[0], SEQ_LEN)
    data = json.loads(json.dumps(index.to_dict()))
    assert InstanceIndex.from_dict(data) == index
    assert InstanceIndex.from_dict(data).fingerprint() == index.fingerprint()
    data["files"][1]["num_instances"] += 1
    with pytest.raises(ValueError, match="do not match"):
        InstanceIndex.from_dict(data)


def test_fingerprint_follows_seq_len_and_content(tokenized):
    output, summary = tokenized
    assert build_instances(summary, SEQ_LEN).fingerprint() != build_instances(summary, SEQ_LEN * 2).fingerprint()
    edited = {"files": [{**summary["files"][0], "sha256": "0" * 64}, *summary["files"][1:]]}
    assert build_instances(edited, SEQ_LEN).fingerprint() != build_instances(summary, SEQ_LEN).fingerprint()


def test_instance_documents_cover_the_instance_exactly(tokenized, corpus, olmo_tokenizer):
    output, _ = tokenized
    texts = {doc_id: doc["text"] for doc_id, doc in corpus[1].items()}
    sources = {doc_id: doc["source"] for doc_id, doc in corpus[1].items()}
    index = build_instances(output, SEQ_LEN)
    for instance in range(index.num_instances):
        k, offset = index.locate(instance)
        documents = index.instance_documents(output, instance)
        assert documents[0].start <= offset < documents[0].end
        assert documents[-1].start < offset + SEQ_LEN <= documents[-1].end
        assert all(a.end == b.start for a, b in zip(documents, documents[1:]))
        raw = np.fromfile(output / index.files[k].path, dtype="<u2")
        for doc in documents:
            assert olmo_tokenizer.decode(raw[doc.start : doc.end - 1].tolist()) == texts[doc.id]
            assert doc.src == f"{index.files[k].path[len('tokens/'):-len('.npy')]}.jsonl.gz"
            assert doc.source == sources[doc.id]


def test_document_instances_follow_the_token_spans(tokenized, corpus):
    output, _ = tokenized
    index = build_instances(output, SEQ_LEN)
    for doc_id in corpus[1]:
        expected = [
            i for i in range(index.num_instances) if doc_id in {d.id for d in index.instance_documents(output, i)}
        ]
        assert index.document_instances(output, doc_id) == expected
    with pytest.raises(KeyError, match="'nope' is not in any provenance file"):
        index.document_instances(output, "nope")


def with_provenance(root, summary, first_file_rows):
    """Give the hand-made token files provenance: these csv rows for the first, one document for the others."""
    rows = [first_file_rows, "0,7,d,y.jsonl,1\n", "0,3,e,y.jsonl,2\n"]
    for f, text in zip(summary["files"], rows):
        f["provenance"] = f["path"].replace(".npy", ".csv.gz")
        with gzip.open(root / f["provenance"], "wt") as handle:
            handle.write(text)
    return build_instances(summary, seq_len=4)


def test_document_only_in_a_dropped_tail_is_in_no_instance(hand_made):
    root, summary = hand_made
    index = with_provenance(root, summary, "0,5,a,x.jsonl,1\n5,8,b,x.jsonl,2\n8,10,c,x.jsonl,3\n")
    assert index.document_instances(root, "a") == [0, 1]
    assert index.document_instances(root, "b") == [1]
    assert index.document_instances(root, "c") == []
    assert index.document_instances(root, "d") == [2]
    assert index.document_instances(root, "e") == []
    assert [d.id for d in index.instance_documents(root, 1)] == ["a", "b"]
    assert index.instance_documents(root, 0) == [("a", None, "x.jsonl", 1, 0, 5)]  # dolma's five columns


def test_provenance_that_does_not_tile_the_file_is_reported(hand_made):
    index = with_provenance(*hand_made, "0,4,a,x.jsonl,1\n5,10,b,x.jsonl,2\n")
    with pytest.raises(ValueError, match="f0.csv.gz: document spans do not tile the 10 tokens"):
        index.instance_documents(hand_made[0], 0)


def test_malformed_provenance_row_names_file_and_line(hand_made):
    index = with_provenance(*hand_made, "0,4,a,x.jsonl,1\n4,ten,b,x.jsonl,2\n")
    with pytest.raises(ValueError, match=r"f0.csv.gz:2: expected 'start,end,id,src,loc\[,source\]'"):
        index.instance_documents(hand_made[0], 0)


def test_label_mask_ignores_the_listed_token_ids_and_enters_the_fingerprint(hand_made):
    root, summary = hand_made
    plain = build_instances(summary, seq_len=4)
    masked = build_instances(summary, seq_len=4, ignore_token_ids=[102, 1, 102])
    tokens = masked.read_instances(root, [0, 1])  # [[0, 1, 2, 3], [4, 5, 6, 7]] of file 0
    assert masked.ignore_token_ids == (1, 102)
    assert masked.label_mask(tokens).tolist() == [[True, False, True, True], [True] * 4]
    assert plain.label_mask(tokens).all()
    assert masked.fingerprint() != plain.fingerprint()
    assert InstanceIndex.from_dict(json.loads(json.dumps(masked.to_dict()))) == masked


def test_bad_ignore_token_ids_are_rejected(hand_made):
    with pytest.raises(ValueError, match="ignore_token_ids: expected non-negative integer token ids"):
        build_instances(hand_made[1], seq_len=4, ignore_token_ids=[-1])


def test_reads_keep_at_most_limit_files_open(hand_made):
    root, summary = hand_made
    index = build_instances(summary, seq_len=2)
    index._open_files = OpenFiles(limit=2)
    tokens = index.read_instances(root, range(index.num_instances))  # instances in all three files
    assert tokens[:, 0].tolist() == [0, 2, 4, 6, 8, 100, 102, 104, 200]
    assert len(index._open_files._descriptors) == 2


def test_token_file_truncated_after_first_use_is_reported(hand_made):
    root, summary = hand_made
    index = build_instances(summary, seq_len=4)
    index.read_instance(root, 0)
    write_raw_tokens(root / "tokens/f0.npy", np.arange(5))
    with pytest.raises(ValueError, match=r"f0.npy: 2 bytes at offset 8, expected 8 \(file truncated\?\)"):
        index.read_instance(root, 1)


def test_a_copied_index_opens_its_own_files(hand_made):
    root, summary = hand_made
    index = build_instances(summary, seq_len=2)
    index.read_instance(root, 0)
    twin = copy.deepcopy(index)
    assert twin == index and twin._open_files is not index._open_files and not twin._open_files._descriptors
    del index
    assert twin.read_instance(root, 1).tolist() == [2, 3]
