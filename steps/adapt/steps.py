"""Tango steps of adaptation: SFT and preference data made from the corpus, SFT, and DPO."""
from __future__ import annotations

import math
from typing import Any, Callable

from tango import Step

from olmo_model.config import check_keys
from steps.adapt.chat import build_preference_pairs, build_sft_examples, read_preference_pairs, read_sft_examples
from steps.adapt.dpo import PreferenceData, encode_preference_pairs
from steps.adapt.sft import ChatData, encode_sft_examples
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.execution import Execution, ExecutionArgument
from steps.common.models import artifact_model_config
from steps.common.step import ArtifactStep
from steps.data.tokenize import tokenizer_file
from steps.data.tokenizer import load_tokenizer
from steps.train.steps import TrainingStep, check_batch_division
from steps.train.trainer import TrainConfig
from steps.train.worker import Initialization, TrainingJob

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
    """Fine-tunes a model artifact with open-instruct's recipe shape (epochs, LR, warmup ratio), on the
    workers the recipe's ``execution`` asks for, like every training step."""

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        train = kwargs["train"]
        check_keys(train, ADAPT_KEYS, f"{cls.__name__}.train")
        cls.adapt_config(train, num_steps=100)
        check_batch_division(train["global_batch_size"], kwargs["execution"].world_size, train["micro_batch_size"],
                             "train.")

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

    def run(
        self, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: dict,
        execution: ExecutionArgument = None,
    ) -> Artifact:
        return self.train(*self.job(True, pretrained=pretrained, data=data, tokenizer=tokenizer, train=train,
                                    execution=execution))

    def adaptation_job(
        self, fresh_output: bool, pretrained: Artifact, train: dict, execution: Execution,
        data: ChatData | PreferenceData,
    ) -> TrainingJob:
        return self.new_job(
            execution, fresh_output, model=artifact_model_config(pretrained), data=data,
            init=Initialization(pretrained=str(pretrained.path)),
            config=self.adapt_config(train, data.steps_for_epochs(train["epochs"])),
        )


@Step.register("sft")
class SupervisedFinetune(AdaptationStep):
    """SFT: next-token loss on the assistant turns only (user turns and headers masked)."""

    VERSION = "003"

    def job(
        self, fresh_output: bool, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: dict,
        execution: Execution,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = artifact_model_config(pretrained)
        examples, counts = encode_sft_examples(
            read_sft_examples(data.path / SFT_FILE), load_tokenizer(tokenizer_file(tokenizer)), config.eos_token_id,
            train["max_length"],
        )
        chats = ChatData(examples, config.pad_token_id, train["global_batch_size"], train.get("seed", 0),
                         train["max_length"])
        return self.adaptation_job(fresh_output, pretrained, train, execution, chats), {"examples": counts}


@Step.register("dpo")
class DirectPreferenceOptimization(AdaptationStep):
    """DPO: the sigmoid loss on summed response log-probs against the frozen input model."""

    VERSION = "003"

    def history_summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in history[-1].items() if key.startswith("rewards/")}

    def job(
        self, fresh_output: bool, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: dict,
        execution: Execution,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = artifact_model_config(pretrained)
        pairs, counts = encode_preference_pairs(
            read_preference_pairs(data.path / PREFERENCES_FILE), load_tokenizer(tokenizer_file(tokenizer)),
            config.eos_token_id, train["max_length"],
        )
        beta = train.get("beta", 0.1)
        preferences = PreferenceData(pairs, config.pad_token_id, train["global_batch_size"], train.get("seed", 0),
                                     train["max_length"], beta, reference_batch_size=train["micro_batch_size"])
        return self.adaptation_job(fresh_output, pretrained, train, execution, preferences), {"pairs": counts,
                                                                                             "beta": beta}
