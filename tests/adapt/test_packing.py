"""SFT packing and loss reduction: first-fit rows of conversations (packed once, rows reshuffled every epoch), the
block-diagonal forward (each conversation's logits as if run alone), the packed loss equal to the unpacked one,
open-instruct's ``sum`` reduction, the ChatData options' errors, and packed training (plain and under FSDP2)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from steps.adapt.batching import PACKING_STREAM, first_fit, pack_examples
from steps.adapt.sft import PADDING_SEGMENT, ChatData, collate_packed_chats, encode_sft_examples
from steps.train.objectives import IGNORE_INDEX, NextTokenLoss, segment_attention_mask, target_labels
from steps.train.trainer import TrainConfig, Trainer

EOS, PAD = 0, 1  # the small test tokenizer's ids
X = IGNORE_INDEX

QUESTIONS = ["Name a colour.", "Count to five.", "Say hi.", "Name a planet.", "Name a river stone.",
             "Describe the meadow.", "Play the violin.", "Light a candle.", "Where is the harbor?", "Thunder?"]
ANSWERS = ["Teal.", "One, two, three, four, five.", "Hi!", "Mars, the red planet.", "Marble.",
           "Willow and ember by the orchard.", "A velvet compass sound.", "The candle burns.", "By the glacier.",
           "Pepper and copper falcon thunder."]


def chat(user: str, assistant: str, example_id: str = "x") -> dict:
    return {"id": example_id, "messages": [{"role": "user", "content": user},
                                           {"role": "assistant", "content": assistant}]}


@pytest.fixture
def conversations(small_tokenizer):
    """Ten rendered conversations of 21 to 47 tokens."""
    examples = [chat(q, a, str(i)) for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))]
    encoded, counts = encode_sft_examples(examples, small_tokenizer, EOS, 64)
    assert counts == {"examples": 10, "encoded": 10}
    return encoded


def packed_data(items, max_length: int, batch_size: int, **options) -> ChatData:
    return ChatData(items, PAD, batch_size=batch_size, seed=3, max_length=max_length, packing=True, **options)


def epoch_rows(data: ChatData, epoch: int) -> list[int]:
    """The row indices of ``epoch``'s positions in the stream."""
    batches = data.batches(None, "fp32")
    rows = len(data.rows)
    steps = range((epoch * rows) // data.batch_size, math.ceil((epoch + 1) * rows / data.batch_size))
    stream = np.concatenate([batches.indices(step) for step in steps])
    start = epoch * rows - steps[0] * data.batch_size
    return [int(i) for i in stream[start:start + rows]]


# ---------------------------------------------------------------- rows


def test_first_fit_puts_each_item_into_the_first_row_with_room():
    lengths = [5, 3, 4, 2, 6, 1, 8, 2]
    assert first_fit(lengths, 8, range(8)) == [[0, 1], [2, 3, 5], [4, 7], [6]]
    # another order: 6 (8) fills row 0; 4 (6) opens row 1; 1 (3) opens row 2 ...
    assert first_fit(lengths, 8, [6, 4, 1, 0, 3, 2, 7, 5]) == [[6], [4, 3], [1, 0], [2, 7, 5]]
    assert first_fit([3], 3, [0]) == [[0]]
    with pytest.raises(ValueError, match="item 1: length 9 does not fit a bin of 8"):
        first_fit([1, 9], 8, [0, 1])


def test_first_fit_agrees_with_a_plain_scan_on_random_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 500).tolist()
    order = rng.permutation(500)
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        number = next((r for r, free in enumerate(room) if free >= lengths[index]), len(rows))
        if number == len(rows):
            rows.append([])
            room.append(100)
        rows[number].append(int(index))
        room[number] -= lengths[index]
    assert first_fit(lengths, 100, order) == rows


def test_packed_rows_are_first_fit_in_the_seeded_shuffled_order_of_the_conversations():
    items = [([5] * n, [5] * n) for n in (5, 3, 4, 2, 6, 1, 8, 2)]
    data = packed_data(items, 8, batch_size=2)
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, PACKING_STREAM]))).permutation(8)
    assert data.rows == [tuple(row) for row in first_fit([len(ids) for ids, _ in items], 8, order)]
    assert data.rows == pack_examples([5, 3, 4, 2, 6, 1, 8, 2], 8, 3)  # a pure function of lengths and seed
    assert sorted(i for row in data.rows for i in row) == list(range(8))
    assert all(sum(len(items[i][0]) for i in row) <= 8 for row in data.rows)
    assert data.packing_summary() == {"rows": len(data.rows), "conversations": 8, "truncated_to_max_length": 0,
                                      "fill": 31 / (8 * len(data.rows))}


