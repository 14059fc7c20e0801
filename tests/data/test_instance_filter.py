"""OLMo 2's repeated n-gram instance filter: which instances it flags (OLMo-core's rule: one block of
``repetition_min_period..repetition_max_period`` tokens written ``repetition_max_count`` or more times in a row),
how the index records them, and that training masks every label of a flagged instance."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from tango import StepGraph
from tango.common.exceptions import ConfigurationError
from tango.common.util import import_module_and_submodules

from integrations.workspace import OlmoWorkspace
from olmo_model.config import ConfigError
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.data import instances as instances_module
from steps.data.batches import batch_hash, describe_batch
from steps.data.instance_filter import OLMO2_INSTANCE_FILTER, InstanceFilterConfig, repetitive_rows
from steps.data.instances import INDEX_FILE, InstanceIndex, build_instances, load_instances
from steps.data.order import DataOrder, DataOrderConfig
from steps.train.objectives import IGNORE_INDEX
from steps.train.pretraining_data import pretraining_batches
from tests.data.test_data_regenerate import tokenized_corpus_steps

SEQ_LEN = 640
OLMO2 = {"repetition_max_count": 32, "repetition_max_period": 13, "repetition_min_period": 1}


def reference_flag(row, config: InstanceFilterConfig) -> bool:
    """The rule read plainly: for some period p, x[i] == x[i + p] for `run` consecutive i spans run + p tokens,
    (run + p) // p whole copies of one p-token block; the instance is flagged at repetition_max_count copies."""
    row = [int(t) for t in row]
    for period in range(config.repetition_min_period, config.repetition_max_period + 1):
        run = 0
        for i in range(len(row) - period):
            run = run + 1 if row[i] == row[i + period] else 0
            if (run + period) // period >= config.repetition_max_count:
                return True
    return False


def background(length: int, seed: int = 0) -> np.ndarray:
    """Token ids with no repetition at all (a permutation of distinct ids)."""
    return np.random.default_rng(seed).permutation(np.arange(1000, 1000 + length))


def planted(block, copies: int, at: int = 50, extra: int = 0, length: int = SEQ_LEN) -> np.ndarray:
    """A row of distinct ids holding ``copies`` copies of ``block`` (then ``extra`` tokens of one more) at ``at``."""
    row = background(length)
    run = np.tile(np.asarray(block), copies + 1)[: copies * len(block) + extra]
    row[at : at + len(run)] = run
    return row


def flags(*rows, config=OLMO2_INSTANCE_FILTER) -> list[bool]:
    return repetitive_rows(np.stack(rows).astype(np.uint16), config).tolist()


# -- the rule ---------------------------------------------------------------------------------------------------


def test_a_token_repeated_32_times_is_flagged_31_times_is_not():
    # OLMo-core masks an instance when a run's whole copies reach the count (`m.times >= repetition_max_count`):
    # with 32, one token written 32 times in a row is filtered, 31 times is not, 33 times is.
    assert flags(planted([7], 31), planted([7], 32), planted([7], 33)) == [False, True, True]


def test_period_13_is_looked_for_and_period_14_is_not():
    block13, block14 = list(range(1, 14)), list(range(1, 15))
    assert flags(planted(block13, 31), planted(block13, 32), planted(block13, 33)) == [False, True, True]
    assert flags(planted(block14, 36)) == [False]  # 36 copies of a 14-token block: longer than max_period
    up_to_14 = InstanceFilterConfig(repetition_max_count=32, repetition_max_period=14, repetition_min_period=1)
    assert flags(planted(block14, 32), config=up_to_14) == [True]


def test_a_partial_last_copy_does_not_count():
    block = [5, 6, 7]
    assert flags(planted(block, 31, extra=2), planted(block, 32, extra=0)) == [False, True]


def test_many_short_runs_below_the_count_are_not_flagged():
    row = background(SEQ_LEN)
    at = 0
    for period in range(1, 14):  # 31 copies of a block of every period, one after the other, each ended by a new id
        block = list(range(10 * period, 10 * period + period))
        run = block * 31
        if at + len(run) + 1 > SEQ_LEN:
            break
        row[at : at + len(run)] = run
        at += len(run) + 1
    chatty = background(SEQ_LEN)
    chatty[::2] = 9  # one token every other position: x[i] == x[i + 2] on even i only, no run of equalities
    chatty[1::4] = 9  # ... nor here: 9 9 9 x 9 9 9 x ... (period 4, 3-token runs of 9; each x is new)
    assert flags(row, chatty) == [False, False]
    assert reference_flag(row, OLMO2_INSTANCE_FILTER) is False


