"""Tango steps of adaptation: SFT and preference data made from the corpus, SFT, and DPO."""
from __future__ import annotations

from typing import Any, Callable

from tango import Step

from steps.adapt.config import AdaptationDataConfig, FinetuneConfig, PreferenceTuneConfig
from steps.adapt.chat import build_preference_pairs, build_sft_examples, read_preference_pairs, read_sft_examples
from steps.adapt.dpo import PreferenceData, encode_preference_pairs
from steps.adapt.sft import ChatData, encode_sft_examples
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.execution import Execution
from steps.common.models import artifact_model_config
from steps.common.step import ArtifactStep
from steps.data.tokenize import tokenizer_file
from steps.data.tokenizer import load_tokenizer
from steps.train.steps import TrainingStep, check_batch_division
from steps.train.worker import Initialization, TrainingJob

SFT_FILE = "sft.jsonl.gz"
PREFERENCES_FILE = "preferences.jsonl.gz"


class BuildAdaptationData(ArtifactStep):
    """Writes rows made from the corpus' documents into one jsonl.gz file."""

    FILE: str
    BUILD: Callable[..., tuple[list[dict[str, Any]], dict[str, int]]]
    CONFIGS = {"config": AdaptationDataConfig.from_dict}

    def run(self, documents: Artifact, config: AdaptationDataConfig) -> Artifact:
        rows, counts = type(self).BUILD(documents.path / "documents", config.max_examples, config.seed,
                                        config.min_chars, config.max_chars)
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
        check_batch_division(train.global_batch_size, kwargs["execution"].world_size, train.micro_batch_size, "train.")

    def run(
        self, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: FinetuneConfig,
        execution: Execution = Execution(),
    ) -> Artifact:
        return self.train(*self.job(True, pretrained=pretrained, data=data, tokenizer=tokenizer, train=train,
                                    execution=execution))

    def adaptation_job(
        self, fresh_output: bool, pretrained: Artifact, train: FinetuneConfig, execution: Execution,
        data: ChatData | PreferenceData,
    ) -> TrainingJob:
        return self.new_job(
            execution, fresh_output, model=artifact_model_config(pretrained), data=data,
            init=Initialization(pretrained=str(pretrained.path)),
            config=train.train_config(data.steps_for_epochs(train.epochs)),
        )


@Step.register("sft")
class SupervisedFinetune(AdaptationStep):
    """SFT: next-token loss on the assistant turns only (user turns and headers masked)."""

    VERSION = "003"
    CONFIGS = {"train": FinetuneConfig.from_dict}

    def job(
        self, fresh_output: bool, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: FinetuneConfig,
        execution: Execution,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = artifact_model_config(pretrained)
        examples, counts = encode_sft_examples(
            read_sft_examples(data.path / SFT_FILE), load_tokenizer(tokenizer_file(tokenizer)), config.eos_token_id,
            train.max_length,
        )
        chats = ChatData(examples, config.pad_token_id, train.global_batch_size, train.seed, train.max_length)
        return self.adaptation_job(fresh_output, pretrained, train, execution, chats), {"examples": counts}


@Step.register("dpo")
class DirectPreferenceOptimization(AdaptationStep):
    """DPO: the sigmoid loss on summed response log-probs against the frozen input model."""

    VERSION = "003"
    CONFIGS = {"train": PreferenceTuneConfig.from_dict}

    def history_summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in history[-1].items() if key.startswith("rewards/")}

    def job(
        self, fresh_output: bool, pretrained: Artifact, data: Artifact, tokenizer: Artifact,
        train: PreferenceTuneConfig, execution: Execution,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = artifact_model_config(pretrained)
        pairs, counts = encode_preference_pairs(
            read_preference_pairs(data.path / PREFERENCES_FILE), load_tokenizer(tokenizer_file(tokenizer)),
            config.eos_token_id, train.max_length,
        )
        preferences = PreferenceData(pairs, config.pad_token_id, train.global_batch_size, train.seed,
                                     train.max_length, train.beta, reference_batch_size=train.micro_batch_size)
        return self.adaptation_job(fresh_output, pretrained, train, execution, preferences), {"pairs": counts,
                                                                                             "beta": train.beta}
