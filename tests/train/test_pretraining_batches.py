"""The pretraining data feed: global batches in the data order, hashed, with the instances' label mask."""
import json
import shutil

import numpy as np
import pytest

from olmo_model import OlmoConfig
from steps.common.artifacts import Artifact
from steps.data.batches import batch_hash
from steps.data.instances import INDEX_FILE, build_instances
from steps.data.order import DataOrder, DataOrderConfig
from steps.data.tokenize import TOKENIZER_FILE
from steps.data.tokenizer import olmo_tokenizers_dir
from steps.train.pretraining_data import check_vocabulary, pretraining_batches
from steps.train.objectives import IGNORE_INDEX

SEQ_LEN = 8


def instances_artifact(directory, ignore_token_ids=()) -> Artifact:
    tokens = np.random.default_rng(0).integers(0, 10, size=12 * SEQ_LEN)
    (directory / "tokens").mkdir()
    tokens.astype("<u2").tofile(directory / "tokens/part-0.npy")
    summary = {"files": [{"path": "tokens/part-0.npy", "tokens": len(tokens), "dtype": "uint16"}]}
    index = build_instances(summary, SEQ_LEN, ignore_token_ids)
    (directory / INDEX_FILE).write_text(json.dumps(index.to_dict()))
    return Artifact(directory, {"fingerprint": index.fingerprint(), "summary": {"num_instances": index.num_instances}})


@pytest.mark.parametrize("ignored", [(), (3, 7)])
def test_batches_follow_the_order_and_mask_the_ignored_ids(tmp_path, ignored):
    artifact = instances_artifact(tmp_path, ignored)
    data_order = DataOrderConfig(seed=5, global_batch_size=4)
    batch = pretraining_batches(artifact, data_order)(4)  # epoch 1: 12 instances make 3 batches an epoch

    order = DataOrder(12, artifact.fingerprint, seed=5)
    raw = np.fromfile(tmp_path / "tokens/part-0.npy", dtype="<u2").reshape(12, SEQ_LEN).astype(np.int64)
    expected = raw[order.global_batch(4, 4)]
    assert np.array_equal(batch["input_ids"].numpy(), expected)
    assert batch["batch_hash"] == batch_hash(expected)
    if ignored:
        masked = np.isin(expected, ignored)
        assert masked.any()
        assert np.array_equal(batch["labels"].numpy(), np.where(masked, IGNORE_INDEX, expected))
    else:
        assert "labels" not in batch


def test_a_model_smaller_than_the_instances_tokenizer_is_refused(tmp_path):
    artifact = instances_artifact(tmp_path)
    shutil.copyfile(olmo_tokenizers_dir() / "allenai_gpt-neox-olmo-dolma-v1_5.json", tmp_path / TOKENIZER_FILE)
    check_vocabulary(artifact, OlmoConfig.preset("olmo-micro"))  # 50280 ids: fits
    small = OlmoConfig.preset("olmo-micro", vocab_size=128, eos_token_id=0, pad_token_id=1)
    with pytest.raises(ValueError, match="tokenizer has 50280 ids but the model's vocab_size is 128"):
        check_vocabulary(artifact, small)
    artifact.manifest["summary"]["eos_token_id"] = 0  # as with the pii-special file, where EOS is 0
    with pytest.raises(ValueError, match="the instances end documents with EOS 0, the model's eos_token_id is 50279"):
        check_vocabulary(artifact, OlmoConfig.preset("olmo-micro"))
