"""``olmo-tango run``: Tango's ``run`` with this repository's ``tango.yml``, from any directory.

``tango run`` reads ``tango.yml`` from the current directory only; elsewhere it imports none of this project's
packages (``include_package``), so it knows none of its step types and ends in an unrelated ``ImportError``
from one of its own integrations. ``olmo-tango run WORKFLOW [tango run options]`` passes the repository's
``tango.yml`` to Tango (``--settings``) and, unless ``-w`` is given, its workspace: a relative local path in
``tango.yml`` is read from the repository root, as ``tango run`` there would. Paths on the command line are
the caller's (relative to the current directory). Configuration errors are printed as one line first.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

REPOSITORY = Path(__file__).resolve().parents[1]
SETTINGS = REPOSITORY / "tango.yml"


def _gives_workspace(arguments: Sequence[str]) -> bool:
    """Whether Tango's ``run`` options in ``arguments`` name a workspace (``-w X``, ``-wX``, ``--workspace=X``)."""
    return any(a.startswith(("-w", "-d", "--workspace")) for a in arguments)


def default_workspace(settings: Path = SETTINGS) -> str | None:
    """The workspace ``settings`` names, a relative local path read from the directory ``settings`` is in."""
    from tango.settings import TangoGlobalSettings

    workspace = TangoGlobalSettings.from_file(settings).workspace or {}
    location = workspace.get("url") or workspace.get("dir")
    if not isinstance(location, str):
        return None
    parsed = urlparse(location)
    if parsed.scheme in ("", "local", "file") and not parsed.netloc:
        path = Path(parsed.path)
        return str(path if path.is_absolute() else settings.parent / path)
    return location


def tango_arguments(arguments: Sequence[str], settings: Path = SETTINGS) -> list[str]:
    """The arguments of Tango's command line for ``olmo-tango run ARGUMENTS``."""
    workspace = None if _gives_workspace(arguments) else default_workspace(settings)
    return ["--settings", str(settings), "run", *arguments, *(["-w", workspace] if workspace else [])]


def run(arguments: Sequence[str]) -> int:
    """``olmo-tango run ARGUMENTS``: Tango's ``run`` with the repository's settings; its exit status."""
    if not SETTINGS.is_file():
        print(f"olmo-tango run: error: {SETTINGS} is missing: run from a checkout of olmo-tango", file=sys.stderr)
        return 2
    from tango.__main__ import main
    from tango.common.exceptions import ConfigurationError

    from integrations.tango_compat import config_error_line, is_jsonnet_error  # the fixes, before Tango runs

    try:
        main(tango_arguments(arguments), prog_name="olmo-tango", standalone_mode=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except (ConfigurationError, RuntimeError) as error:
        if not (isinstance(error, ConfigurationError) or is_jsonnet_error(error)):
            raise
        print(config_error_line(error), file=sys.stderr)
        if is_jsonnet_error(error):
            print("\n".join(str(error).strip().splitlines()[1:]), file=sys.stderr)
        return 1
    return 0
