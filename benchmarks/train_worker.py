"""One side of the training benchmark, run by ``train.py`` in its own process.

``python benchmarks/train_worker.py ours|peer|olmo_core|peak|gpu '<json options>'`` trains and prints one JSON
line: the loss, wall seconds and CPU seconds (all threads) of every step, and the process's peak memory.

- ``ours``: this project's ``Olmo`` (weights mapped back from ``options["model"]``, an ``OlmoForCausalLM``
  directory) and its shared trainer (``steps.train.trainer``), in the project's virtualenv;
- ``peer``: ``transformers``' ``OlmoForCausalLM`` from the same directory and a plain AdamW loop (forward with
  labels, backward, global-norm clipping, step), in the peer's virtualenv. This mode imports nothing of ours.
- ``olmo_core``: OLMo-core's ``Transformer`` built from its own config classes (``TransformerConfig`` with
  pre-norm blocks, non-parametric LayerNorm, RoPE theta 10,000, SwiGLU ``FeedForward``, tied ``LMHead``: the
  OLMo v1 shape of ``options["olmo_config"]``), trained by its own ``TransformerTrainModule`` (AdamW config,
  clipping) and ``Trainer`` (its default callbacks: console logger, speed monitor, garbage collector;
  checkpointing off, as on our side), from the same weights (the ``OlmoForCausalLM`` tensors renamed to
  OLMo-core's, loaded after the train module initialised the model) on the same batches through a
  ``TextDataLoaderBase`` that yields them in order. In OLMo-core's virtualenv; imports nothing of ours.
- ``peak``: no training; the best FLOP/s of large square fp32 matmuls (``torch.mm``) on these threads, the
  machine's peak for the model FLOP/s fractions.

``ours``, ``peer`` and ``olmo_core`` train on the token batches in ``options["tokens"]`` (int64
``[steps, batch, seq_len]``): fp32 on CPU, AdamW (betas 0.9/0.95, eps 1e-5, no weight decay so all update every
tensor alike), a constant LR, gradient clipping at 1.0, one micro-batch per step.

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


HF_TO_OLMO_CORE = {  # transformers' Olmo layer tensors -> OLMo-core's (FeedForward: w2(silu(w1 x) * w3 x))
    "self_attn.q_proj": "attention.w_q", "self_attn.k_proj": "attention.w_k", "self_attn.v_proj": "attention.w_v",
    "self_attn.o_proj": "attention.w_out", "mlp.gate_proj": "feed_forward.w1", "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
}


def olmo_core_state(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """An ``OlmoForCausalLM`` state dict in OLMo-core ``Transformer``'s names."""
    out = {"embeddings.weight": hf["model.embed_tokens.weight"], "lm_head.w_out.weight": hf["lm_head.weight"]}
    for i in range(n_layers):
        for theirs, ours in HF_TO_OLMO_CORE.items():
            out[f"blocks.{i}.{ours}.weight"] = hf[f"model.layers.{i}.{theirs}.weight"]
    return out


def olmo_core_config(shape: dict[str, Any], vocab_rows: int):
    """OLMo-core's ``TransformerConfig`` for the OLMo v1 architecture at ``shape`` (an ``OlmoConfig`` dict)."""
    from olmo_core.nn.attention import AttentionConfig
    from olmo_core.nn.feed_forward import FeedForwardConfig
    from olmo_core.nn.layer_norm import LayerNormConfig, LayerNormType
    from olmo_core.nn.lm_head import LMHeadConfig
    from olmo_core.nn.rope import RoPEConfig
    from olmo_core.nn.transformer import TransformerBlockConfig, TransformerBlockType, TransformerConfig

    norm = LayerNormConfig(name=LayerNormType.default, eps=shape.get("layer_norm_eps", 1e-5),
                           elementwise_affine=False, bias=False)  # OLMo v1: LayerNorm without weights
    block = TransformerBlockConfig(
        name=TransformerBlockType.default,  # pre-norm: x + attn(norm(x)), then h + ff(norm(h))
        sequence_mixer=AttentionConfig(n_heads=shape["n_heads"], bias=False,
                                       rope=RoPEConfig(theta=int(shape.get("rope_theta", 10_000)))),
        feed_forward=FeedForwardConfig(hidden_size=shape["mlp_hidden_size"], bias=False),
        layer_norm=norm,
    )
    return TransformerConfig(d_model=shape["d_model"], vocab_size=vocab_rows, n_layers=shape["n_layers"],
                             block=block, lm_head=LMHeadConfig(layer_norm=norm, bias=False),
                             tie_word_embeddings=shape["weight_tying"])