def test_runs_at_either_end_of_the_instance_count():
    assert flags(planted([3, 4], 32, at=0), planted([3, 4], 32, at=SEQ_LEN - 64)) == [True, True]
    assert flags(planted([3, 4], 31, at=SEQ_LEN - 62)) == [False]


def test_the_minimum_period_is_respected():
    from_2 = InstanceFilterConfig(repetition_max_count=32, repetition_max_period=13, repetition_min_period=2)
    # 40 copies of one token are 20 copies of a 2-token block: not enough from period 2 on; 64 are 32
    assert flags(planted([7], 40), planted([7], 64), config=from_2) == [False, True]


def test_matches_the_plain_rule_on_random_rows():
    rng = np.random.default_rng(3)
    configs = [OLMO2_INSTANCE_FILTER, InstanceFilterConfig(3, 5, 1), InstanceFilterConfig(5, 9, 3)]
    rows = rng.integers(0, 4, size=(240, 160))  # 4 ids: chance repetition everywhere
    for row in rows[::2]:  # and planted runs of every period and length
        period, copies = int(rng.integers(1, 15)), int(rng.integers(2, 40))
        run = np.tile(rng.integers(0, 4, size=period), copies)[:160]
        start = int(rng.integers(0, 160 - len(run) + 1))
        row[start : start + len(run)] = run
    for config in configs:
        expected = [reference_flag(row, config) for row in rows]
        assert repetitive_rows(rows, config).tolist() == expected
        assert 0 < sum(expected) < len(rows)


@pytest.mark.parametrize(
    "block, message",
    [
        ({**OLMO2, "repetition_min_period": 0}, "instance_filter.repetition_min_period: expected a positive integer"),
        ({**OLMO2, "repetition_max_period": 0}, "instance_filter.repetition_max_period: expected an integer >= "),
        ({**OLMO2, "repetition_max_count": 2}, r"instance_filter.repetition_max_count: expected an integer >= 3"),
        ({**OLMO2, "repetition_max_count": 32.0}, "instance_filter.repetition_max_count: expected an integer"),
        ({**OLMO2, "period": 3}, r"instance_filter: unknown key\(s\) 'period'"),
        ({"repetition_max_count": 32}, r"instance_filter: missing required key\(s\) 'repetition_max_period'"),
    ],
)
def test_bad_blocks_are_refused_naming_the_key(block, message):
    with pytest.raises(ConfigError, match=message):
        InstanceFilterConfig.from_dict(block)


def test_olmo2_block():
    assert InstanceFilterConfig.from_dict(OLMO2) == OLMO2_INSTANCE_FILTER
    assert OLMO2_INSTANCE_FILTER.to_dict() == OLMO2


# -- the index --------------------------------------------------------------------------------------------------


SPLIT_LEN = 64


def split_run_files(root):
    """Two token files of 4 instances of 64 tokens (ids otherwise all distinct). File 0 (uint16, and a 10-token
    tail): token 7 written 40 times from 35 tokens before the end of instance 0 (35 copies there, 5 in
    instance 1); 60 copies of [8, 9] across the boundary of instances 2 and 3 (30 copies in each). File 1
    (uint32): instance 5 holds 4 copies of a 16-token block, instance 6 token 5 written 32 times."""
    first = np.random.default_rng(1).permutation(np.arange(1000, 1000 + 4 * SPLIT_LEN + 10))
    first[SPLIT_LEN - 35 : SPLIT_LEN + 5] = 7
    first[3 * SPLIT_LEN - 60 : 3 * SPLIT_LEN + 60] = [8, 9] * 60
    second = np.random.default_rng(2).permutation(np.arange(70000, 70000 + 4 * SPLIT_LEN))
    second[SPLIT_LEN : SPLIT_LEN + 64] = np.tile(np.arange(16), 4)
    second[2 * SPLIT_LEN + 10 : 2 * SPLIT_LEN + 42] = 5
    (root / "tokens").mkdir(exist_ok=True)
    first.astype("<u2").tofile(root / "tokens/a.npy")
    second.astype("<u4").tofile(root / "tokens/b.npy")
    for name, tokens in (("a", first), ("b", second)):  # one document a file
        with gzip.open(root / f"tokens/{name}.csv.gz", "wt") as handle:
            handle.write(f"0,{len(tokens)},doc-{name},{name}.jsonl,1\n")
    files = [("a", first, "uint16"), ("b", second, "uint32")]
    return {"files": [{"path": f"tokens/{name}.npy", "tokens": len(tokens), "dtype": dtype,
                       "provenance": f"tokens/{name}.csv.gz"} for name, tokens, dtype in files]}


