"""Tango step: a model artifact as a Hugging Face ``OlmoForCausalLM`` directory."""
from __future__ import annotations

import torch
from tango import Step

from integrations.huggingface import export_to_hf
from steps.common.artifacts import Artifact
from steps.common.models import load_artifact_model
from steps.common.step import ArtifactStep, fingerprinted_as
from steps.data.tokenize import tokenizer_file


@Step.register("export_hf")
@fingerprinted_as("steps.export")
class ExportHuggingFace(ArtifactStep):
    """Writes fp32 safetensors + ``config.json`` + tokenizer, loadable by ``transformers``."""

    VERSION = "001"

    def run(self, model: Artifact, tokenizer: Artifact) -> Artifact:
        olmo = load_artifact_model(model, torch.device("cpu"))  # checksums verified, safetensors only
        out = self.output_dir()
        files = export_to_hf(olmo.state_dict(), olmo.config, tokenizer_file(tokenizer), out)
        return self.artifact(out, {"format": "transformers OlmoForCausalLM", "model": model.fingerprint, "files": files})
