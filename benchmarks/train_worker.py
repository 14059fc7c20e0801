"""One side of the training benchmark, run by ``train.py`` in its own process.

``python benchmarks/train_worker.py ours|peer|gpu '<json options>'`` trains and prints one JSON line: the loss,
wall seconds and CPU seconds (all threads) of every step, and the process's peak memory.

- ``ours``: this project's ``Olmo`` (weights mapped back from ``options["model"]``, an ``OlmoForCausalLM``
  directory) and its shared trainer (``steps.train.trainer.train``), in the project's virtualenv;
- ``peer``: ``transformers``' ``OlmoForCausalLM`` from the same directory and a plain AdamW loop (forward with
  labels, backward, global-norm clipping, step), in the peer's virtualenv. This mode imports nothing of ours.

Both train on the token batches in ``options["tokens"]`` (int64 ``[steps, batch, seq_len]``): fp32 on CPU,
AdamW (betas 0.9/0.95, eps 1e-5, no weight decay so both update every tensor alike), a constant LR, gradient
clipping at 1.0, one micro-batch per step.

- ``gpu``: ours only, the ``options["preset"]`` model (seeded init) on the first GPU at ``options["seq_len"]``,
  bf16 autocast over fp32 weights, blocks compiled with ``torch.compile``, random tokens; adds the training
  FLOPs per token and the GPU's peak bf16 FLOP/s (for MFU) and its peak memory.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

LR = 3e-4
REPO = Path(__file__).resolve().parents[1]


class StepClock:
    """Wall and CPU (all threads) seconds between ticks, a tick at the end of every step."""

    def __init__(self) -> None:
        self.wall, self.cpu = [time.perf_counter()], [time.process_time()]

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def times(self) -> dict[str, list[float]]:
        return {"step_seconds": [b - a for a, b in zip(self.wall, self.wall[1:])],
                "step_cpu_seconds": [b - a for a, b in zip(self.cpu, self.cpu[1:])]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_peer(options: dict[str, Any]) -> dict[str, Any]:
    from transformers import OlmoForCausalLM

    batches = np.load(options["tokens"])
    model = OlmoForCausalLM.from_pretrained(options["model"], torch_dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.0)

    def step(batch: torch.Tensor) -> float:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    losses, clock = [], StepClock()
    for batch in batches:
        losses.append(step(torch.from_numpy(batch)))
        clock.tick()
    return {"losses": losses, **clock.times(), "peak_rss_mb": peak_rss_mb()}


def train_ours(model: torch.nn.Module, batches: Callable[[int], torch.Tensor], settings: dict[str, Any]):
    """``steps.train.trainer.train`` with a constant LR and no weight decay; (final state, step times)."""
    from steps.train.trainer import TrainConfig, train

    config = TrainConfig.from_dict({
        "schedule": {"kind": "constant", "peak_lr": LR, "warmup_steps": 0},
        "optimizer": {"betas": [0.9, 0.95], "eps": 1e-5, "weight_decay": 0.0}, "max_grad_norm": 1.0, **settings,
    })
    clock = StepClock()  # ticked by ``log``, called after every step: its time, trainer overhead included
    return train(model, batches, config, log=lambda _: clock.tick()), clock.times()


def run_ours(options: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load_file

    from integrations.huggingface import from_hf_state_dict
    from olmo_model import Olmo, OlmoConfig

    batches = np.load(options["tokens"])
    config = OlmoConfig.from_dict(options["olmo_config"])
    model = Olmo(config)
    model.load_state_dict(from_hf_state_dict(load_file(Path(options["model"], "model.safetensors")), config))
    rows = batches.shape[1]
    final, times = train_ours(model, lambda k: torch.from_numpy(batches[k]), {
        "global_batch_size": rows, "micro_batch_size": rows, "max_steps": len(batches)})
    return {"losses": [m["loss"] for m in final.history], **times, "peak_rss_mb": peak_rss_mb()}


def run_gpu(options: dict[str, Any]) -> dict[str, Any]:
    from olmo_model import Olmo, OlmoConfig
    from olmo_model.flops import flops_per_token
    from steps.train.throughput import peak_flops

    device = torch.device("cuda", 0)
    config = OlmoConfig.preset(options["preset"], max_sequence_length=options["seq_len"])
    with torch.device("meta"):
        model = Olmo(config)
    model.to_empty(device=device)
    model.reset_parameters(torch.Generator().manual_seed(options["seed"]))
    for block in model.transformer.blocks:
        block.compile()
    shape = (options["global_batch"], options["seq_len"])
    final, times = train_ours(
        model,
        lambda k: torch.randint(0, config.vocab_size, shape, generator=torch.Generator().manual_seed(k)),
        {"global_batch_size": options["global_batch"], "micro_batch_size": options["micro_batch"],
         "max_steps": options["steps"], "precision": "bf16"},
    )
    return {
        "losses": [m["loss"] for m in final.history], **times, "device": torch.cuda.get_device_name(),
        "flops_per_token": flops_per_token(config, options["seq_len"]), "peak_flops": peak_flops(device),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }


def main() -> None:
    mode, options = sys.argv[1], json.loads(sys.argv[2])
    if mode != "peer":
        sys.path.insert(0, str(REPO))
    torch.manual_seed(0)
    torch.set_num_threads(options["threads"])
    print(json.dumps({"ours": run_ours, "peer": run_peer, "gpu": run_gpu}[mode](options)))


if __name__ == "__main__":
    main()
