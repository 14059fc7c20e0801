"""SFT batches (padding, masking, epoch order) and SFT through the shared trainer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steps.adapt.batching import ExampleBatches
from steps.adapt.sft import ChatData, encode_sft_examples
from steps.train.objectives import IGNORE_INDEX
from steps.train.trainer import TrainConfig, Trainer

EOS, PAD = 0, 1  # the small test tokenizer's ids


def chat(user: str, assistant: str, example_id: str = "x") -> dict:
    return {"id": example_id, "messages": [{"role": "user", "content": user},
                                           {"role": "assistant", "content": assistant}]}


EXAMPLES = [
    chat("Name a colour.", "Teal.", "a"),
    chat("Count to five.", "One, two, three, four, five.", "b"),
    chat("Say hi.", "Hi!", "c"),
    chat("Name a planet.", "Mars, the red planet.", "d"),
]


def sft_batches(examples, tokenizer, max_length: int, batch_size: int) -> tuple[ExampleBatches, dict]:
    encoded, counts = encode_sft_examples(examples, tokenizer, EOS, max_length)
    data = ChatData(encoded, PAD, batch_size=batch_size, seed=0, max_length=max_length)
    return data.batches(model=None, precision="fp32"), counts


def test_batches_pad_inputs_with_pad_and_labels_with_ignore(small_tokenizer):
    batches, counts = sft_batches(EXAMPLES, small_tokenizer, 64, batch_size=4)
    assert counts == {"examples": 4, "encoded": 4}
    batch = batches(0)
    input_ids, labels = batch["input_ids"], batch["labels"]
    assert input_ids.shape == labels.shape and input_ids.dtype == torch.long
    lengths = [len(batches.items[i][0]) for i in batches.indices(0)]
    assert input_ids.shape[1] == max(lengths)
    for row, length in enumerate(lengths):
        assert (input_ids[row, length:] == PAD).all() and (labels[row, length:] == IGNORE_INDEX).all()
        assert (labels[row, :length] != IGNORE_INDEX).sum() > 0
    assert (labels == EOS).sum() == 4
    assert len(batch["batch_hash"]) == 16


def test_examples_without_assistant_tokens_after_truncation_are_counted(small_tokenizer):
    long_prompt = chat("word " * 100, "Short reply.", "long")
    batches, counts = sft_batches([long_prompt, *EXAMPLES], small_tokenizer, 32, batch_size=2)
    assert counts == {"examples": 5, "encoded": 4, "dropped_no_assistant_tokens_within_max_length": 1}
    assert len(batches.items) == 4


def test_every_epoch_sees_every_example_once():
    batches = ExampleBatches(list(range(5)), batch_size=2, seed=7, collate=lambda items: {"items": items})
    stream = np.concatenate([batches.indices(step) for step in range(5)])
    assert sorted(stream[:5]) == sorted(stream[5:10]) == [0, 1, 2, 3, 4]
    assert list(stream[:5]) != list(stream[5:10])  # epochs are reshuffled
    again = ExampleBatches(list(range(5)), batch_size=2, seed=7, collate=lambda items: {"items": items})
    assert again(3) == batches(3)
    assert batches(3)["items"] == [int(i) for i in batches.indices(3)]


def test_sft_loss_is_on_assistant_tokens_and_falls(small_tokenizer, make_model):
    examples, _ = encode_sft_examples(EXAMPLES, small_tokenizer, EOS, 64)
    data = ChatData(examples, PAD, batch_size=4, seed=0, max_length=64)
    assert data.steps_for_epochs(3) == math.ceil(3 * len(examples) / 4)
    model = make_model()
    batches = data.batches(model, "fp32")
    first = batches(0)
    with torch.no_grad():
        logits = model(first["input_ids"])[:, :-1]
    targets = first["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[trained], targets[trained]).item()

    config = TrainConfig.from_dict({
        "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 15,
        "schedule": {"kind": "constant", "peak_lr": 1e-2, "warmup_steps": 2},
        "optimizer": {"weight_decay": 0.0},
    })
    state = Trainer(model, batches, config, data.objective()).fit()
    losses = [m["loss"] for m in state.history]
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert losses[-1] < 0.5 * losses[0]
