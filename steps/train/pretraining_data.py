"""The pretraining data as the trainer consumes it: global batches of the data order, with their hash and
label mask, and the checks that a model fits the instances it will train on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from olmo_model import OlmoConfig
from steps.common.artifacts import Artifact
from steps.data.batches import batch_hash
from steps.data.instances import load_instances
from steps.data.order import DataOrderConfig, order_for
from steps.data.tokenize import TOKENIZER_FILE
from steps.data.tokenizer import load_tokenizer
from steps.train.objectives import IGNORE_INDEX, NextTokenLoss, Objective


def pretraining_batches(instances: Artifact, data_order: DataOrderConfig) -> Callable[[int], dict]:
    """``batches(k)``: the token ids of global batch ``k`` of the data order (CPU), with their hash, and labels
    with the instances' label mask applied when it masks anything (ignored ids; every label of an instance the
    instance filter flagged)."""
    index, root = load_instances(instances)
    order = order_for(instances, data_order)

    def batch(step: int) -> dict[str, Any]:
        rows = order.global_batch(step, data_order.global_batch_size)
        tokens = index.read_instances(root, rows)
        batch = {"input_ids": torch.from_numpy(tokens), "batch_hash": batch_hash(tokens)}
        if index.masks_labels:
            labels = np.where(index.label_mask(tokens, rows), tokens, IGNORE_INDEX)
            batch["labels"] = torch.from_numpy(labels)
        return batch

    return batch


@dataclass(frozen=True)
class PretrainingData:
    """A pretrain's or anneal's training data: the instances in the data order, next-token loss."""

    instances: Artifact
    data_order: DataOrderConfig

    @property
    def seq_len(self) -> int:
        return self.instances.summary["seq_len"]

    def objective(self) -> Objective:
        return NextTokenLoss()

    def batches(self, model: nn.Module, precision: str) -> Callable[[int], dict]:
        return pretraining_batches(self.instances, self.data_order)


def check_vocabulary(instances: Artifact, config: OlmoConfig) -> None:
    """Fail unless the model's vocabulary covers every id of the tokenizer the instances were made with,
    and the model's EOS id is the one the documents were ended with."""
    tokenizer = load_tokenizer(instances.path / TOKENIZER_FILE)
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"the instances' tokenizer has {tokenizer.get_vocab_size()} ids but the model's vocab_size is "
            f"{config.vocab_size}: set model.vocab_size (and its eos/pad ids) to the tokenizer's"
        )
    eos = instances.summary.get("eos_token_id")
    if eos is not None and eos != config.eos_token_id:
        raise ValueError(
            f"the instances end documents with EOS {eos}, the model's eos_token_id is {config.eos_token_id}"
        )
