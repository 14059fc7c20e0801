"""Tango steps of adaptation: SFT and preference data (made from the corpus, or read from files in open-instruct's
formats), the reference model's log-probs, SFT, and DPO."""
from __future__ import annotations

from typing import Any, Callable

from tango import Step

from steps.adapt.chat import build_preference_pairs, build_sft_examples, read_preference_pairs, read_sft_examples
from steps.adapt.config import (
    AdaptationConfig, AdaptationDataConfig, FinetuneConfig, InstructDataConfig, PreferenceTuneConfig, ReferenceConfig,
    TemplateSpec,
)
from steps.adapt.dpo import (
    EncodedPair, PreferenceData, encode_preference_pairs, read_reference_logprobs,
    with_reference_logprobs, write_reference_logprobs,
)
from steps.adapt.instruct_data import instruct_data_fingerprint, read_preference_rows, read_sft_rows
from steps.adapt.sft import ChatData, encode_sft_examples
from steps.adapt.templates import ChatTemplate, chat_template
from steps.common.artifacts import Artifact
from steps.common.documents import write_jsonl_gz
from steps.common.execution import Execution
from steps.common.models import artifact_model_config, load_artifact_model, model_tokenizer_dir, resolve_device
from steps.common.step import ArtifactStep, ContentHash
from steps.data.tokenize import tokenizer_file
from steps.data.tokenizer import load_tokenizer
from steps.train.steps import TrainingStep, check_batch_division
from steps.train.worker import Initialization, TrainingJob

SFT_FILE = "sft.jsonl.gz"
PREFERENCES_FILE = "preferences.jsonl.gz"


def adaptation_template(spec: TemplateSpec, tokenizer: Artifact) -> ChatTemplate:
    """The chat template of a config; "checkpoint" is the Jinja template of the tokenizer artifact (an imported
    model's ``tokenizer/`` files)."""
    return chat_template(spec, tokenizer_config=model_tokenizer_dir(tokenizer) or tokenizer.path)


def encoded_preferences(
    data: Artifact, tokenizer: Artifact, eos_token_id: int, max_length: int, template: TemplateSpec,
) -> tuple[list[EncodedPair], dict[str, int]]:
    """The pairs of a preference-data artifact as the DPO step and the reference log-probs encode them."""
    return encode_preference_pairs(
        read_preference_pairs(data.path / PREFERENCES_FILE), load_tokenizer(tokenizer_file(tokenizer)), eos_token_id,
        max_length, template=adaptation_template(template, tokenizer),
    )


class AdaptationRows(ArtifactStep):
    """A step whose artifact is rows of adaptation data in one jsonl.gz file, ``FILE``, which SFT or DPO reads."""

    FILE: str

    def rows_artifact(self, rows: list[dict[str, Any]], summary: dict[str, Any]) -> Artifact:
        out = self.output_dir()
        write_jsonl_gz(out / self.FILE, rows)
        return self.artifact(out, {"rows": len(rows), **summary})


class BuildAdaptationData(AdaptationRows):
    """Rows made from the corpus' documents."""

    BUILD: Callable[..., tuple[list[dict[str, Any]], dict[str, int]]]
    CONFIGS = {"config": AdaptationDataConfig.from_dict}

    def run(self, documents: Artifact, config: AdaptationDataConfig) -> Artifact:
        rows, counts = type(self).BUILD(documents.path / "documents", config.max_examples, config.seed,
                                        config.min_chars, config.max_chars)
        return self.rows_artifact(rows, counts)


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


class ReadAdaptationFiles(AdaptationRows):
    """Rows in open-instruct's formats from files, URLs or a datasets-hub name, checked and written as the
    corpus-made data is (one jsonl.gz file); fingerprinted by the files' content. Bad rows are dropped and
    counted by reason, with file:line examples, in the summary (rows_read = kept + dropped)."""

    READ: Callable[..., tuple[list[dict[str, Any]], Any]]
    CONTENT_HASHED = {"config": ContentHash(lambda config: instruct_data_fingerprint(config["files"]),
                                            location_keys=("files",))}
    CONFIGS = {"config": InstructDataConfig.from_dict}

    def run(self, config: InstructDataConfig) -> Artifact:
        rows, report = type(self).READ(config.files)
        return self.rows_artifact(rows, {"content_hash": self.content_hash("config"), **report.as_dict()})


@Step.register("sft_data_files")
class ReadSFTFiles(ReadAdaptationFiles):
    """SFT conversations ``{"messages": [{role, content}, ...]}`` (Tulu's format)."""

    VERSION = "001"
    FILE = SFT_FILE
    READ = staticmethod(read_sft_rows)


@Step.register("preference_data_files")
class ReadPreferenceFiles(ReadAdaptationFiles):
    """Preference pairs: ``{"chosen": [...], "rejected": [...]}`` full conversations sharing their prompt
    (open-instruct's, UltraFeedback's), or ``{"prompt", "chosen", "rejected"}`` (TRL's explicit prompt)."""

    VERSION = "001"
    FILE = PREFERENCES_FILE
    READ = staticmethod(read_preference_rows)


