"""Tango step: a model artifact as a Hugging Face ``OlmoForCausalLM`` directory."""
from __future__ import annotations

import json

from safetensors.torch import load_file
from tango import Step

from integrations.huggingface import export_to_hf
from olmo_model import OlmoConfig
from steps.common.artifacts import Artifact
from steps.common.models import model_dir
from steps.common.step import ArtifactStep
from steps.data.steps import tokenizer_file
from steps.train.checkpoint import CONFIG_FILE, MODEL_FILE, verify_checksums


@Step.register("export_hf")
class ExportHuggingFace(ArtifactStep):
    """Writes fp32 safetensors + ``config.json`` + tokenizer, loadable by ``transformers``."""

    VERSION = "001"

    def run(self, model: Artifact, tokenizer: Artifact) -> Artifact:
        source = model_dir(model)
        verify_checksums(source)
        config = OlmoConfig.from_dict(json.loads((source / CONFIG_FILE).read_text()))
        state = load_file(source / MODEL_FILE)
        out = self.output_dir()
        files = export_to_hf(state, config, tokenizer_file(tokenizer), out)
        return self.artifact(out, {"format": "transformers OlmoForCausalLM", "model": model.fingerprint, "files": files})
