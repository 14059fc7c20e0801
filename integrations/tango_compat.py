"""Fixes that let ai2-tango 1.3.2 (2023, its last release) run cleanly with today's packages.

Imported first through ``include_package`` in ``tango.yml`` (and by ``steps``), so every
``tango`` command gets them. Each fix is a small function, applied once, with a test in
``tests/integrations/test_tango_compat.py`` that fails without it:

- ``pip_packages``: Tango records installed packages through ``pkg_resources``, which
  setuptools ≥ 81 no longer ships; without the fix every step logs an error traceback.
- ``git_without_origin``: Tango records the git remote named ``origin`` and crashes
  ``tango run`` in a checkout that has none (a fresh ``git init``, a CI clone by path).
- ``wandb_public_artifact``: ``tango.integrations.wandb`` annotates with
  ``wandb.apis.public.Artifact``, gone from wandb's public API in the 0.2x releases.
- ``retry_module``: ``tango.integrations.wandb`` imports the ``retry`` package, which
  nothing installs any more; a minimal equivalent decorator is provided.

Tango binds the first two functions as dataclass ``default_factory`` values when its
modules are imported, so replacing the module attribute would not reach them; the fix swaps
the functions' code objects in place instead (the originals are kept in ``ORIGINAL_CODE``).
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
import sys
import time
import types
from typing import Any, Callable

ORIGINAL_CODE: dict[str, types.CodeType] = {}


def _replace_code(name: str, target: Callable[..., Any], replacement: Callable[..., Any]) -> None:
    """Give ``target`` the body of ``replacement``; both must be closure-free plain functions."""
    if name not in ORIGINAL_CODE:
        ORIGINAL_CODE[name] = target.__code__
    target.__code__ = replacement.__code__


def _installed_packages():
    # Runs with tango.step_info's globals: import what it needs locally.
    import importlib.metadata

    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return sorted(found.items())


def _git_metadata_for_checkout(cls):
    # Runs with tango.step_info's globals: import what it needs locally.
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        repo = Repo(".")
        commit = str(repo.commit())
    except (InvalidGitRepositoryError, NoSuchPathError, ValueError):
        return None  # not a repository, or one without commits yet
    remotes = {remote.name: remote for remote in repo.remotes}
    remote = remotes.get("origin") or next(iter(remotes.values()), None)
    return cls(commit=commit, remote=remote.url if remote is not None else None)


def fix_pip_packages() -> None:
    import tango.step_info

    _replace_code("pip_packages", tango.step_info.get_pip_packages, _installed_packages)


def fix_git_without_origin() -> None:
    import tango.step_info

    check = tango.step_info.GitMetadata.check_for_repo.__func__
    _replace_code("git_without_origin", check, _git_metadata_for_checkout)


def fix_wandb_public_artifact() -> None:
    if importlib.util.find_spec("wandb") is None:
        return
    import wandb
    import wandb.apis.public

    if not hasattr(wandb.apis.public, "Artifact"):
        wandb.apis.public.Artifact = wandb.Artifact


def retry(
    exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    tries: int = -1,
    delay: float = 0,
    max_delay: float | None = None,
    backoff: float = 1,
    jitter: float = 0,
    logger: logging.Logger | None = logging.getLogger("retry"),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``retry`` package's decorator: call again on ``exceptions``, up to ``tries`` times (−1: forever)."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            remaining, wait = tries, delay
            while True:
                try:
                    return function(*args, **kwargs)
                except exceptions as exc:
                    remaining -= 1
                    if remaining == 0:
                        raise
                    if logger is not None:
                        logger.warning("%s, retrying in %s seconds...", exc, wait)
                    time.sleep(wait)
                    wait = wait * backoff + jitter
                    if max_delay is not None:
                        wait = min(wait, max_delay)

        return call

    return decorate


def fix_retry_module() -> None:
    if "retry" in sys.modules or importlib.util.find_spec("retry") is not None:
        return
    module = types.ModuleType("retry", "Minimal stand-in for the retry package (see integrations.tango_compat).")
    module.__spec__ = importlib.machinery.ModuleSpec("retry", None)
    module.retry = retry
    sys.modules["retry"] = module


FIXES: dict[str, Callable[[], None]] = {
    "pip_packages": fix_pip_packages,
    "git_without_origin": fix_git_without_origin,
    "wandb_public_artifact": fix_wandb_public_artifact,
    "retry_module": fix_retry_module,
}


def apply_all() -> None:
    for fix in FIXES.values():
        fix()


apply_all()
