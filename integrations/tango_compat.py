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
- ``broken_integrations``: Tango's own integrations (``tango.integrations.<name>``) that fail to import with
  today's packages for a reason other than a missing dependency (``transformers``: transformers 5 has no
  ``modeling_flax_auto`` nor ``TransfoXLLMHeadModel``) raise ``IntegrationMissingError`` carrying the reason.
  Tango searches its integrations for any step type it does not know (a typo), and only that error is
  skipped: the typo ended in ``ImportError: cannot import name 'modeling_flax_auto'`` instead of Tango's own
  ``ConfigurationError`` listing the known types. ``tango info`` says why instead of "not installed".
- ``step_name_in_config_errors``: a step's ``ConfigurationError`` names the step (``step 'pretrain': ...``),
  not only its class.
- ``concise_config_errors``: Tango's handler of uncaught exceptions prints a configuration error (Tango's
  ``ConfigurationError``, or a Jsonnet error in the workflow) as its message on the first line of output, on
  one line, instead of at the end of a 40-150-line traceback (the traceback follows at ``--log-level debug``).

- ``typed_configs``: a step argument annotated with one of this project's typed configs (``olmo_model.config.Config``,
  or a union of them) reaches the step as written: Tango would build the class itself from its ``__init__``, with
  none of ``build_config``'s key checks, lists left as lists; the step builds it once, in ``massage_kwargs``. And an
  object marked with ``hash_as(obj, stand_in)`` enters Tango's fingerprint as ``stand_in``: a typed config is
  fingerprinted as the recipe block it was built from, so typing a step's configs changed no fingerprint.