def test_a_packed_batch_holds_its_rows_conversations_with_positions_segments_and_boundary_labels():
    first = ([10, 11, 12], [X, 11, 12])
    second = ([20, 21], [20, 21])  # a label on its first token, which nothing may predict
    third = ([30, 31, 32, 33], [X, X, 32, 33])
    batch = collate_packed_chats([[first, second], [third]], PAD)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21], [30, 31, 32, 33, PAD]]
    assert batch["labels"].tolist() == [[X, 11, 12, X, 21], [X, X, 32, 33, X]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, PADDING_SEGMENT]]
    mask = segment_attention_mask(batch["segment_ids"])
    assert mask[0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0],
                                      [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    assert mask[1, 4].int().tolist() == [0, 0, 0, 0, 1]  # padding attends to itself only


def test_packed_global_batches_hold_rows_and_the_batch_follows_its_rows():
    items = [([7] * n, [7] * n) for n in (5, 3, 4, 2, 6, 1, 8, 2)]
    data = packed_data(items, 8, batch_size=2)
    batches = data.batches(None, "fp32")
    batch = batches(1)
    rows = [data.rows[i] for i in batches.indices(1)]
    assert batch["input_ids"].shape == (2, max(sum(len(items[i][0]) for i in row) for row in rows))
    assert [int((segments >= 0).sum()) for segments in batch["segment_ids"]] == [
        sum(len(items[i][0]) for i in row) for row in rows]
    assert [int(segments.max()) + 1 for segments in batch["segment_ids"]] == [len(row) for row in rows]
    assert len(batch["batch_hash"]) == 16
    again = packed_data(items, 8, batch_size=2).batches(None, "fp32")(1)
    assert all(torch.equal(again[key], batch[key]) for key in ("input_ids", "labels", "position_ids", "segment_ids"))


def test_every_label_token_is_trained_exactly_once_per_epoch_and_epochs_reshuffle_rows(conversations):
    data = packed_data(conversations, 48, batch_size=2)
    assert 1 < len(data.rows) < len(conversations)
    assert data.steps_for_epochs(3) == math.ceil(3 * len(data.rows) / 2)
    assert data.steps_for_epochs(0.5) == math.ceil(0.5 * len(data.rows) / 2)
    # what an unpacked conversation trains on: every label but the first token's
    expected = sorted((i, t, label) for i, (_, labels) in enumerate(conversations)
                      for t, label in enumerate(labels) if t > 0 and label != X)
    orders = []
    for epoch in range(3):
        rows = epoch_rows(data, epoch)
        assert sorted(rows) == list(range(len(data.rows)))
        orders.append(rows)
        batch = data.collate_rows([data.rows[r] for r in rows])
        trained = []
        for b, row in enumerate(rows):
            for t in range(batch["input_ids"].shape[1]):
                segment, label = int(batch["segment_ids"][b, t]), int(batch["labels"][b, t])
                if label != X:
                    trained.append((data.rows[row][segment], int(batch["position_ids"][b, t]), label))
        assert sorted(trained) == expected  # each exactly once
    assert orders[0] != orders[1] != orders[2]


def test_a_conversation_longer_than_max_length_is_cut_and_counted(small_tokenizer):
    long_chat = chat("Say it.", "word " * 60, "long")
    encoded, counts = encode_sft_examples([long_chat, chat("Hi.", "Hi!")], small_tokenizer, EOS, 32)
    assert counts == {"examples": 2, "encoded": 2} and len(encoded[0][0]) == 32
    # items longer than max_length given to ChatData directly are cut when packed
    data = packed_data([([5] * 12, [5] * 12), ([6] * 3, [6] * 3)], 8, batch_size=1)
    assert data.packing_summary()["truncated_to_max_length"] == 1
    assert max(batch["input_ids"].shape[1] for batch in map(data.batches(None, "fp32"), range(2))) == 8


def test_chat_data_options_fail_naming_the_key(conversations):
    with pytest.raises(ValueError, match=r"^packing: expected true or false, got 'yes'$"):
        ChatData(conversations, PAD, 2, 0, 64, packing="yes")
    with pytest.raises(ValueError, match=r"^loss_reduction: expected one of \('mean', 'sum'\), got 'token'$"):
        ChatData(conversations, PAD, 2, 0, 64, loss_reduction="token")
    with pytest.raises(ValueError, match=r"^loss_reduction: "):
        NextTokenLoss("average")
    default = ChatData(conversations, PAD, 2, 0, 64)
    assert (default.packing, default.loss_reduction) == (False, "mean")
    assert default.steps_for_epochs(2) == 10
    assert set(default.batches(None, "fp32")(0)) == {"input_ids", "labels", "batch_hash"}


# ---------------------------------------------------------------- the packed forward and loss


def test_logits_of_a_packed_row_equal_each_conversation_run_alone(conversations, make_model):
    model = make_model().eval()
    data = packed_data(conversations, 64, batch_size=1)
    batch = data.collate_rows(data.rows)
    with torch.no_grad():
        packed = model(batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=segment_attention_mask(batch["segment_ids"]))
        for b, row in enumerate(data.rows):
            start = 0
            for i in row:
                ids = conversations[i][0]
                alone = model(torch.tensor([ids]))[0]
                torch.testing.assert_close(packed[b, start:start + len(ids)], alone, rtol=0, atol=1e-5)
                start += len(ids)
    assert any(len(row) > 1 for row in data.rows)


def hand_token_losses(model, conversations) -> list[torch.Tensor]:
    """Each conversation's per-token cross entropies of its trained labels (after the first token), run alone."""
    losses = []
    for ids, labels in conversations:
        logits = model(torch.tensor([ids]))[0, :-1]
        targets = torch.tensor(labels[1:])
        losses.append(F.cross_entropy(logits[targets != X], targets[targets != X], reduction="none"))
    return losses


def loss_and_gradients(model, objective, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss_sum, _ = objective(model, batch)
    loss = loss_sum / objective.units(batch)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_mean_loss_and_gradients_equal_the_unpacked_token_mean(conversations, make_model, dtype):
    """Within 1e-6 (relative, fp32: the sums run in another order) and within 1e-10 in fp64."""
    model = make_model().to(dtype)
    packed = packed_data(conversations, 64, batch_size=1)
    packed_batch = packed.collate_rows(packed.rows)
    unpacked_batch = ChatData(conversations, PAD, len(conversations), 0, 64).collate(conversations)
    objective = NextTokenLoss("mean")
    assert objective.units(packed_batch) == objective.units(unpacked_batch) == sum(
        (torch.tensor(labels[1:]) != X).sum().item() for _, labels in conversations)
    packed_loss, packed_grads = loss_and_gradients(model, objective, packed_batch)
    unpacked_loss, unpacked_grads = loss_and_gradients(model, objective, unpacked_batch)
    with torch.no_grad():
        token_mean = torch.cat(hand_token_losses(model, conversations)).mean().item()
    tolerance = {"rel": 1e-6} if dtype == torch.float32 else {"abs": 1e-10}
    assert packed_loss == pytest.approx(unpacked_loss, **tolerance)
    assert packed_loss == pytest.approx(token_mean, **tolerance)
    scale = 1e-6 if dtype == torch.float32 else 1e-10
    for name, grad in unpacked_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=0, atol=scale * grad.abs().max().item())


def test_sum_reduction_divides_the_summed_token_loss_by_the_rows_of_the_global_batch(conversations, make_model):
    model = make_model()
    with torch.no_grad():
        per_conversation = [losses.sum() for losses in hand_token_losses(model, conversations)]
    objective = NextTokenLoss("sum")
    # unpacked: 10 conversations = 10 rows (open-instruct with one sequence per forward pass)
    unpacked = ChatData(conversations, PAD, 10, 0, 64, loss_reduction="sum")
    batch = unpacked.collate(conversations)
    assert unpacked.objective().reduction == "sum" and objective.units(batch) == 10
    with torch.no_grad():
        loss_sum, _ = objective(model, batch)
    assert (loss_sum / 10).item() == pytest.approx(sum(per_conversation).item() / 10, rel=1e-6)
    # packed: the same tokens over the packed rows
    packed = packed_data(conversations, 64, batch_size=1, loss_reduction="sum")
    rows = packed.collate_rows(packed.rows)
    assert objective.units(rows) == len(packed.rows) < 10
    with torch.no_grad():
        loss_sum, _ = objective(model, rows)
    assert (loss_sum / len(packed.rows)).item() == pytest.approx(sum(per_conversation).item() / len(packed.rows),
                                                                  rel=1e-6)
    nothing = {"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.full((2, 3), X)}
    assert objective.units(nothing) == 0  # nothing to train on, as the mean reduction says


def packed_config(steps: int, micro_batch_size: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "global_batch_size": 2, "micro_batch_size": micro_batch_size, "max_steps": steps,
        "schedule": {"kind": "constant", "peak_lr": 1e-2, "warmup_steps": 2},
        "optimizer": {"weight_decay": 0.0},
    })


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_packed_sft_trains_through_the_trainer_and_micro_batches_do_not_change_it(conversations, make_model,
                                                                                   reduction):
    data = packed_data(conversations, 48, batch_size=2, loss_reduction=reduction)
    histories = []
    for micro_batch_size in (2, 1):
        model = make_model()
        batches = data.batches(model, "fp32")
        first = batches(0)
        state = Trainer(model, batches, packed_config(12, micro_batch_size), data.objective()).fit()
        histories.append([m["loss"] for m in state.history])
    with torch.no_grad():
        rows = [data.rows[i] for i in batches.indices(0)]
        tokens = hand_token_losses(make_model(), [conversations[i] for row in rows for i in row])
    units = 2 if reduction == "sum" else int((target_labels(first) != X).sum())
    assert histories[0][0] == pytest.approx(torch.cat(tokens).sum().item() / units, rel=1e-5)
    assert histories[0] == pytest.approx(histories[1], rel=1e-4)
    assert histories[0][-1] < 0.5 * histories[0][0]


# ---------------------------------------------------------------- FSDP2


def _fsdp_packed(rank: int, world_size: int, rendezvous: str, out_dir: str, batch: dict, vocab: int) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from olmo_model import Olmo, OlmoConfig

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        mesh = dist.device_mesh.init_device_mesh("cpu", (world_size,))
        model = Olmo(OlmoConfig.preset("olmo-micro", vocab_size=vocab, eos_token_id=0, pad_token_id=1))
        model.reset_parameters(torch.Generator().manual_seed(0))
        for block in model.transformer.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        objective = NextTokenLoss("mean")
        units = objective.units(batch)
        loss, _ = objective(model, {key: value[rank::world_size] for key, value in batch.items()})
        (loss * world_size / units).backward()  # as the trainer: FSDP averages gradients over ranks
        total = loss.detach().clone()
        dist.all_reduce(total)
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
        if rank == 0:
            tensors = {"loss": total / units, **{f"grad/{k}": v for k, v in grads.items()}}
            save_file(tensors, f"{out_dir}/results.safetensors")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # as in tests/olmo_model: skip C++ static destructors racing gloo's threads


@pytest.mark.slow  # two spawned processes
def test_under_fsdp2_a_packed_batch_gets_the_unpacked_loss_and_gradients(conversations, make_model, tmp_path):
    data = packed_data(conversations, 64, batch_size=2)
    rows = data.rows[:len(data.rows) // 2 * 2]
    assert any(len(row) > 1 for row in rows)
    batch = data.collate_rows(rows)
    model = make_model()
    torch.multiprocessing.spawn(
        _fsdp_packed, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path), batch, model.config.vocab_size),
        nprocs=2,
    )
    results = load_file(tmp_path / "results.safetensors")
    loss, grads = results.pop("loss"), {name[len("grad/"):]: grad for name, grad in results.items()}
    chats = [conversations[i] for row in rows for i in row]
    unpacked = ChatData(chats, PAD, len(chats), 0, 64).collate(chats)
    objective = NextTokenLoss("mean")
    expected, _ = objective(model, unpacked)
    (expected / objective.units(unpacked)).backward()
    assert loss.item() == pytest.approx(expected.item() / objective.units(unpacked), rel=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=0, atol=2e-6 * param.grad.abs().max().item())
