"""Tango steps of adaptation: SFT and preference data made from the corpus, SFT, and DPO."""
from __future__ import annotations

import math
from typing import Any, Callable

from tango import Step

from integrations.wandb_logger import check_settings
from steps.adapt.chat import (
    build_preference_pairs,
    build_sft_examples,
    read_preference_pairs,
    read_sft_examples,
)
from steps.adapt.dpo import DPOLoss, dpo_batches, encode_preference_pairs, with_reference_logprobs
from steps.adapt.sft import sft_batches
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.models import load_artifact_model, resolve_device
from steps.common.step import ArtifactStep, check_keys
from steps.data.steps import tokenizer_file
from steps.data.tokenizer import load_tokenizer
from steps.train.steps import TrainingStep
from steps.train.trainer import TrainConfig

SFT_FILE = "sft.jsonl.gz"
PREFERENCES_FILE = "preferences.jsonl.gz"
DATA_KEYS = {"max_examples", "seed", "min_chars", "max_chars"}
# open-instruct's recipe: epochs, peak LR, warmup fraction, linear decay to 0.
ADAPT_KEYS = {"epochs", "lr", "warmup_ratio", "max_length", "global_batch_size", "micro_batch_size",
              "optimizer", "max_grad_norm", "seed", "precision", "beta"}


class BuildAdaptationData(ArtifactStep):
    """Writes rows made from the corpus' documents into one jsonl.gz file."""

    FILE: str
    BUILD: Callable[..., tuple[list[dict[str, Any]], dict[str, int]]]

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        check_keys(kwargs["config"], DATA_KEYS, f"{cls.__name__}.config")
        if not isinstance(kwargs["config"].get("max_examples"), int) or kwargs["config"]["max_examples"] < 1:
            raise ValueError(f"{cls.__name__}.config.max_examples: expected a positive integer")

    def run(self, documents: Artifact, config: dict) -> Artifact:
        options = dict(config)
        rows, counts = type(self).BUILD(documents.path / "documents", options.pop("max_examples"), **options)
        out = self.output_dir()
        write_jsonl_gz(out / self.FILE, rows)
        return self.artifact(out, {"rows": len(rows), **counts})


@Step.register("sft_data")
class BuildSFTData(BuildAdaptationData):
    """Chat examples (open-instruct ``messages``): a paragraph from the user, the next one from the assistant."""

    VERSION = "001"
    FILE = SFT_FILE
    BUILD = staticmethod(build_sft_examples)


@Step.register("preference_data")
class BuildPreferenceData(BuildAdaptationData):
    """Preference pairs: the true next paragraph is chosen, another document's is rejected."""

    VERSION = "001"
    FILE = PREFERENCES_FILE
    BUILD = staticmethod(build_preference_pairs)


class AdaptationStep(TrainingStep):
    """Fine-tunes a model artifact with open-instruct's recipe shape (epochs, LR, warmup ratio)."""

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        check_keys(kwargs["train"], ADAPT_KEYS, f"{cls.__name__}.train")
        cls.adapt_config(kwargs["train"], num_steps=100)
        check_settings(kwargs.get("wandb"))

    @classmethod
    def adapt_config(cls, train: dict[str, Any], num_steps: int) -> TrainConfig:
        schedule = {
            "kind": "linear",
            "peak_lr": train["lr"],
            "warmup_steps": math.ceil(train.get("warmup_ratio", 0.0) * num_steps),
            "warmup_start_fraction": 0.0,
            "total_steps": num_steps,
            "final_lr_fraction": 0.0,
        }
        options = {k: v for k, v in train.items() if k not in {"epochs", "lr", "warmup_ratio", "max_length", "beta"}}
        return cls.train_config(options, max_steps=num_steps, schedule=schedule)


@Step.register("sft")
class SupervisedFinetune(AdaptationStep):
    """SFT: next-token loss on the assistant turns only (user turns and headers masked)."""

    VERSION = "002"

    def run(
        self,
        pretrained: Artifact,
        data: Artifact,
        tokenizer: Artifact,
        train: dict,
        device: str = "auto",
        log_every: int = 10,
        wandb: dict | None = None,
    ) -> Artifact:
        model = load_artifact_model(pretrained, resolve_device(device))
        batches, counts = sft_batches(
            read_sft_examples(data.path / SFT_FILE),
            load_tokenizer(tokenizer_file(tokenizer)),
            train["max_length"],
            eos_token_id=model.config.eos_token_id,
            pad_token_id=model.config.pad_token_id,
            batch_size=train["global_batch_size"],
            seed=train.get("seed", 0),
        )
        settings = self.adapt_config(train, batches.steps_for_epochs(train["epochs"]))
        state = self.fit(model, batches, settings, log_every, wandb)
        return self.save(model, state, {"examples": counts})


@Step.register("dpo")
class DirectPreferenceOptimization(AdaptationStep):
    """DPO: the sigmoid loss on summed response log-probs against the frozen input model."""

    VERSION = "002"

    def run(
        self,
        pretrained: Artifact,
        data: Artifact,
        tokenizer: Artifact,
        train: dict,
        device: str = "auto",
        log_every: int = 10,
        wandb: dict | None = None,
    ) -> Artifact:
        model = load_artifact_model(pretrained, resolve_device(device))
        config = model.config
        pairs, counts = encode_preference_pairs(
            read_preference_pairs(data.path / PREFERENCES_FILE),
            load_tokenizer(tokenizer_file(tokenizer)),
            config.eos_token_id,
            train["max_length"],
        )
        # The reference is the input model before any update: its log-probs are computed once.
        pairs = with_reference_logprobs(model, pairs, config.pad_token_id, train["micro_batch_size"])
        batches = dpo_batches(
            pairs, pad_token_id=config.pad_token_id, batch_size=train["global_batch_size"], seed=train.get("seed", 0)
        )
        settings = self.adapt_config(train, batches.steps_for_epochs(train["epochs"]))
        state = self.fit(model, batches, settings, log_every, wandb, loss_function=DPOLoss(train.get("beta", 0.1)))
        last = state.history[-1]
        accuracy = {k: v for k, v in last.items() if k.startswith("rewards/")}
        return self.save(model, state, {"pairs": counts, "beta": train.get("beta", 0.1), **accuracy})
