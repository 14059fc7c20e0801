"""Tango steps between this project's model artifacts and Hugging Face ``OlmoForCausalLM`` (OLMo v1) or
``Olmo2ForCausalLM`` (OLMo 2) directories: ``export_hf`` writes one, ``import_hf`` reads one into a model artifact."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tango import Step

from integrations.huggingface import (
    CheckpointDirectory, checkpoint_content_hash, copy_hf_tokenizer, export_to_hf, hf_architecture, import_from_hf,
    read_hf_config,
)
from olmo_model.config import Config, require
from steps.common.artifacts import TOKENIZER_DIR, Artifact
from steps.common.models import MODEL_DIR, load_artifact_model, save_model_state
from steps.common.step import ArtifactStep, ContentHash, fingerprinted_as
from steps.data.tokenize import tokenizer_file


@dataclass(frozen=True)
class CheckpointConfig(Config):
    """``import_hf``'s ``checkpoint``: the ``path`` of an HF OLMo checkpoint directory (local or fsspec URL)."""

    path: str

    WHERE = "checkpoint"

    def check(self) -> None:
        require(bool(self.path), "checkpoint.path", "a directory or fsspec URL", self.path)
        read_hf_config(self.path)  # the config is importable and the weights are safetensors
# The counters a training step's artifact carries (its TrainState without the history): an imported model has
# done none of this project's training, so an anneal from it starts at batch 0 of its own data order.
UNTRAINED_STATE = {"step": 0, "data_step": 0, "tokens_seen": 0, "skipped_steps": 0}


@Step.register("export_hf")
@fingerprinted_as("steps.export")
class ExportHuggingFace(ArtifactStep):
    """Writes fp32 safetensors + ``config.json`` + tokenizer, loadable by ``transformers``."""

    VERSION = "001"

    def run(self, model: Artifact, tokenizer: Artifact) -> Artifact:
        olmo = load_artifact_model(model, torch.device("cpu"))  # checksums verified, safetensors only
        out = self.output_dir()
        files = export_to_hf(olmo.state_dict(), olmo.config, tokenizer_file(tokenizer), out)
        summary = {"format": f"transformers {hf_architecture(olmo.config)}", "model": model.fingerprint, "files": files}
        return self.artifact(out, summary)


@Step.register("import_hf")
class ImportHuggingFace(ArtifactStep):
    """A Hugging Face ``OlmoForCausalLM`` or ``Olmo2ForCausalLM`` checkpoint directory (``checkpoint: {"path":
    local path or fsspec URL}``) as a model artifact, laid out as a pretrain/anneal/SFT/DPO artifact is:
    ``model/`` (safetensors + our ``config.json`` + ``train_state.json``, checksummed), so ``anneal``, ``sft``, ``dpo``, ``evaluate`` and
    ``export_hf`` take it wherever they take a trained model (an ``anneal`` from it gives ``train.start_lr``:
    the summary has no ``lr_last``, nothing was trained here; and ``optimizer_state`` "fresh", as there is no
    AdamW state to carry). The tokenizer files the checkpoint carries
    (tokenizer.json, tokenizer_config.json and its chat_template, chat_template.jinja, ...) are copied to
    ``tokenizer/`` (``steps.common.models.model_tokenizer_dir``).

    Safetensors only (pickled weights are refused); the mapping and what is refused are
    ``integrations.huggingface.import_from_hf``'s. The fingerprint covers the bytes of every file read
    (config, weights, index, tokenizer files; sha256, streamed), not the path: the same checkpoint moved or
    copied elsewhere is the same artifact, and any changed byte is another one.
    """

    VERSION = "001"
    CONTENT_HASHED = {
        "checkpoint": ContentHash(lambda checkpoint: checkpoint_content_hash(checkpoint["path"]),
                                  location_keys=("path",))
    }
    CONFIGS = {"checkpoint": CheckpointConfig.from_dict}

    def run(self, checkpoint: CheckpointConfig) -> Artifact:
        path = checkpoint.path
        config, weights = import_from_hf(path)
        out = self.output_dir()
        save_model_state(weights, config, out / MODEL_DIR, extra=UNTRAINED_STATE)
        del weights
        tokenizer_files = copy_hf_tokenizer(path, out / TOKENIZER_DIR)
        summary = {
            "format": f"transformers {hf_architecture(config)}",
            "imported_from": path,
            "content_hash": self.content_hash("checkpoint"),
            "files": CheckpointDirectory.open(path).files(),
            "tokenizer_files": tokenizer_files,
            "parameters": config.num_parameters(),
            **UNTRAINED_STATE,
        }
        return self.artifact(out, summary)
