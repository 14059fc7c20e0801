"""The recipe blocks of adaptation: its data (made from the corpus, or read from open-instruct-format files), the
reference log-probs, and SFT's and DPO's ``train`` blocks in open-instruct's shape (epochs, peak LR, warmup ratio,
linear decay to 0)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Union

from olmo_model import LRSchedule
from olmo_model.config import Config, ConfigError, require
from steps.adapt.dpo import check_loss_options
from steps.adapt.instruct_data import instruct_sources
from steps.adapt.templates import ChatTemplateError, chat_template
from steps.train.trainer import Precision, TrainConfig, UpdateConfig

# A chat template: "tulu", "olmo", "checkpoint" (the Jinja template in the tokenizer's tokenizer_config.json),
# or a spec such as {"name": "olmo", "system_prompt": ...} (steps.adapt.templates.chat_template).
TemplateSpec = Union[str, dict[str, Any]]


def check_template(template: TemplateSpec, where: str) -> None:
    """Fail before any compute on a template that cannot be built (a checkpoint's is checked when it is read)."""
    name = template if isinstance(template, str) else template.get("name")
    if name != "checkpoint":
        try:
            chat_template(template)
        except ChatTemplateError as exc:
            raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class AdaptationDataConfig(Config):
    """``sft_data``/``preference_data``'s ``config``: up to ``max_examples`` rows chosen by ``seed`` among the
    documents whose first two paragraphs have ``min_chars``..``max_chars`` characters."""

    max_examples: int
    seed: int = 0
    min_chars: int = 20
    max_chars: int = 1000

    WHERE = "config"

    def check(self) -> None:
        require(self.max_examples >= 1, "config.max_examples", "a positive integer", self.max_examples)
        require(0 <= self.min_chars <= self.max_chars, "config.min_chars", f"0..max_chars ({self.max_chars})",
                self.min_chars)


@dataclass(frozen=True)
class InstructDataConfig(Config):
    """``sft_data_files``/``preference_data_files``' ``config``: ``files``, a path or fsspec URL (jsonl, jsonl.gz,
    parquet), a directory of them, a datasets-hub name or ``{"hub", "split", "revision"}``, or a list of these."""

    files: Any

    WHERE = "config"

    def check(self) -> None:
        try:
            instruct_sources(self.files)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"config.files: {exc}") from None


@dataclass(frozen=True)
class ReferenceConfig(Config):
    """``reference_logprobs``' ``config``: the pairs encoded as the DPO step encodes them (``max_length``,
    ``template``), scored ``batch_size`` pairs at a time in ``precision``."""

    max_length: int
    template: TemplateSpec = "tulu"
    precision: Precision = "fp32"
    batch_size: int = 1

    WHERE = "config"

    def check(self) -> None:
        require(self.max_length >= 2, "config.max_length", "an integer >= 2", self.max_length)
        require(self.batch_size >= 1, "config.batch_size", "a positive integer", self.batch_size)
        check_template(self.template, "config.template")


@dataclass(frozen=True, kw_only=True)
class AdaptationConfig(UpdateConfig):
    """What SFT's and DPO's ``train`` blocks share: ``epochs`` over the examples in global batches of
    ``global_batch_size``, the LR warming up linearly from 0 to ``lr`` over ``warmup_ratio`` of the steps, then
    linearly down to 0; examples rendered in the chat ``template`` and cut to ``max_length`` tokens."""

    epochs: float
    lr: float
    global_batch_size: int
    max_length: int
    warmup_ratio: float = 0.0
    seed: int = 0  # the order of the examples in each epoch
    template: TemplateSpec = "tulu"

    def check(self) -> None:
        super().check()
        require(self.epochs > 0, "train.epochs", "a positive number", self.epochs)
        require(self.lr > 0, "train.lr", "a positive number", self.lr)
        require(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "a number in [0, 1)", self.warmup_ratio)
        require(self.max_length >= 2, "train.max_length", "an integer >= 2", self.max_length)
        check_template(self.template, "train.template")

    def train_config(self, num_steps: int) -> TrainConfig:
        """The trainer's config for a run of ``num_steps`` steps."""
        schedule = LRSchedule(kind="linear", peak_lr=self.lr, warmup_steps=math.ceil(self.warmup_ratio * num_steps),
                              warmup_start_fraction=0.0, total_steps=num_steps, final_lr_fraction=0.0)
        return TrainConfig(**self.update_settings(), global_batch_size=self.global_batch_size, max_steps=num_steps,
                           schedule=schedule)


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(AdaptationConfig):
    """SFT's ``train`` block: :class:`AdaptationConfig`; ``packing`` several conversations into each row of
    ``max_length`` tokens (attention and positions restart at each conversation; ``global_batch_size`` then
    counts rows), and the ``loss_reduction``: "mean" over the global batch's label tokens, or open-instruct's
    "sum" (summed over its tokens, divided by its rows; ``steps.train.objectives.NextTokenLoss``)."""

    packing: bool = False
    loss_reduction: Literal["mean", "sum"] = "mean"


@dataclass(frozen=True, kw_only=True)
class PreferenceTuneConfig(AdaptationConfig):
    """DPO's ``train`` block: :class:`AdaptationConfig` and the loss (``steps.adapt.dpo``): ``loss_type`` "dpo"
    (summed log-probs), "dpo_norm" (length-normalized; open-instruct's default since its OLMo 3 experiments, with
    β 5) or "simpo" (reference-free, margin ``gamma_beta_ratio``·β), ``beta``, ``label_smoothing``."""

    beta: float = 0.1
    loss_type: Literal["dpo", "dpo_norm", "simpo"] = "dpo"
    label_smoothing: float = 0.0
    gamma_beta_ratio: float = 0.3

    def check(self) -> None:
        super().check()
        try:
            check_loss_options(self.loss_type, self.beta, self.label_smoothing, self.gamma_beta_ratio)
        except ValueError as exc:
            raise ConfigError(f"train.{exc}") from None
