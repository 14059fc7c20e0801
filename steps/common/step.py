"""The base of every olmo-tango step: a Tango ``Step`` whose result is a directory artifact, stored in the
workspace by :class:`ArtifactFormat`."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import integrations.workspace  # noqa: F401  (registers the workspace type `olmo` and its URL schemes)
from integrations.tango_compat import hash_as, hashed_as  # (and Tango's fixes, before any step runs)
from tango import Step
from tango.common.det_hash import CustomDetHash
from tango.common.exceptions import ConfigurationError
from tango.format import Format

from olmo_model.config import Config
from steps.common.artifacts import DATA_DIR, MANIFEST_FILE, Artifact, build_manifest, link_or_copy_tree
from steps.common.engine import Engine
from steps.common.execution import Execution

# Arguments that say where, how fast and how observably a step runs, never what it computes, so they stay out
# of every fingerprint: the recipe's ``execution`` block (steps.common.execution), and a training step's in-loop
# evaluation (which only observes the model) with the held-out documents it scores.
EXECUTION_ARGUMENTS = {"execution", "in_loop_eval", "heldout"}

C = TypeVar("C", bound=type)


def fingerprinted_as(module: str) -> Callable[[C], C]:
    """Class decorator for a Step or Format class moved out of ``module``: the class keeps ``module`` as its
    ``__module__``, because Tango hashes it. A step's fingerprint covers its format as (module, class name,
    VERSION) and each step it takes as an input as (module, class name, unique id), so without this, moving a
    class to another file would change its fingerprint or those of every step downstream of it."""

    def keep(cls: C) -> C:
        cls.__module__ = module
        return cls

    return keep


@dataclass(frozen=True)
class ContentHash:
    """How a config argument's files enter the fingerprint: ``function(config)`` hashes their content;
    ``location_keys`` only say where the bytes are, so the content hash stands for them (moving a
    file, or naming the same bytes another way, keeps the fingerprint)."""

    function: Callable[[dict[str, Any]], str]
    location_keys: tuple[str, ...] = ()


class ContentHashed(dict, CustomDetHash):
    """A config dict whose fingerprint also covers the content of the files it names.

    Tango hashes arguments, not the files behind paths; wrapping the config makes the step's
    unique id change when the bytes it will read change. The content hash is computed once,
    when the fingerprint is first needed (before any step runs).
    """

    def __init__(self, config: dict[str, Any], spec: ContentHash):
        super().__init__(config)
        self._spec = spec
        self._cached: str | None = None

    @property
    def content_hash(self) -> str:
        if self._cached is None:
            self._cached = self._spec.function(dict(self))
        return self._cached

    def det_hash_object(self) -> Any:
        settings = {key: value for key, value in self.items() if key not in self._spec.location_keys}
        return (settings, self.content_hash)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (by Tango's copies of a step, or to worker processes) with its content hash, computed now,
        and without the function that computes it (often a lambda, which does not pickle)."""
        return _hashed, (dict(self), self.content_hash, self._spec.location_keys)


def _hashed(config: dict[str, Any], content_hash: str, location_keys: tuple[str, ...]) -> ContentHashed:
    """A ``ContentHashed`` whose content hash is already known (unpickled)."""
    restored = ContentHashed(config, ContentHash(_known_hash, location_keys))
    restored._cached = content_hash
    return restored


def _known_hash(config: dict[str, Any]) -> str:
    raise AssertionError("an unpickled ContentHashed carries its content hash")


@fingerprinted_as("steps.common.artifacts")
class ArtifactFormat(Format[Artifact]):
    """Stores an :class:`Artifact`'s directory and manifest in a step's result directory (the workspace
    recognises it by its class name, ``integrations.workspace.results.SAFE_FORMATS``)."""

    VERSION = "001"

    def write(self, artifact: Artifact, dir: str | os.PathLike) -> None:
        dir = Path(dir)
        link_or_copy_tree(Path(artifact.path), dir / DATA_DIR)
        (dir / MANIFEST_FILE).write_text(json.dumps(artifact.manifest, indent=2, sort_keys=True))

    def read(self, dir: str | os.PathLike) -> Artifact:
        dir = Path(dir)
        manifest = json.loads((dir / MANIFEST_FILE).read_text())
        return Artifact(path=dir / DATA_DIR, manifest=manifest)


class ArtifactStep(Step[Artifact]):
    """A step that writes files into a fresh directory and returns them as an :class:`Artifact`."""

    FORMAT = ArtifactFormat()
    SKIP_ID_ARGUMENTS = EXECUTION_ARGUMENTS
    # Config arguments that name files, and how to hash those files' content into the fingerprint.
    CONTENT_HASHED: dict[str, ContentHash] = {}
    # The typed config of each config argument: how to build it from the block as written, ``(block, key)`` ->
    # config (a ``Config`` class's ``from_dict``). ``run`` receives the typed config, annotated as such.
    CONFIGS: dict[str, Callable[[Any, str], Any]] = {}

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        """Check what spans several (typed) arguments before anything runs; raise ``ValueError`` naming the key."""

    @classmethod
    def build_configs(cls, kwargs: dict[str, Any]) -> None:
        """Build each ``CONFIGS`` argument, once: it keeps the block it was built from (content-hashed where
        ``CONTENT_HASHED`` says) as its fingerprint (``hash_as``), so typing a config changes no fingerprint."""
        for name, spec in cls.CONTENT_HASHED.items():  # (a block that is no mapping is left for its check to name)
            if isinstance(kwargs.get(name), Mapping) and not isinstance(kwargs[name], ContentHashed):
                kwargs[name] = ContentHashed(kwargs[name], spec)
        for name, build in cls.CONFIGS.items():
            cls.type_config(kwargs, name, build)

    @staticmethod
    def type_config(kwargs: dict[str, Any], name: str, build: Callable[[Any, str], Any]) -> None:
        """Build argument ``name`` with ``build(block, name)``, fingerprinted as the block (a null block stays)."""
        written = kwargs.get(name)
        if written is not None and not isinstance(written, Config):
            kwargs[name] = hash_as(build(written, name), written)

    @classmethod
    def massage_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            if "execution" in kwargs:
                kwargs["execution"] = Execution.from_dict(kwargs["execution"] or {}, "execution")
            cls.build_configs(kwargs)
            cls.validate(kwargs)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"{cls.__name__}: {exc}") from None
        return kwargs

    def content_hash(self, argument: str) -> str:
        """The content hash that went into this step's fingerprint for a ``CONTENT_HASHED`` argument."""
        return hashed_as(self.kwargs[argument]).content_hash

    def shard_engine(self, execution: Execution) -> Engine:
        """The engine of this step's per-shard jobs, checked to reach its work dir (and so its output) from
        every worker before any job runs."""
        engine = execution.shard_engine()
        engine.check_shared(self.work_dir)
        return engine

    def output_dir(self, fresh: bool = True) -> Path:
        """The directory in this step's work dir for the artifact's files; emptied first when ``fresh``
        (a resumable step keeps what an interrupted run left there)."""
        out = self.work_dir / "artifact"
        if fresh and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        return out

    def artifact(self, directory: Path, summary: dict[str, Any]) -> Artifact:
        """Wrap a finished directory with its manifest (fingerprints, versions, file hashes)."""
        inputs = {step.name: step.unique_id for step in sorted(self.dependencies, key=lambda s: s.name)}
        return Artifact(directory, build_manifest(directory, self.unique_id, inputs, summary))
