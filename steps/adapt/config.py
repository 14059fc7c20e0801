"""The recipe blocks of adaptation: the data made from the corpus, and SFT's and DPO's ``train`` blocks in
open-instruct's shape (epochs, peak LR, warmup ratio, linear decay to 0)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from olmo_model import LRSchedule
from olmo_model.config import Config, require
from steps.train.trainer import TrainConfig, UpdateConfig


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


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(UpdateConfig):
    """SFT's ``train`` block: ``epochs`` over the examples in global batches of ``global_batch_size``, the LR
    warming up linearly from 0 to ``lr`` over ``warmup_ratio`` of the steps, then linearly down to 0; examples
    cut to ``max_length`` tokens."""

    epochs: float
    lr: float
    global_batch_size: int
    max_length: int
    warmup_ratio: float = 0.0
    seed: int = 0  # the order of the examples in each epoch

    def check(self) -> None:
        super().check()
        require(self.epochs > 0, "train.epochs", "a positive number", self.epochs)
        require(self.lr > 0, "train.lr", "a positive number", self.lr)
        require(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "a number in [0, 1)", self.warmup_ratio)
        require(self.max_length >= 2, "train.max_length", "an integer >= 2", self.max_length)

    def train_config(self, num_steps: int) -> TrainConfig:
        """The trainer's config for a run of ``num_steps`` steps."""
        schedule = LRSchedule(kind="linear", peak_lr=self.lr, warmup_steps=math.ceil(self.warmup_ratio * num_steps),
                              warmup_start_fraction=0.0, total_steps=num_steps, final_lr_fraction=0.0)
        return TrainConfig(**self.update_settings(), global_batch_size=self.global_batch_size, max_steps=num_steps,
                           schedule=schedule)


@dataclass(frozen=True, kw_only=True)
class PreferenceTuneConfig(FinetuneConfig):
    """DPO's ``train`` block: :class:`FinetuneConfig` and the DPO loss's ``beta``."""

    beta: float = 0.1

    def check(self) -> None:
        super().check()
        require(self.beta > 0, "train.beta", "a positive number", self.beta)
