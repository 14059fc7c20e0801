"""Tango steps of pretraining and the anneal, and ``TrainingStep``, the base of every training step.

Every training step (``pretrain``, ``anneal``, and ``sft``/``dpo`` in ``steps.adapt``) builds a ``TrainingJob``
and launches one worker per device (``steps.train.worker``) through PyTorch's elastic launcher, on one node or
many, and returns when they finish; a killed run resumes from the last checkpoint in the step's work directory.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from tango import Step

from integrations.launcher import Rendezvous, launch_workers
from integrations.wandb_logger import step_run
from olmo_model import LRSchedule, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.execution import Execution, ExecutionArgument
from steps.common.models import artifact_model_config
from steps.common.step import ArtifactStep
from steps.corpus.mix import HELDOUT_DIR
from steps.data.order import validate_data_order
from steps.data.tokenize import TOKENIZER_FILE
from steps.train.checkpoint import TrainState
from steps.train.in_loop_eval import InLoopEvaluator, validate_in_loop_eval
from steps.train.pretraining_data import PretrainingData, check_vocabulary
from steps.train.runtime import worker_environment
from steps.train.trainer import TrainConfig
from steps.train.worker import METRICS_FILE, Initialization, TrainingJob, run_training_job

CURVE_POINTS = 50
CHECKPOINTS_DIR = "checkpoints"


def model_config(spec: dict[str, Any]) -> OlmoConfig:
    """``{"preset": name, **overrides}`` or a full config dict."""
    spec = dict(spec)
    preset = spec.pop("preset", None)
    return OlmoConfig.preset(preset, **spec) if preset is not None else OlmoConfig.from_dict(spec)


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


def check_in_loop_eval(in_loop_eval: dict[str, Any] | None, heldout: Any) -> None:
    if in_loop_eval is not None:
        validate_in_loop_eval(in_loop_eval)
        if heldout is None:
            raise ValueError("in_loop_eval needs `heldout`: the mix step whose held-out documents it scores")


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

    @staticmethod
    def train_config(train: dict[str, Any], **fields: Any) -> TrainConfig:
        return TrainConfig.from_dict({**train, **fields})


class PretrainingStep(TrainingStep):
    """Pretrain or anneal: the instances in the data order, on any number of workers, with in-loop evaluation."""

    @classmethod
    def check_pretraining(cls, kwargs: dict[str, Any]) -> None:
        validate_data_order(kwargs["data_order"])
        batch = kwargs["data_order"]["global_batch_size"]
        check_batch_division(batch, kwargs["execution"].world_size, kwargs["train"]["micro_batch_size"], "data_order.")
        check_in_loop_eval(kwargs.get("in_loop_eval"), kwargs.get("heldout"))

    def pretraining_job(
        self, fresh_output: bool, instances: Artifact, data_order: dict, execution: Execution,
        in_loop_eval: dict | None, heldout: Artifact | None, **fields: Any,
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

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        config = model_config(kwargs["model"])
        cls.train_config(kwargs["train"], global_batch_size=kwargs["data_order"]["global_batch_size"])
        if config.max_sequence_length < 2:
            raise ValueError("model.max_sequence_length: expected >= 2")
        cls.check_pretraining(kwargs)

    def run(
        self, instances: Artifact, model: dict, data_order: dict, train: dict,
        execution: ExecutionArgument = None, in_loop_eval: dict | None = None, heldout: Artifact | None = None,
    ) -> Artifact:
        return self.train(*self.job(True, instances=instances, model=model, data_order=data_order, train=train,
                                    execution=execution, in_loop_eval=in_loop_eval, heldout=heldout))

    def job(
        self, fresh_output: bool, instances: Artifact, model: dict, data_order: dict, train: dict,
        execution: Execution, in_loop_eval: dict | None = None, heldout: Artifact | None = None,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        config = model_config(model)
        check_vocabulary(instances, config)
        if instances.summary["seq_len"] > config.max_sequence_length:
            raise ValueError(
                f"instances are {instances.summary['seq_len']} tokens, longer than the model's "
                f"max_sequence_length {config.max_sequence_length}"
            )
        settings = self.train_config(train, global_batch_size=data_order["global_batch_size"])
        job = self.pretraining_job(
            fresh_output, instances, data_order, execution, in_loop_eval, heldout,
            model=config, init=Initialization(seed=settings.seed), config=settings, hand_off_optimizer=True,
        )
        return job, {"seed": settings.seed, "global_batch_size": settings.global_batch_size}


@Step.register("anneal")
class AnnealOlmo(PretrainingStep):
    """Continues pretraining where it stopped, with the LR going linearly to 0 over ``max_steps``.

    ``train.start_lr`` null starts from the LR pretraining had reached. The data order continues from the
    pretrain step's last batch. ``train.optimizer_state`` "fresh" (default) starts AdamW anew; "carried"
    continues pretraining's moments and step counts (the consolidated AdamW state the pretrain artifact
    hands off in ``checkpoint/``); the optimizer's hyperparameters are the anneal's own.
    """

    VERSION = "004"
    OPTIMIZER_STATES = ("fresh", "carried")

    @classmethod
    def anneal_config(cls, train: dict[str, Any], start_lr: float, batch_size: int) -> TrainConfig:
        options = {k: v for k, v in train.items() if k not in ("start_lr", "optimizer_state")}
        schedule = LRSchedule.anneal(start_lr, options["max_steps"]).to_dict()
        return cls.train_config(options, schedule=schedule, global_batch_size=batch_size)

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        cls.anneal_config(kwargs["train"], 1e-4, kwargs["data_order"]["global_batch_size"])
        if kwargs["train"].get("optimizer_state", "fresh") not in cls.OPTIMIZER_STATES:
            raise ValueError(f"train.optimizer_state: expected one of {cls.OPTIMIZER_STATES}")
        cls.check_pretraining(kwargs)

    def run(
        self, pretrained: Artifact, instances: Artifact, data_order: dict, train: dict,
        execution: ExecutionArgument = None, in_loop_eval: dict | None = None, heldout: Artifact | None = None,
    ) -> Artifact:
        return self.train(*self.job(True, pretrained=pretrained, instances=instances, data_order=data_order,
                                    train=train, execution=execution, in_loop_eval=in_loop_eval, heldout=heldout))

    def job(
        self, fresh_output: bool, pretrained: Artifact, instances: Artifact, data_order: dict, train: dict,
        execution: Execution, in_loop_eval: dict | None = None, heldout: Artifact | None = None,
    ) -> tuple[TrainingJob, dict[str, Any]]:
        start_lr = train.get("start_lr") or pretrained.summary["lr_last"]
        settings = self.anneal_config(train, start_lr, data_order["global_batch_size"])
        optimizer_state = train.get("optimizer_state", "fresh")
        start = TrainState(data_step=pretrained.summary["data_step"], tokens_seen=pretrained.summary["tokens_seen"])
        init = Initialization(pretrained=str(pretrained.path), carry_optimizer=optimizer_state == "carried")
        job = self.pretraining_job(
            fresh_output, instances, data_order, execution, in_loop_eval, heldout,
            model=artifact_model_config(pretrained), init=init, config=settings, start_state=start,
        )
        summary = {"start_lr": start_lr, "continued_from_data_step": start.data_step, "optimizer_state": optimizer_state}
        return job, summary