Not a fix: Tango 1.3.2's metadata caps click < 8.1.4 (a 2023 cap for a type checker); setup.sh installs Tango
without that cap (README "Dependencies and pins"), and on today's click (8.5) its command line works unchanged
(``tango --help``, ``run``, ``info``, ``settings``, the multicore executor's ``tango --called-by-executor run``);
``test_tangos_command_line_needs_no_fix_on_click_without_tangos_cap`` keeps checking it. Nor does Tango's
cached-path need one for huggingface-hub 2: Tango resolves workflow and settings paths through it, and only
an ``hf://`` path (untested) would reach huggingface-hub.

Outside the repository root ``tango run`` finds no ``tango.yml``, so neither these fixes nor the project's
steps are imported: ``olmo-tango run WORKFLOW`` (``steps.cli``) runs Tango's ``run`` with this repository's
``tango.yml`` from any directory.

Tango binds the first two functions as dataclass ``default_factory`` values when its
modules are imported, so replacing the module attribute would not reach them; the fix swaps
the functions' code objects in place instead (the originals are kept in ``ORIGINAL_CODE``).
"""
from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import time
import types
import typing
from typing import Any, Callable, TypeVar

T = TypeVar("T")

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


BROKEN_INTEGRATIONS: dict[str, str] = {}  # integration name -> why it does not import


def _integration_error(name: str, reason: str) -> Exception:
    from tango.common.exceptions import IntegrationMissingError

    error = IntegrationMissingError(name)
    error.args = (f"Tango's '{name}' integration does not import with the installed packages ({reason}); "
                  "this project does not use it",)
    return error


class _GuardedLoader(importlib.abc.Loader):
    """Runs an integration package's loader; an ``ImportError`` other than its dependency being absent becomes
    ``IntegrationMissingError`` (with the reason), which is what Tango skips and reports."""

    def __init__(self, loader: importlib.abc.Loader, integration: str):
        self.loader = loader
        self.integration = integration

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            self.loader.exec_module(module)
        except ImportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            BROKEN_INTEGRATIONS[self.integration] = reason
            raise _integration_error(self.integration, reason) from exc


class _IntegrationGuard(importlib.abc.MetaPathFinder):
    PREFIX = "tango.integrations."

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith(self.PREFIX) or "." in fullname[len(self.PREFIX):]:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _GuardedLoader(spec.loader, fullname[len(self.PREFIX):])
        return spec


def _explain_broken_integration(record: logging.LogRecord) -> bool:
    """``tango info``'s "<name> (not installed)" line, for an integration that is installed but broken."""
    if isinstance(record.msg, str) and "(not installed)" in record.msg and record.args:
        name = record.args[0] if isinstance(record.args, tuple) else None
        if name in BROKEN_INTEGRATIONS:
            from rich.markup import escape

            reason = escape(BROKEN_INTEGRATIONS[name])
            record.msg = record.msg.replace("(not installed)", "(installed, but Tango's integration does not "
                                                               "import: %s; this project does not use it)")
            record.args = (name, reason)
    return True


def fix_broken_integrations() -> None:
    if not any(isinstance(finder, _IntegrationGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, _IntegrationGuard())
    cli_logger = logging.getLogger("tango.__main__")
    if _explain_broken_integration not in cli_logger.filters:
        cli_logger.addFilter(_explain_broken_integration)


ORIGINAL_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def fix_step_name_in_config_errors() -> None:
    from tango.common.exceptions import ConfigurationError
    from tango.step import Step

    if "step_from_params" in ORIGINAL_FUNCTIONS:
        return
    original = ORIGINAL_FUNCTIONS["step_from_params"] = Step.__dict__["from_params"].__func__

    def from_params(cls, params, *args: Any, step_name: str | None = None, **kwargs: Any):
        try:
            return original(cls, params, *args, step_name=step_name, **kwargs)
        except ConfigurationError as exc:
            if step_name is None or getattr(exc, "step_name", None) is not None:
                raise
            named = ConfigurationError(f"step '{step_name}': {exc.message}")
            named.step_name = step_name
            raise named from None

    Step.from_params = classmethod(from_params)


def is_jsonnet_error(error: BaseException) -> bool:
    """Whether ``error`` is the ``RuntimeError`` Jsonnet raises for a workflow it cannot evaluate."""
    return type(error) is RuntimeError and str(error).lower().startswith(("runtime error:", "static error:"))


def config_error_line(error: BaseException) -> str:
    """A configuration error as one line: ``ConfigurationError: step 'pretrain': ...`` (a Jsonnet error: its
    first line, which holds the message; the lines after it are the Jsonnet stack)."""
    if is_jsonnet_error(error):
        return "Jsonnet error: " + str(error).strip().splitlines()[0].split(":", 1)[1].strip()
    return f"{type(error).__name__}: " + " ".join(str(error).split())


def _log_config_errors_concisely(exctype, value, traceback, logger=None):
    """Tango's ``log_exc_info`` (what its ``sys.excepthook`` calls), a configuration error on one line first."""
    import tango.common.logging as tango_logging
    from tango.common.exceptions import ConfigurationError

    if not (isinstance(value, ConfigurationError) or is_jsonnet_error(value)):
        return ORIGINAL_FUNCTIONS["log_exc_info"](exctype, value, traceback, logger)
    if value in tango_logging._EXCEPTIONS_LOGGED:
        return None
    sys.stdout.flush()
    lines = [config_error_line(value)]
    if is_jsonnet_error(value):
        lines += [line.rstrip() for line in str(value).strip().splitlines()[1:]]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    if (logger or logging.getLogger()).isEnabledFor(logging.DEBUG):
        return ORIGINAL_FUNCTIONS["log_exc_info"](exctype, value, traceback, logger)  # the traceback too
    tango_logging._EXCEPTIONS_LOGGED.append(value)
    return None


def fix_concise_config_errors() -> None:
    import tango.common.logging as tango_logging

    if "log_exc_info" in ORIGINAL_FUNCTIONS:
        return
    ORIGINAL_FUNCTIONS["log_exc_info"] = tango_logging.log_exc_info
    tango_logging.log_exc_info = _log_config_errors_concisely  # the excepthook looks it up at call time


STAND_IN = "_fingerprint_stand_in"


def hash_as(obj: T, stand_in: Any) -> T:
    """``obj``, which Tango's fingerprints (``det_hash``) now hash as ``stand_in``."""
    object.__setattr__(obj, STAND_IN, stand_in)
    return obj


def hashed_as(obj: Any) -> Any:
    """What Tango's fingerprints hash for ``obj``: its ``hash_as`` stand-in, or ``obj`` itself."""
    try:
        return vars(obj).get(STAND_IN, obj)
    except TypeError:  # no __dict__: never marked
        return obj


def _annotates_config(annotation: Any) -> bool:
    from olmo_model.config import Config

    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return (isinstance(annotation, type) and issubclass(annotation, Config)) or any(map(_annotates_config, options))


def fix_typed_configs() -> None:
    from tango.common import from_params
    from tango.common.params import Params

    det_hash = importlib.import_module("tango.common.det_hash")  # (the package's attribute is the function)

    if "construct_arg" in ORIGINAL_FUNCTIONS:
        return
    original_construct = ORIGINAL_FUNCTIONS["construct_arg"] = from_params.construct_arg
    original_save = ORIGINAL_FUNCTIONS["det_hash_save"] = det_hash._DetHashPickler.save

    def construct_arg(class_name, argument_name, popped_params, annotation, default, *args: Any, **kwargs: Any):
        if _annotates_config(annotation):
            return popped_params.as_dict(quiet=True) if isinstance(popped_params, Params) else popped_params
        return original_construct(class_name, argument_name, popped_params, annotation, default, *args, **kwargs)

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        original_save(self, hashed_as(obj), save_persistent_id)

    from_params.construct_arg = construct_arg  # looked up as a module global by every caller in tango
    det_hash._DetHashPickler.save = save


FIXES: dict[str, Callable[[], None]] = {
    "pip_packages": fix_pip_packages,
    "git_without_origin": fix_git_without_origin,
    "wandb_public_artifact": fix_wandb_public_artifact,
    "retry_module": fix_retry_module,
    "broken_integrations": fix_broken_integrations,
    "step_name_in_config_errors": fix_step_name_in_config_errors,
    "concise_config_errors": fix_concise_config_errors,
    "typed_configs": fix_typed_configs,
}


def apply_all() -> None:
    for fix in FIXES.values():
        fix()


apply_all()