def test_each_instance_is_judged_on_its_own_tokens(tmp_path):
    # A run cut by an instance boundary counts in each instance with the copies it has there (OLMo-core checks
    # each instance's input_ids): 35 + 5 copies flag instance 0 only; 30 + 30 copies of [8, 9] flag neither.
    summary = split_run_files(tmp_path)
    index = build_instances(summary, SPLIT_LEN, instance_filter=OLMO2_INSTANCE_FILTER, root_dir=tmp_path)
    assert index.num_instances == 8 and index.filtered_instances == (0, 6)
    tokens = index.read_instances(tmp_path, range(8))
    assert [reference_flag(row, OLMO2_INSTANCE_FILTER) for row in tokens] == [i in (0, 6) for i in range(8)]
    assert index.is_filtered([6, 1, 0, 7]).tolist() == [True, False, True, False]


def test_the_scan_reads_token_files_in_chunks(tmp_path, monkeypatch):
    summary = split_run_files(tmp_path)
    whole = build_instances(summary, SPLIT_LEN, instance_filter=OLMO2_INSTANCE_FILTER, root_dir=tmp_path)
    monkeypatch.setattr(instances_module, "_FILTER_CHUNK_TOKENS", 3 * SPLIT_LEN)  # 3, then 1 instance a read
    assert build_instances(summary, SPLIT_LEN, instance_filter=OLMO2_INSTANCE_FILTER, root_dir=tmp_path) == whole


def test_the_index_records_the_filter_and_round_trips(tmp_path):
    summary = split_run_files(tmp_path)
    plain = build_instances(summary, SPLIT_LEN)
    filtered = build_instances(summary, SPLIT_LEN, instance_filter=OLMO2_INSTANCE_FILTER, root_dir=tmp_path)
    assert set(plain.to_dict()) == {"seq_len", "num_instances", "dropped_tokens", "ignore_token_ids", "files"}
    data = json.loads(json.dumps(filtered.to_dict()))
    assert data["instance_filter"] == OLMO2 and data["filtered_instances"] == [0, 6]
    assert InstanceIndex.from_dict(data) == filtered
    assert filtered.fingerprint() != plain.fingerprint()
    assert not plain.masks_labels and filtered.masks_labels
    for bad in ([6, 0], [0, 8], [0, 0]):
        with pytest.raises(ValueError, match=r"filtered_instances must be ascending instances in \[0, 8\)"):
            InstanceIndex.from_dict({**data, "filtered_instances": bad})
    with pytest.raises(ValueError, match="the token files' directory"):
        build_instances(summary, SPLIT_LEN, instance_filter=OLMO2_INSTANCE_FILTER)


def test_label_mask_masks_whole_filtered_instances(tmp_path):
    summary = split_run_files(tmp_path)
    index = build_instances(summary, SPLIT_LEN, [1003], OLMO2_INSTANCE_FILTER, root_dir=tmp_path)
    tokens = index.read_instances(tmp_path, [1, 0, 6])
    mask = index.label_mask(tokens, [1, 0, 6])
    assert not mask[1:].any()
    assert np.array_equal(mask[0], tokens[0] != 1003)
    assert np.array_equal(index.label_mask(tokens), tokens != 1003)  # without the instances: ids only


# -- training ---------------------------------------------------------------------------------------------------


def instances_artifact(directory, instance_filter) -> tuple[Artifact, InstanceIndex]:
    summary = split_run_files(directory)
    index = build_instances(summary, SPLIT_LEN, instance_filter=instance_filter, root_dir=directory)
    (directory / INDEX_FILE).write_text(json.dumps(index.to_dict()))
    manifest = {"fingerprint": index.fingerprint(), "summary": {"num_instances": index.num_instances}}
    return Artifact(directory, manifest), index