@Step.register("reference_logprobs")
class ReferenceLogprobs(ArtifactStep):
    """The reference model's summed response log-probs of every preference pair (the DPO step's input model, on
    one device), computed once: a DPO ablation of β or the loss type reuses them, and ``dpo_norm`` derives its
    length-normalized ones from the same sums."""

    VERSION = "001"
    CONFIGS = {"config": ReferenceConfig.from_dict}

    def run(
        self, model: Artifact, data: Artifact, tokenizer: Artifact, config: ReferenceConfig,
        execution: Execution = Execution(),
    ) -> Artifact:
        settings = artifact_model_config(model)
        pairs, counts = encoded_preferences(data, tokenizer, settings.eos_token_id, config.max_length,
                                            config.template)
        device = resolve_device(execution.device)
        scored = with_reference_logprobs(load_artifact_model(model, device), pairs, settings.pad_token_id,
                                         config.batch_size, config.precision)
        out = self.output_dir()
        digest = write_reference_logprobs(out, scored)
        return self.artifact(out, {"pairs": counts, "pairs_digest": digest, "model": model.fingerprint})


class AdaptationStep(TrainingStep):
    """Fine-tunes a model artifact with open-instruct's recipe shape (epochs, LR, warmup ratio), on the
    workers the recipe's ``execution`` asks for, like every training step."""

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        train = kwargs["train"]
        check_batch_division(train.global_batch_size, kwargs["execution"].world_size, train.micro_batch_size, "train.")

    def adaptation_job(
        self, fresh_output: bool, pretrained: Artifact, train: AdaptationConfig, execution: Execution,
        data: ChatData | PreferenceData,
    ) -> TrainingJob:
        return self.new_job(
            execution, fresh_output, model=artifact_model_config(pretrained), data=data,
            init=Initialization(pretrained=str(pretrained.path)),
            config=train.train_config(data.steps_for_epochs(train.epochs)),
        )


@Step.register("sft")
class SupervisedFinetune(AdaptationStep):
    """SFT: next-token loss on the assistant turns only (user turns and headers masked), conversations packed into
    rows with ``train.packing``."""

    VERSION = "003"
    CONFIGS = {"train": FinetuneConfig.from_dict}

    def run(
        self, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: FinetuneConfig,
        execution: Execution = Execution(),
    ) -> Artifact:
        return self.train(*self.job(True, pretrained=pretrained, data=data, tokenizer=tokenizer, train=train,
                                    execution=execution))

    def job(
        self, fresh_output: bool, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: FinetuneConfig,
        execution: Execution,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = artifact_model_config(pretrained)
        examples, counts = encode_sft_examples(
            read_sft_examples(data.path / SFT_FILE), load_tokenizer(tokenizer_file(tokenizer)), config.eos_token_id,
            train.max_length, template=adaptation_template(train.template, tokenizer),
        )
        chats = ChatData(examples, config.pad_token_id, train.global_batch_size, train.seed, train.max_length,
                         packing=train.packing, loss_reduction=train.loss_reduction)
        summary = {"examples": counts, **({"packing": chats.packing_summary()} if train.packing else {})}
        return self.adaptation_job(fresh_output, pretrained, train, execution, chats), summary


@Step.register("dpo")
class DirectPreferenceOptimization(AdaptationStep):
    """DPO (``train.loss_type`` "dpo", "dpo_norm" or "simpo") against the frozen input model, whose log-probs come
    from the ``reference`` step (computed by the workers before training when it is not given)."""

    VERSION = "003"
    CONFIGS = {"train": PreferenceTuneConfig.from_dict}

    def history_summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in history[-1].items() if key.startswith("rewards/")}

    def run(
        self, pretrained: Artifact, data: Artifact, tokenizer: Artifact, train: PreferenceTuneConfig,
        reference: Artifact | None = None, execution: Execution = Execution(),
    ) -> Artifact:
        return self.train(*self.job(True, pretrained=pretrained, data=data, tokenizer=tokenizer, train=train,
                                    reference=reference, execution=execution))

    def job(
        self, fresh_output: bool, pretrained: Artifact, data: Artifact, tokenizer: Artifact,
        train: PreferenceTuneConfig, execution: Execution, reference: Artifact | None = None,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = artifact_model_config(pretrained)
        pairs, counts = encoded_preferences(data, tokenizer, config.eos_token_id, train.max_length, train.template)
        if reference is not None:
            pairs = read_reference_logprobs(reference.path, pairs, f"reference {reference.fingerprint}")
        preferences = PreferenceData(
            pairs, config.pad_token_id, train.global_batch_size, train.seed, train.max_length, train.beta,
            reference_batch_size=train.micro_batch_size, loss_type=train.loss_type,
            label_smoothing=train.label_smoothing, gamma_beta_ratio=train.gamma_beta_ratio,
        )
        summary = {"pairs": counts, "beta": train.beta, "loss_type": train.loss_type}
        return self.adaptation_job(fresh_output, pretrained, train, execution, preferences), summary
