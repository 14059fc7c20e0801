"""Tango steps of pretraining and the anneal, and ``TrainingStep``, the base of every training step.

Every training step (``pretrain``, ``anneal``, and ``sft``/``dpo`` in ``steps.adapt``) builds a ``TrainingJob``
and launches one worker per device (``steps.train.worker``) through PyTorch's elastic launcher, on one node or
many, and returns when they finish; a killed run resumes from the last checkpoint in the step's work directory.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tango import Step

from integrations.launcher import Rendezvous, launch_workers
from integrations.wandb_logger import step_run
from olmo_model import LRSchedule, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.execution import Execution
from steps.common.models import artifact_model_config
from steps.common.step import ArtifactStep
from steps.corpus.mix import HELDOUT_DIR
from steps.data.order import DataOrderConfig
from steps.data.tokenize import TOKENIZER_FILE
from steps.train.checkpoint import TrainState
from steps.evaluation.config import InLoopEvalConfig
from steps.train.in_loop_eval import InLoopEvaluator
from steps.train.pretraining_data import PretrainingData, check_vocabulary
from steps.train.runtime import worker_environment
from steps.train.trainer import TrainConfig, UpdateConfig
from steps.train.worker import FINAL_CHECKPOINT_DIR, METRICS_FILE, Initialization, TrainingJob, run_training_job

CURVE_POINTS = 50
CHECKPOINTS_DIR = "checkpoints"


def loss_curve(history: list[dict[str, Any]], points: int = CURVE_POINTS) -> list[list[float]]:
    """At most ``points`` evenly spaced ``[step, loss]`` pairs, the last step always included."""
    stride = max(1, math.ceil(len(history) / points))
    chosen = history[::stride] + ([history[-1]] if (len(history) - 1) % stride else [])
    return [[m["step"], round(m["loss"], 4)] for m in chosen]


def training_summary(config: OlmoConfig, final_state: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """What a training artifact's manifest says about the run."""
    return {
        **final_state,
        "parameters": config.num_parameters(),
        "loss_first": history[0]["loss"],
        "loss_last": history[-1]["loss"],
        "lr_first": history[0]["lr"],
        "lr_last": history[-1]["lr"],
        "loss_curve": loss_curve(history),
    }


def check_batch_division(global_batch_size: int, world_size: int, micro_batch_size: int, where: str) -> None:
    """Every rank trains the same whole number of micro-batches of a global batch: the global batch splits
    evenly over the ranks, and a rank's share into micro-batches."""
    if global_batch_size % world_size:
        raise ValueError(
            f"{where}global_batch_size {global_batch_size} is not divisible by world_size {world_size} "
            f"(execution): every rank trains global_batch_size / world_size instances a step"
        )
    share = global_batch_size // world_size
    if share % micro_batch_size:
        raise ValueError(
            f"train.micro_batch_size {micro_batch_size} does not divide a rank's share of the global batch, "
            f"{where}global_batch_size {global_batch_size} / world_size {world_size} = {share} instances"
        )


