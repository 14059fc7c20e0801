"""Tango steps of pretraining and the anneal, and the run-and-save code every training step shares."""
from __future__ import annotations

import json
import math
from typing import Any, Callable

import numpy as np
import torch
from tango import Step

from olmo_model import LRSchedule, Olmo, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.models import MODEL_DIR, load_artifact_model, resolve_device
from steps.common.step import ArtifactStep
from steps.data.batches import batch_hash
from steps.data.steps import load_instances, order_for, validate_data_order
from steps.data.tokenize import TOKENIZER_FILE
from steps.data.tokenizer import load_tokenizer
from steps.train.checkpoint import TrainState, save_model
from steps.train.objectives import IGNORE_INDEX
from steps.train.trainer import TrainConfig, train

METRICS_FILE = "metrics.jsonl"
CURVE_POINTS = 50
SHARDING = ("full", "hybrid", "none")  # FSDP: shard everywhere, shard within a node, replicate


def model_config(spec: dict[str, Any]) -> OlmoConfig:
    """``{"preset": name, **overrides}`` or a full config dict."""
    spec = dict(spec)
    preset = spec.pop("preset", None)
    return OlmoConfig.preset(preset, **spec) if preset is not None else OlmoConfig.from_dict(spec)


def pretraining_batches(instances: Artifact, data_order: dict[str, Any]) -> Callable[[int], dict]:
    """``batches(k)``: the token ids of global batch ``k`` of the data order (CPU), with their hash, and labels
    with the instances' label mask applied when it masks anything."""
    index, root = load_instances(instances)
    order = order_for(instances, data_order)

    def batch(step: int) -> dict[str, Any]:
        tokens = index.read_instances(root, order.global_batch(step, data_order["global_batch_size"]))
        batch = {"input_ids": torch.from_numpy(tokens), "batch_hash": batch_hash(tokens)}
        if index.ignore_token_ids:
            labels = np.where(index.label_mask(tokens), tokens, IGNORE_INDEX)
            batch["labels"] = torch.from_numpy(labels)
        return batch

    return batch


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


def loss_curve(history: list[dict[str, Any]], points: int = CURVE_POINTS) -> list[list[float]]:
    """At most ``points`` evenly spaced ``[step, loss]`` pairs, the last step always included."""
    stride = max(1, math.ceil(len(history) / points))
    chosen = history[::stride] + ([history[-1]] if (len(history) - 1) % stride else [])
    return [[m["step"], round(m["loss"], 4)] for m in chosen]


class TrainingStep(ArtifactStep):
    """A step that trains a model and stores it (safetensors + config) with its per-step metrics."""

    @staticmethod
    def check_parallelism(world_size: int, sharding: str) -> None:
        if sharding not in SHARDING:
            raise ValueError(f"sharding: expected one of {SHARDING}, got {sharding!r}")
        if world_size != 1:
            raise ValueError(
                f"world_size {world_size}: this version trains in a single process; the FSDP launcher "
                "(one worker per device, torchrun/Slurm for many nodes) is not available yet"
            )

    def fit(
        self,
        model: Olmo,
        batches: Callable[[int], Any],
        config: TrainConfig,
        log_every: int,
        start_state: TrainState | None = None,
        **train_options: Any,
    ) -> TrainState:
        def log(metrics: dict[str, Any]) -> None:
            if metrics["step"] % log_every and metrics["step"] not in (1, config.max_steps):
                return
            self.logger.info(
                "step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tokens/s",
                metrics["step"],
                config.max_steps,
                metrics["loss"],
                metrics["lr"],
                metrics["grad_norm"],
                metrics["tokens_per_second"],
            )

        return train(
            model,
            batches,
            config,
            start_state=start_state,
            log=log,
            checkpoint_dir=self.work_dir / "checkpoints",
            **train_options,
        )

    def save(self, model: Olmo, state: TrainState, summary: dict[str, Any]) -> Artifact:
        out = self.output_dir()
        final_state = {k: v for k, v in state.to_dict().items() if k != "history"}
        save_model(model, model.config, out / MODEL_DIR, extra=final_state)
        with open(out / METRICS_FILE, "w") as handle:
            for metrics in state.history:
                handle.write(json.dumps(metrics) + "\n")
        history = state.history
        summary = {
            **summary,
            **final_state,
            "parameters": model.config.num_parameters(),
            "loss_first": history[0]["loss"],
            "loss_last": history[-1]["loss"],
            "lr_first": history[0]["lr"],
            "lr_last": history[-1]["lr"],
            "loss_curve": loss_curve(history),
        }
        return self.artifact(out, summary)

    @staticmethod
    def train_config(train: dict[str, Any], **fields: Any) -> TrainConfig:
        """The trainer's config; every step's metrics are recorded (``log_every`` only thins the console)."""
        return TrainConfig.from_dict({**train, **fields, "log_every": 1})


