"""Tango steps of pretraining and the anneal, and the run-and-save code every training step shares.

``pretrain`` and ``anneal`` launch one worker per device (``steps.train.worker``) through PyTorch's elastic
launcher and return when they finish; a killed run resumes from the last checkpoint in the step's work
directory. SFT and DPO (``steps.adapt``) train in the step's own process with ``TrainingStep.fit``.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from tango import Step

from integrations.launcher import Rendezvous, launch_workers
from integrations.wandb_logger import WandbLogger, check_settings, step_run
from olmo_model import LRSchedule, Olmo, OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.models import MODEL_DIR
from steps.common.step import ArtifactStep
from steps.corpus.mix import HELDOUT_DIR
from steps.data.steps import validate_data_order
from steps.data.tokenize import TOKENIZER_FILE
from steps.train.checkpoint import CONFIG_FILE, TrainState, save_model
from steps.train.in_loop_eval import InLoopEvaluator, validate_in_loop_eval
from steps.train.parallel import SHARDING
from steps.train.pretraining_data import check_vocabulary
from steps.train.runtime import worker_environment
from steps.train.trainer import TrainConfig, train
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


# How a distributed training step runs (its ``execution`` arguments, all in EXECUTION_ARGUMENTS), and the defaults.
EXECUTION_DEFAULTS: dict[str, Any] = {
    "device": "auto",  # "auto": the GPUs when there are any, else the CPU
    "world_size": 1,  # workers in all, one per device
    "nnodes": 1,  # nodes; each starts world_size / nnodes workers
    "rdzv_endpoint": None,  # "host:port" of the rendezvous when nnodes > 1
    "max_restarts": 0,  # times the launcher restarts failed workers (they resume from the last checkpoint)
    "sharding": "full",  # FSDP2: "full", "hybrid" (shard within a node) or "none" (replicate)
    "log_every": 10,
    "checkpoint_every": None,  # steps between checkpoints (one is always written at the end)
    "keep_checkpoints": 2,
    "activation_checkpointing": False,
    "compile": False,  # torch.compile each block
    "wandb": None,  # {"project": ...}: log to W&B (offline unless WANDB_MODE=online)
    "in_loop_eval": None,  # {"every": N, "tasks": [...], ...}: evaluate while training
    "heldout": None,  # the mix artifact whose held-out documents in-loop evaluation scores
}


def with_execution_defaults(execution: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    """A training step's arguments: its inputs and every execution setting (defaults filled in)."""
    unknown = sorted(set(execution) - set(EXECUTION_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown execution argument(s) {unknown}; expected some of {sorted(EXECUTION_DEFAULTS)}")
    return {**EXECUTION_DEFAULTS, **execution, **inputs}


def check_batch_division(global_batch_size: int, world_size: int, micro_batch_size: int) -> None:
    """Every rank trains the same whole number of micro-batches of a global batch: the global batch splits
    evenly over the ranks, and a rank's share into micro-batches."""
    if global_batch_size % world_size:
        raise ValueError(
            f"data_order.global_batch_size {global_batch_size} is not divisible by world_size {world_size} "
            f"(execution): every rank trains global_batch_size / world_size instances a step"
        )
    share = global_batch_size // world_size
    if share % micro_batch_size:
        raise ValueError(
            f"train.micro_batch_size {micro_batch_size} does not divide a rank's share of the global batch, "
            f"data_order.global_batch_size {global_batch_size} / world_size {world_size} = {share} instances"
        )


def check_run_options(kwargs: dict[str, Any], inputs: tuple[str, ...]) -> None:
    """Validate how a distributed training step is asked to run (its arguments other than ``inputs``):
    known settings, parallelism (the global batch splits over the ranks and their micro-batches) and
    in-loop evaluation."""
    batch, micro = kwargs["data_order"]["global_batch_size"], kwargs["train"]["micro_batch_size"]
    kwargs = with_execution_defaults({k: v for k, v in kwargs.items() if k not in inputs})
    world_size, nnodes, sharding = kwargs["world_size"], kwargs["nnodes"], kwargs["sharding"]
    if sharding not in SHARDING:
        raise ValueError(f"sharding: expected one of {SHARDING}, got {sharding!r}")
    for key, value in (("world_size", world_size), ("nnodes", nnodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    if world_size % nnodes:
        raise ValueError(f"world_size {world_size} must be a positive multiple of nnodes {nnodes}")
    check_batch_division(batch, world_size, micro)
    check_settings(kwargs["wandb"])
    if kwargs["in_loop_eval"] is not None:
        validate_in_loop_eval(kwargs["in_loop_eval"])
        if kwargs["heldout"] is None:
            raise ValueError("in_loop_eval needs `heldout`: the mix step whose held-out documents it scores")


# Arguments of both distributed steps that only say how to run (all in EXECUTION_ARGUMENTS).
RUN_OPTIONS = (
    "device", "sharding", "nnodes", "keep_checkpoints", "activation_checkpointing", "compile", "log_every", "wandb",
)


class TrainingStep(ArtifactStep):
    """A step that trains a model and stores it (safetensors + config) with its per-step metrics."""

    def fit(
        self,
        model: Olmo,
        batches: Any,
        config: TrainConfig,
        log_every: int,
        wandb: dict[str, Any] | None = None,
        **train_options: Any,
    ) -> TrainState:
        """Train in this process (SFT, DPO), checkpointing into the work directory; every step's metrics go to
        the step's W&B run when ``wandb`` (the ``execution.wandb`` setting) is given."""
        run = WandbLogger(**step_run(self, wandb)) if wandb is not None else None

        def log(metrics: dict[str, Any]) -> None:
            if run is not None:
                run.log(metrics, step=metrics["step"])
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

        failed = True
        try:
            state = train(model, batches, config, log=log, checkpoint_dir=self.work_dir / CHECKPOINTS_DIR, **train_options)
            failed = False
        finally:
            if run is not None:
                run.finish(exit_code=int(failed))
        return state

    def save(self, model: Olmo, state: TrainState, summary: dict[str, Any]) -> Artifact:
        out = self.output_dir()
        final_state = {k: v for k, v in state.to_dict().items() if k != "history"}
        save_model(model, model.config, out / MODEL_DIR, extra=final_state)
        with open(out / METRICS_FILE, "w") as handle:
            for metrics in state.history:
                handle.write(json.dumps(metrics) + "\n")
        return self.artifact(out, {**summary, **training_summary(model.config, final_state, state.history)})

    @staticmethod
    def train_config(train: dict[str, Any], **fields: Any) -> TrainConfig:
        """The trainer's config; every step's metrics are recorded (``log_every`` only thins the console)."""
        return TrainConfig.from_dict({**train, **fields, "log_every": 1})


class DistributedTrainingStep(TrainingStep):
    """A training step whose workers (one per device, on one node or many) are started by the launcher.

    ``run`` passes its arguments to ``run_job``; ``make_job`` (per step) turns them into a ``TrainingJob``.
    Every node of a multi-node job builds the same job from the same workflow (``olmo-tango train-node``).
    """

    def make_job(self, arguments: dict[str, Any], fresh_output: bool = True) -> tuple[TrainingJob, dict[str, Any]]:
        """The job for ``run``'s ``arguments``, and what the artifact's summary says about its settings."""
        raise NotImplementedError

    def run_job(self, arguments: dict[str, Any]) -> Artifact:
        job, summary = self.make_job(arguments)
        final_state, history = self.launch(job, arguments)
        config = OlmoConfig.from_dict(job.model)
        return self.artifact(Path(job.output_dir), {**summary, **training_summary(config, final_state, history)})

    def launch(self, job: TrainingJob, arguments: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run ``job`` on this node's share of the workers; the final state and per-step metrics (on the
        node that holds rank 0, which writes them)."""
        nnodes = arguments["nnodes"]
        rendezvous = Rendezvous(nnodes, arguments["rdzv_endpoint"], self.unique_id, arguments["max_restarts"])
        results = launch_workers(
            run_training_job, (job,), arguments["world_size"] // nnodes, rendezvous, environment=worker_environment()
        )
        if 0 not in results:
            return {}, []
        history = [json.loads(line) for line in (Path(job.output_dir) / METRICS_FILE).read_text().splitlines()]
        return results[0], history

    def job(
        self, model: OlmoConfig, settings: TrainConfig, arguments: dict[str, Any], fresh_output: bool, **fields: Any
    ) -> TrainingJob:
        """A job writing its checkpoints into this step's work directory and its result into the artifact."""
        return TrainingJob(
            model=model.to_dict(),
            train=settings.to_dict(),
            instances=arguments["instances"],
            data_order=arguments["data_order"],
            checkpoint_dir=str(self.work_dir / CHECKPOINTS_DIR),
            output_dir=str(self.output_dir(fresh=fresh_output)),
            **self.run_options(arguments),
            **fields,
        )

    def run_options(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The job fields of the step's execution arguments."""
        options = {name: arguments[name] for name in RUN_OPTIONS}
        if options["wandb"] is not None:
            options["wandb"] = step_run(self, options["wandb"])
        evaluation = arguments["in_loop_eval"]
        if evaluation is not None:
            tokenizer = arguments["instances"].path / TOKENIZER_FILE
            heldout = arguments["heldout"].path / HELDOUT_DIR
            options["in_loop_eval"] = functools.partial(InLoopEvaluator, tokenizer, heldout, evaluation)
            options["eval_every"] = evaluation["every"]
        return options


@Step.register("pretrain")
class PretrainOlmo(DistributedTrainingStep):
    """Trains OLMo from the mitchell init on the instances, in the data order, with AdamW + LR schedule."""

    VERSION = "004"

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        validate_data_order(kwargs["data_order"])
        config = model_config(kwargs["model"])
        cls.train_config(kwargs["train"], global_batch_size=kwargs["data_order"]["global_batch_size"])
        if config.max_sequence_length < 2:
            raise ValueError("model.max_sequence_length: expected >= 2")
        check_run_options(kwargs, inputs=("instances", "model", "data_order", "train"))

    def run(self, instances: Artifact, model: dict, data_order: dict, train: dict, **execution: Any) -> Artifact:
        return self.run_job(with_execution_defaults(execution, instances=instances, model=model,
                                                    data_order=data_order, train=train))

    def make_job(self, arguments: dict[str, Any], fresh_output: bool = True) -> tuple[TrainingJob, dict[str, Any]]:
        config = model_config(arguments["model"])
        instances = arguments["instances"]
        check_vocabulary(instances, config)
        if instances.summary["seq_len"] > config.max_sequence_length:
            raise ValueError(
                f"instances are {instances.summary['seq_len']} tokens, longer than the model's "
                f"max_sequence_length {config.max_sequence_length}"
            )
        settings = self.train_config(
            arguments["train"],
            global_batch_size=arguments["data_order"]["global_batch_size"],
            checkpoint_every=arguments["checkpoint_every"],
        )
        job = self.job(config, settings, arguments, fresh_output, init=Initialization(seed=settings.seed))
        return job, {"seed": settings.seed, "global_batch_size": settings.global_batch_size}


@Step.register("anneal")
class AnnealOlmo(DistributedTrainingStep):
    """Continues pretraining where it stopped, with the LR going linearly to 0 over ``max_steps``.

    ``train.start_lr`` null starts from the LR pretraining had reached. The data order continues from the
    pretrain step's last batch. ``train.optimizer_state`` "fresh" (default) starts AdamW anew; "carried"
    continues pretraining's moments and step counts (the consolidated AdamW state the pretrain artifact
    hands off in ``checkpoint/``); the optimizer's hyperparameters are the anneal's own.
    """

    VERSION = "004"
    OPTIMIZER_STATES = ("fresh", "carried")

    @classmethod
    def anneal_config(
        cls, train: dict[str, Any], start_lr: float, batch_size: int, checkpoint_every: int | None = None
    ) -> TrainConfig:
        options = {k: v for k, v in train.items() if k not in ("start_lr", "optimizer_state")}
        schedule = LRSchedule.anneal(start_lr, options["max_steps"]).to_dict()
        return cls.train_config(
            options, schedule=schedule, global_batch_size=batch_size, checkpoint_every=checkpoint_every
        )

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        validate_data_order(kwargs["data_order"])
        cls.anneal_config(kwargs["train"], 1e-4, kwargs["data_order"]["global_batch_size"])
        if kwargs["train"].get("optimizer_state", "fresh") not in cls.OPTIMIZER_STATES:
            raise ValueError(f"train.optimizer_state: expected one of {cls.OPTIMIZER_STATES}")
        check_run_options(kwargs, inputs=("pretrained", "instances", "data_order", "train"))

    def run(
        self, pretrained: Artifact, instances: Artifact, data_order: dict, train: dict, **execution: Any
    ) -> Artifact:
        return self.run_job(with_execution_defaults(execution, pretrained=pretrained, instances=instances,
                                                    data_order=data_order, train=train))

    def make_job(self, arguments: dict[str, Any], fresh_output: bool = True) -> tuple[TrainingJob, dict[str, Any]]:
        pretrained, train = arguments["pretrained"], arguments["train"]
        start_lr = train.get("start_lr") or pretrained.summary["lr_last"]
        settings = self.anneal_config(
            train, start_lr, arguments["data_order"]["global_batch_size"], arguments["checkpoint_every"]
        )
        config = OlmoConfig.from_dict(json.loads((pretrained.path / MODEL_DIR / CONFIG_FILE).read_text()))
        optimizer_state = train.get("optimizer_state", "fresh")
        start = TrainState(data_step=pretrained.summary["data_step"], tokens_seen=pretrained.summary["tokens_seen"])
        init = Initialization(pretrained=str(pretrained.path), carry_optimizer=optimizer_state == "carried")
        job = self.job(config, settings, arguments, fresh_output, init=init, start_state=start.to_dict())
        return job, {"start_lr": start_lr, "continued_from_data_step": start.data_step, "optimizer_state": optimizer_state}