class TrainingStep(ArtifactStep):
    """A step that trains a model with the trainer: its workers (one per device, on one node or many) are
    started by the launcher, and a killed run resumes from the checkpoints in the step's work directory.

    ``run`` builds the step's ``TrainingJob`` (``job``) and ``train`` s it. Every node of a multi-node job builds
    the same job from the same workflow (``olmo-tango train-node``) and ``launch`` es its share of the workers.
    """

    def job(self, fresh_output: bool, **arguments: Any) -> tuple[TrainingJob, dict[str, Any]]:
        """The job of ``run``'s arguments, and what the artifact's summary says about its settings."""
        raise NotImplementedError

    def new_job(self, execution: Execution, fresh_output: bool, **fields: Any) -> TrainingJob:
        """A job of this step: checkpoints in its work directory, the result in its artifact directory, its
        W&B run when ``execution.wandb`` is set."""
        return TrainingJob(
            execution=execution,
            checkpoint_dir=str(self.work_dir / CHECKPOINTS_DIR),
            output_dir=str(self.output_dir(fresh=fresh_output)),
            wandb_run=step_run(self, execution.wandb) if execution.wandb is not None else None,
            **fields,
        )

    def train(self, job: TrainingJob, summary: dict[str, Any]) -> Artifact:
        """Run ``job`` and store its result with ``summary`` and the training's."""
        final_state, history = self.launch(job)
        summary = {**summary, **training_summary(job.model, final_state, history), **self.history_summary(history)}
        return self.artifact(Path(job.output_dir), summary)

    def history_summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """What the artifact's summary adds from the per-step metrics (besides ``training_summary``)."""
        return {}

    def launch(self, job: TrainingJob) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run ``job`` on this node's share of the workers; the final state and per-step metrics (on the
        node that holds rank 0, which writes them)."""
        execution = job.execution
        rendezvous = Rendezvous(execution.nnodes, execution.rdzv_endpoint, self.unique_id, execution.max_restarts)
        results = launch_workers(
            run_training_job, (job,), execution.workers_per_node, rendezvous, environment=worker_environment()
        )
        if 0 not in results:
            return {}, []
        history = [json.loads(line) for line in (Path(job.output_dir) / METRICS_FILE).read_text().splitlines()]
        return results[0], history



class PretrainingStep(TrainingStep):
    """Pretrain or anneal: the instances in the data order, on any number of workers, with in-loop evaluation."""

    CONFIGS = {"data_order": DataOrderConfig.from_dict, "in_loop_eval": InLoopEvalConfig.from_dict}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        check_batch_division(kwargs["data_order"].global_batch_size, kwargs["execution"].world_size,
                             kwargs["train"].micro_batch_size, "data_order.")
        if kwargs.get("in_loop_eval") is not None and kwargs.get("heldout") is None:
            raise ValueError("in_loop_eval needs `heldout`: the mix step whose held-out documents it scores")

    def pretraining_job(
        self, fresh_output: bool, instances: Artifact, data_order: DataOrderConfig, execution: Execution,
        in_loop_eval: InLoopEvalConfig | None, heldout: Artifact | None, **fields: Any,
    ) -> TrainingJob:
        evaluation = None
        if in_loop_eval is not None:
            evaluation = functools.partial(
                InLoopEvaluator, instances.path / TOKENIZER_FILE, heldout.path / HELDOUT_DIR, in_loop_eval
            )
        return self.new_job(
            execution, fresh_output, data=PretrainingData(instances, data_order), in_loop_eval=evaluation, **fields
        )


@Step.register("pretrain")
class PretrainOlmo(PretrainingStep):
    """Trains OLMo from the mitchell init on the instances, in the data order, with AdamW + LR schedule."""

    VERSION = "004"
    CONFIGS = {**PretrainingStep.CONFIGS, "model": OlmoConfig.from_dict}

    @classmethod
    def build_configs(cls, kwargs: dict[str, Any]) -> None:
        super().build_configs(kwargs)
        batch_size = kwargs["data_order"].global_batch_size  # the train block takes it from the data order
        cls.type_config(kwargs, "train", lambda block, key: TrainConfig.from_dict(
            {**block, "global_batch_size": batch_size}, key))

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        if kwargs["model"].max_sequence_length < 2:
            raise ValueError("model.max_sequence_length: expected >= 2")
        super().validate(kwargs)

    def run(
        self, instances: Artifact, model: OlmoConfig, data_order: DataOrderConfig, train: TrainConfig,
        execution: Execution = Execution(), in_loop_eval: InLoopEvalConfig | None = None,
        heldout: Artifact | None = None,
    ) -> Artifact:
        return self.train(*self.job(True, instances=instances, model=model, data_order=data_order, train=train,
                                    execution=execution, in_loop_eval=in_loop_eval, heldout=heldout))

    def job(
        self, fresh_output: bool, instances: Artifact, model: OlmoConfig, data_order: DataOrderConfig,
        train: TrainConfig, execution: Execution, in_loop_eval: InLoopEvalConfig | None = None,
        heldout: Artifact | None = None,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        check_vocabulary(instances, model)
        if instances.summary["seq_len"] > model.max_sequence_length:
            raise ValueError(
                f"instances are {instances.summary['seq_len']} tokens, longer than the model's "
                f"max_sequence_length {model.max_sequence_length}"
            )
        job = self.pretraining_job(
            fresh_output, instances, data_order, execution, in_loop_eval, heldout,
            model=model, init=Initialization(seed=train.seed), config=train, hand_off_optimizer=True,
        )
        return job, {"seed": train.seed, "global_batch_size": train.global_batch_size}


@dataclass(frozen=True, kw_only=True)
class AnnealConfig(UpdateConfig):
    """The anneal's ``train`` block: ``max_steps`` steps with the LR going linearly from ``start_lr`` (null: the
    LR pretraining had reached) to 0, AdamW ``optimizer_state`` "fresh" or "carried" over from pretraining."""

    max_steps: int
    start_lr: float | None = None
    optimizer_state: Literal["fresh", "carried"] = "fresh"

    def train_config(self, start_lr: float, global_batch_size: int) -> TrainConfig:
        return TrainConfig(**self.update_settings(), global_batch_size=global_batch_size, max_steps=self.max_steps,
                           schedule=LRSchedule.anneal(start_lr, self.max_steps))


@Step.register("anneal")
class AnnealOlmo(PretrainingStep):
    """Continues pretraining where it stopped, with the LR going linearly to 0 over ``max_steps``.

    ``train.start_lr`` null starts from the LR pretraining had reached. The data order continues from the
    pretrain step's last batch. ``train.optimizer_state`` "fresh" (default) starts AdamW anew; "carried"
    continues pretraining's moments and step counts (the consolidated AdamW state the pretrain artifact
    hands off in ``checkpoint/``); the optimizer's hyperparameters are the anneal's own.
    """

    VERSION = "004"
    CONFIGS = {**PretrainingStep.CONFIGS, "train": AnnealConfig.from_dict}

    def run(
        self, pretrained: Artifact, instances: Artifact, data_order: DataOrderConfig, train: AnnealConfig,
        execution: Execution = Execution(), in_loop_eval: InLoopEvalConfig | None = None,
        heldout: Artifact | None = None,
    ) -> Artifact:
        return self.train(*self.job(True, pretrained=pretrained, instances=instances, data_order=data_order,
                                    train=train, execution=execution, in_loop_eval=in_loop_eval, heldout=heldout))

    def job(
        self, fresh_output: bool, pretrained: Artifact, instances: Artifact, data_order: DataOrderConfig,
        train: AnnealConfig, execution: Execution, in_loop_eval: InLoopEvalConfig | None = None,
        heldout: Artifact | None = None,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        if train.start_lr is None and "lr_last" not in pretrained.summary:
            raise ValueError(f"train.start_lr: null continues at the LR pretraining reached, but {pretrained.fingerprint} "
                             f"was not trained here (an imported model?): give the anneal a start_lr")
        if train.optimizer_state == "carried" and not (pretrained.path / FINAL_CHECKPOINT_DIR).is_dir():
            raise ValueError(f"train.optimizer_state: 'carried' needs the AdamW state a pretrain step hands off, and "
                             f"{pretrained.fingerprint} has none: use 'fresh'")
        start_lr = train.start_lr or pretrained.summary["lr_last"]
        start = TrainState(data_step=pretrained.summary["data_step"], tokens_seen=pretrained.summary["tokens_seen"])
        init = Initialization(pretrained=str(pretrained.path), carry_optimizer=train.optimizer_state == "carried")
        job = self.pretraining_job(
            fresh_output, instances, data_order, execution, in_loop_eval, heldout,
            model=artifact_model_config(pretrained), init=init,
            config=train.train_config(start_lr, data_order.global_batch_size), start_state=start,
        )
        summary = {"start_lr": start_lr, "continued_from_data_step": start.data_step,
                   "optimizer_state": train.optimizer_state}
        return job, summary
