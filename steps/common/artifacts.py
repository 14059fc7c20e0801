"""Directory artifacts: how every step stores its output in the workspace.

A step writes its files into a directory under its work dir and returns an :class:`Artifact`
handle (path + manifest). :class:`ArtifactFormat` stores that directory inside the step's
result in the workspace, so sharing a workspace shares the files; reading the result back
gives a handle whose path points into the workspace. Nothing is pickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tango.format import Format

MANIFEST_FILE = "manifest.json"
DATA_DIR = "data"
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


def file_sha256(path: Path, chunk_size: int = 2**22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


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


class ArtifactFormat(Format[Artifact]):
    """Stores an :class:`Artifact`'s directory and manifest in a step's result directory."""

    VERSION = "001"

    def write(self, artifact: Artifact, dir: str | os.PathLike) -> None:
        dir = Path(dir)
        link_or_copy_tree(Path(artifact.path), dir / DATA_DIR)
        (dir / MANIFEST_FILE).write_text(json.dumps(artifact.manifest, indent=2, sort_keys=True))

    def read(self, dir: str | os.PathLike) -> Artifact:
        dir = Path(dir)
        manifest = json.loads((dir / MANIFEST_FILE).read_text())
        return Artifact(path=dir / DATA_DIR, manifest=manifest)
