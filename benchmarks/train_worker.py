"""One side of the training benchmark, run by ``train.py`` in its own process.

``python benchmarks/train_worker.py ours|peer '<json options>'`` trains the model in ``options["model"]``
(an ``OlmoForCausalLM`` directory: ``config.json`` + ``model.safetensors``, the same initial weights for
both) on the token batches in ``options["tokens"]`` (int64 ``[steps, batch, seq_len]``) and prints one JSON
line: the loss of every step, tokens/s over the steps after the first (warm-up) ones, and peak RSS.

- ``ours``: this project's ``Olmo`` (weights mapped back from the directory) and its shared trainer
  (``steps.train.trainer.train``), in the project's virtualenv;
- ``peer``: ``transformers``' ``OlmoForCausalLM`` and a plain AdamW loop (forward with labels,
  backward, global-norm clipping, step), in the peer's virtualenv. This mode imports nothing of ours.

Both: fp32 on CPU, AdamW (betas 0.9/0.95, eps 1e-5, no weight decay so both update every tensor alike),
a constant LR, gradient clipping at 1.0, one micro-batch per step.
"""
from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/tokenize.py would shadow the standard library's ``tokenize`` (which torch imports).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

LR = 3e-4
WARMUP_STEPS = 2  # steps left out of the timing (allocator, first-call costs)


def report(losses: list[float], seconds: list[float], batches: np.ndarray) -> dict[str, Any]:
    """Losses, tokens/s of the steps after the warm-up ones, and this process's peak RSS."""
    steady = seconds[WARMUP_STEPS:]
    return {
        "losses": losses,
        "tokens_per_second": batches.shape[1] * batches.shape[2] * len(steady) / sum(steady),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def timed_losses(step: Callable[[torch.Tensor], float], batches: np.ndarray) -> dict[str, Any]:
    losses, seconds = [], []
    for batch in batches:
        start = time.perf_counter()
        losses.append(step(torch.from_numpy(batch)))
        seconds.append(time.perf_counter() - start)
    return report(losses, seconds, batches)


def run_peer(options: dict[str, Any], batches: np.ndarray) -> dict[str, Any]:
    from transformers import OlmoForCausalLM

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

    return timed_losses(step, batches)


def run_ours(options: dict[str, Any], batches: np.ndarray) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from safetensors.torch import load_file

    from integrations.huggingface import from_hf_state_dict
    from olmo_model import Olmo, OlmoConfig
    from steps.train.trainer import TrainConfig, train

    config = OlmoConfig.from_dict(options["olmo_config"])
    model = Olmo(config)
    state = from_hf_state_dict(load_file(Path(options["model"], "model.safetensors")), config)
    model.load_state_dict(state)
    settings = TrainConfig.from_dict({
        "global_batch_size": batches.shape[1], "micro_batch_size": batches.shape[1], "max_steps": len(batches),
        "schedule": {"kind": "constant", "peak_lr": LR, "warmup_steps": 0},
        "optimizer": {"betas": [0.9, 0.95], "eps": 1e-5, "weight_decay": 0.0}, "max_grad_norm": 1.0,
    })
    seconds: list[float] = []
    last = [time.perf_counter()]

    def log(metrics: dict[str, Any]) -> None:  # called after every step: its wall time, trainer overhead included
        now = time.perf_counter()
        seconds.append(now - last[0])
        last[0] = now

    final = train(model, lambda k: torch.from_numpy(batches[k]), settings, log=log)
    return report([m["loss"] for m in final.history], seconds, batches)


def main() -> None:
    mode, options = sys.argv[1], json.loads(sys.argv[2])
    torch.manual_seed(0)
    torch.set_num_threads(options["threads"])
    batches = np.load(options["tokens"])
    result = {"ours": run_ours, "peer": run_peer}[mode](options, batches)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
