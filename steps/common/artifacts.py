"""Directory artifacts: how every step stores its output in the workspace.

A step writes its files into a directory under its work dir and returns an :class:`Artifact`
handle (path + manifest). The Tango format ``steps.common.step.ArtifactFormat`` stores that directory
inside the step's result in the workspace (``DATA_DIR`` and ``MANIFEST_FILE``), so sharing a workspace
shares the files; reading the result back gives a handle whose path points into the workspace.
Nothing is pickled.
"""
from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from steps.common.files import file_sha256

MANIFEST_FILE = "manifest.json"
DATA_DIR = "data"
# Where a model artifact keeps the Hugging Face tokenizer files that came with its weights (tokenizer.json,
# tokenizer_config.json with any chat_template, chat_template.jinja, ...): an ``import_hf`` artifact has them
# when its checkpoint had them; a model trained here has none (its tokenizer is the workflow's tokenizer step).
TOKENIZER_DIR = "tokenizer"
RECORDED_PACKAGES = ("olmo-tango", "ai2-tango", "torch", "numpy", "tokenizers", "datasets", "safetensors")


@dataclass
class Artifact:
    """A directory of files produced by a step, with its manifest.

    The manifest holds the step's fingerprint, its inputs' fingerprints, the package versions
    it ran with, content hashes of its files, and a small ``summary`` of what it computed.
    """

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})


def content_hashes(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory``."""
    return {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(
    directory: Path, fingerprint: str, inputs: dict[str, str], summary: dict[str, Any]
) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "inputs": inputs,
        "versions": package_versions(),
        "files": content_hashes(directory),
        "summary": summary,
    }


def link_or_copy_tree(source: Path, target: Path) -> None:
    """Hard-link files when both trees share a filesystem (free and instant), else copy."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)