def test_training_batches_keep_filtered_instances_with_every_label_masked(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "filtered").mkdir()
    plain, _ = instances_artifact(tmp_path / "plain", None)
    artifact, index = instances_artifact(tmp_path / "filtered", OLMO2_INSTANCE_FILTER)
    data_order = DataOrderConfig(seed=11, global_batch_size=2)
    order = DataOrder(index.num_instances, artifact.fingerprint, seed=11)
    batches = pretraining_batches(artifact, data_order)
    seen = []
    for step in range(8):  # two epochs of 4 batches
        batch = batches(step)
        instances = order.global_batch(step, 2)
        tokens, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
        assert np.array_equal(tokens, index.read_instances(artifact.path, instances))
        assert batch["batch_hash"] == batch_hash(tokens)  # the labels' mask is not in the hash
        for row, instance in enumerate(instances.tolist()):
            expected = np.full(SPLIT_LEN, IGNORE_INDEX) if instance in (0, 6) else tokens[row]
            assert np.array_equal(labels[row], expected)
        seen.extend(instances.tolist())
    assert sorted(seen) == sorted(list(range(8)) * 2)  # filtered instances keep their place in the order
    assert "labels" not in pretraining_batches(plain, data_order)(0)  # no filter: no labels, as before

    batch_of_0 = next(s for s in range(4) if 0 in order.global_batch(s, 2).tolist())
    described = describe_batch(artifact.path, index, order, batch_of_0, 2, 1, 2)
    assert 0 in described["filtered_instances"]
    assert described["label_masked_tokens"] == (SPLIT_LEN - 1) * len(described["filtered_instances"])
    plain_index, _ = load_instances(plain)
    plain_order = DataOrder(plain_index.num_instances, plain.fingerprint, seed=11)
    assert "filtered_instances" not in describe_batch(plain.path, plain_index, plain_order, 0, 2, 1, 2)


# -- the step ---------------------------------------------------------------------------------------------------


def corpus_with_repetition(directory, make_corpus):
    """The generated corpus, and a source whose documents repeat themselves."""
    make_corpus(directory, shards_per_source=1, docs_per_shard=20)
    rows = [
        {"id": "laugh", "text": "Ha" + "ha" * 120 + ".", "source": "chatty"},
        {"id": "table", "text": "rows:\n" + "| 0 | 0 | 0 |\n" * 60, "source": "chatty"},
        {"id": "list", "text": "Things: " + ", ".join(["apple", "pear"] * 10) + ".", "source": "chatty"},
    ]
    write_jsonl_gz(directory / "chatty" / "part-00000.jsonl.gz", rows)


def workflow(corpus, instance_filter=None, with_key=False) -> dict:
    instances = {"type": "build_instances", "tokens": {"type": "ref", "ref": "tokenize"}, "seq_len": 64}
    if instance_filter is not None or with_key:
        instances["instance_filter"] = instance_filter
    return {"steps": {**tokenized_corpus_steps(corpus), "instances": instances}}


def instances_step(tmp_path, name, **kwargs):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(workflow(tmp_path / "corpus", **kwargs)))
    return StepGraph.from_file(path)["instances"]


def test_the_step_counts_the_filtered_instances_and_fingerprints_the_filter(tmp_path, make_corpus):
    corpus_with_repetition(tmp_path / "corpus", make_corpus)
    import_module_and_submodules("steps")
    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    absent = instances_step(tmp_path, "absent")
    assert instances_step(tmp_path, "null", with_key=True).unique_id == absent.unique_id  # null: as absent
    step = instances_step(tmp_path, "olmo2", instance_filter=OLMO2)
    assert step.unique_id != absent.unique_id
    looser = instances_step(tmp_path, "looser", instance_filter={**OLMO2, "repetition_max_count": 64})
    assert len({step.unique_id, looser.unique_id, absent.unique_id}) == 3

    artifact = step.result(workspace)
    index, root = load_instances(artifact)
    tokens = index.read_instances(root, range(index.num_instances))
    expected = [i for i, row in enumerate(tokens) if reference_flag(row, OLMO2_INSTANCE_FILTER)]
    assert list(index.filtered_instances) == expected and 0 < len(expected) < index.num_instances
    assert artifact.summary["instances_filtered"] == len(expected)
    assert artifact.summary["instance_filter"] == OLMO2
    assert artifact.summary["num_instances"] == index.num_instances  # filtered instances stay instances

    plain = absent.result(workspace)
    assert "instances_filtered" not in plain.summary and "instance_filter" not in plain.summary
    assert plain.summary["num_instances"] == artifact.summary["num_instances"]
    assert json.loads((plain.path / INDEX_FILE).read_text()).keys() == {
        "seq_len", "num_instances", "dropped_tokens", "ignore_token_ids", "files"}


def test_a_bad_block_is_a_configuration_error_naming_the_key(tmp_path, make_corpus):
    make_corpus(tmp_path / "corpus", shards_per_source=1, docs_per_shard=1)
    import_module_and_submodules("steps")
    with pytest.raises(ConfigurationError, match="instance_filter.repetition_max_count: expected an integer >= 3"):
        instances_step(tmp_path, "bad", instance_filter={**OLMO2, "repetition_max_count": 1})