def run_olmo_core(options: dict[str, Any]) -> dict[str, Any]:
    import tempfile
    from dataclasses import dataclass, field

    from safetensors.torch import load_file

    from olmo_core.data import DataCollator, TextDataLoaderBase
    from olmo_core.optim import AdamWConfig
    from olmo_core.train import Duration, TrainerConfig, prepare_training_environment
    from olmo_core.train.callbacks import Callback, CheckpointerCallback
    from olmo_core.train.common import TRAIN_CE_LOSS_METRIC
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    prepare_training_environment(seed=0, backend=None)  # one process, no process group
    torch.set_num_threads(options["threads"])  # after it: it sets OMP_NUM_THREADS when unset
    batches = np.load(options["tokens"])
    steps, rows, seq_len = batches.shape
    shape = options["olmo_config"]
    hf = load_file(Path(options["model"], "model.safetensors"))
    model = olmo_core_config(shape, hf["model.embed_tokens.weight"].shape[0]).build(init_device="cpu")

    class Batches(TextDataLoaderBase):
        """The benchmark's batches, in order, one epoch."""

        def __init__(self, work_dir: str) -> None:
            super().__init__(collator=DataCollator(pad_token_id=shape.get("pad_token_id", 1)), work_dir=work_dir,
                             global_batch_size=rows * seq_len)

        @property
        def total_batches(self) -> int:
            return steps

        def state_dict(self) -> dict[str, Any]:
            return {"batches_processed": self.batches_processed}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.batches_processed = state_dict["batches_processed"]

        def reshuffle(self, epoch: int | None = None, **kwargs: Any) -> None:
            self._epoch = epoch or 1

        def _iter_batches(self):
            for k in range(self.batches_processed, steps):
                yield {"input_ids": torch.from_numpy(batches[k])}

        def get_mock_batch(self) -> dict[str, Any]:
            return {"input_ids": torch.randint(0, model.vocab_size, (rows, seq_len))}

    @dataclass
    class Clock(Callback):
        """The loss after every step and the clock at the end of every step (after the other callbacks)."""

        priority = -10_000
        clock: StepClock = field(default_factory=StepClock)
        losses: list[float] = field(default_factory=list)

        def pre_train(self) -> None:
            self.clock = StepClock()  # step 1's time (a warm-up step) includes the Trainer's dry-run batch

        def post_train_batch(self) -> None:
            self.losses.append(float(self.trainer.get_metric(TRAIN_CE_LOSS_METRIC)))

        def post_step(self) -> None:
            self.clock.tick()

    train_module = TransformerTrainModuleConfig(
        rank_microbatch_size=rows * seq_len, max_sequence_length=seq_len,
        optim=AdamWConfig(lr=LR, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.0),
        max_grad_norm=1.0,  # no scheduler: the LR stays at AdamWConfig's
    ).build(model)
    with torch.no_grad():  # building the train module initialised the weights: the shared ones replace them
        train_module.model.load_state_dict(olmo_core_state(hf, shape["n_layers"]), strict=True)
    if shape["weight_tying"] and train_module.model.lm_head.w_out.weight is not train_module.model.embeddings.weight:
        raise RuntimeError("OLMo-core's output matrix is no longer tied to its embedding")
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="olmo-core-") as work:
        trainer = TrainerConfig(
            save_folder=str(Path(work, "save")), work_dir=str(Path(work, "work")), no_checkpoints=True,
            max_duration=Duration.steps(steps), callbacks={"checkpointer": CheckpointerCallback(enabled=False),
                                                           "benchmark_clock": clock},
        ).build(train_module, Batches(str(Path(work, "data"))))
        trainer.fit()
    return {"losses": clock.losses, **clock.clock.times(), "peak_rss_mb": peak_rss_mb(),
            "trainer": "olmo_core.train.Trainer", "olmo_core_flops_per_token": train_module.num_flops_per_token(seq_len)}


def run_peak(options: dict[str, Any]) -> dict[str, Any]:
    """The best FLOP/s of ``torch.mm`` on square fp32 matrices of each size (2 n^3 FLOPs a product)."""
    by_size = {}
    for n in options["sizes"]:
        generator = torch.Generator().manual_seed(n)
        a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
        out = torch.mm(a, b)  # warm-up: first-call costs, pages of ``out``
        seconds = []
        for _ in range(options["repeats"]):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            seconds.append(time.perf_counter() - start)
        by_size[str(n)] = 2 * n**3 / min(seconds)
    return {"peak_flops": max(by_size.values()), "flops_by_size": by_size}


def train_ours(model: torch.nn.Module, batches: Callable[[int], torch.Tensor], settings: dict[str, Any]):
    """Our trainer with a constant LR and no weight decay; (final state, step times). The clock ticks after every
    step (a callback): its time, trainer overhead included."""
    from steps.train import trainer as ours

    config = ours.TrainConfig.from_dict({
        "schedule": {"kind": "constant", "peak_lr": LR, "warmup_steps": 0},
        "optimizer": {"betas": [0.9, 0.95], "eps": 1e-5, "weight_decay": 0.0}, "max_grad_norm": 1.0, **settings,
    })
    clock = StepClock()

    class Tick(ours.Callback):
        def on_step(self, trainer: Any, metrics: dict[str, Any]) -> None:
            clock.tick()

    return ours.Trainer(model, batches, config, callbacks=[Tick()]).fit(), clock.times()


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
    if mode not in ("peer", "olmo_core"):  # the peers import nothing of ours
        sys.path.insert(0, str(REPO))
    torch.manual_seed(0)
    torch.set_num_threads(options["threads"])
    modes = {"ours": run_ours, "peer": run_peer, "olmo_core": run_olmo_core, "peak": run_peak, "gpu": run_gpu}
    print(json.dumps(modes[mode](options)), flush=True)


if __name__ == "__main__":
    main()