@Step.register("pretrain")
class PretrainOlmo(TrainingStep):
    """Trains OLMo from the mitchell init on the instances, in the data order, with AdamW + LR schedule."""

    VERSION = "002"

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        validate_data_order(kwargs["data_order"])
        config = model_config(kwargs["model"])
        cls.train_config(kwargs["train"], global_batch_size=kwargs["data_order"]["global_batch_size"])
        if config.max_sequence_length < 2:
            raise ValueError("model.max_sequence_length: expected >= 2")

    def run(
        self,
        instances: Artifact,
        model: dict,
        data_order: dict,
        train: dict,
        device: str = "auto",
        world_size: int = 1,
        sharding: str = "full",
        log_every: int = 10,
        checkpoint_every: int | None = None,
    ) -> Artifact:
        self.check_parallelism(world_size, sharding)
        config = model_config(model)
        check_vocabulary(instances, config)
        if instances.summary["seq_len"] > config.max_sequence_length:
            raise ValueError(
                f"instances are {instances.summary['seq_len']} tokens, longer than the model's "
                f"max_sequence_length {config.max_sequence_length}"
            )
        settings = self.train_config(
            train, global_batch_size=data_order["global_batch_size"], checkpoint_every=checkpoint_every
        )
        target = resolve_device(device)
        with torch.device("meta"):
            olmo = Olmo(config)
        olmo.to_empty(device=target)
        olmo.reset_parameters(torch.Generator().manual_seed(settings.seed))
        state = self.fit(olmo, pretraining_batches(instances, data_order), settings, log_every)
        return self.save(olmo, state, {"seed": settings.seed, "global_batch_size": settings.global_batch_size})


@Step.register("anneal")
class AnnealOlmo(TrainingStep):
    """Continues pretraining where it stopped, with the LR going linearly to 0 over ``max_steps``.

    ``train.start_lr`` null starts from the LR pretraining had reached. The data order continues
    from the pretrain step's last batch; the optimizer state starts fresh.
    """

    VERSION = "002"

    @classmethod
    def anneal_config(
        cls, train: dict[str, Any], start_lr: float, batch_size: int, checkpoint_every: int | None = None
    ) -> TrainConfig:
        options = {k: v for k, v in train.items() if k != "start_lr"}
        schedule = LRSchedule.anneal(start_lr, options["max_steps"]).to_dict()
        return cls.train_config(
            options, schedule=schedule, global_batch_size=batch_size, checkpoint_every=checkpoint_every
        )

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        validate_data_order(kwargs["data_order"])
        cls.anneal_config(kwargs["train"], 1e-4, kwargs["data_order"]["global_batch_size"])

    def run(
        self,
        pretrained: Artifact,
        instances: Artifact,
        data_order: dict,
        train: dict,
        device: str = "auto",
        world_size: int = 1,
        sharding: str = "full",
        log_every: int = 10,
        checkpoint_every: int | None = None,
    ) -> Artifact:
        self.check_parallelism(world_size, sharding)
        start_lr = train.get("start_lr") or pretrained.summary["lr_last"]
        settings = self.anneal_config(train, start_lr, data_order["global_batch_size"], checkpoint_every)
        target = resolve_device(device)
        olmo = load_artifact_model(pretrained, target)
        start = TrainState(data_step=pretrained.summary["data_step"], tokens_seen=pretrained.summary["tokens_seen"])
        state = self.fit(olmo, pretraining_batches(instances, data_order), settings, log_every, start_state=start)
        return self.save(olmo, state, {"start_lr": start_lr, "continued_from_data_step": start.data_step})
