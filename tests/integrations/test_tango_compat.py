"""Each Tango fix in integrations.tango_compat is needed here and works.

Every test exercises the behaviour a fix restores, so removing the fix fails it; where the
environment still shows the original failure, the test also checks the original breaks.
"""
import importlib
import importlib.util
import subprocess
import sys
import types

import pytest

from integrations import tango_compat


def _run_with_original(name, function, *args):
    patched = function.__code__
    function.__code__ = tango_compat.ORIGINAL_CODE[name]
    try:
        return function(*args)
    finally:
        function.__code__ = patched


def test_pip_packages_recorded_without_pkg_resources():
    import tango.step_info

    packages = dict(tango.step_info.get_pip_packages())
    assert packages["torch"].startswith("2.")
    assert "ai2-tango" in packages
    if importlib.util.find_spec("pkg_resources") is None:
        assert _run_with_original("pip_packages", tango.step_info.get_pip_packages) is None


def test_environment_metadata_in_repo_without_origin(tmp_path, monkeypatch):
    import tango.step_info

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run(git + ["-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run(git + ["-C", str(tmp_path), "commit", "-qm", "c"], check=True)
    monkeypatch.chdir(tmp_path)

    metadata = tango.step_info.EnvironmentMetadata()  # what `tango run` builds for every step
    assert metadata.git is not None and len(metadata.git.commit) == 40
    assert metadata.git.remote is None
    check = tango.step_info.GitMetadata.check_for_repo.__func__
    with pytest.raises(ValueError, match="origin"):
        _run_with_original("git_without_origin", check, tango.step_info.GitMetadata)

    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "upstream", "https://example.org/r.git"], check=True)
    assert tango.step_info.EnvironmentMetadata().git.remote == "https://example.org/r.git"


def test_environment_metadata_outside_a_repo(tmp_path, monkeypatch):
    import tango.step_info

    monkeypatch.chdir(tmp_path)
    assert tango.step_info.EnvironmentMetadata().git is None


def test_tango_wandb_integration_imports():
    """Needs both the wandb.apis.public.Artifact alias and the retry stand-in."""
    module = importlib.import_module("tango.integrations.wandb.step_cache")
    assert module.WandbStepCache is not None
    import wandb.apis.public

    assert wandb.apis.public.Artifact is not None


def test_wandb_integration_fails_without_the_fixes():
    code = (
        "import importlib.util\n"
        "print(importlib.util.find_spec('retry') is not None)\n"
        "try:\n"
        "    import tango.integrations.wandb.step_cache\n"
        "    print('imported')\n"
        "except (ImportError, AttributeError) as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    retry_installed, outcome = result.stdout.split()
    if retry_installed == "False":
        assert outcome in {"ModuleNotFoundError", "AttributeError"}


def test_retry_stand_in_retries_then_raises():
    calls = []

    @tango_compat.retry(ValueError, tries=3, delay=0, logger=None)
    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "ok"

    assert flaky() == "ok" and len(calls) == 3

    @tango_compat.retry(KeyError, tries=2, delay=0, logger=None)
    def always_fails():
        calls.append(1)
        raise KeyError("k")

    with pytest.raises(KeyError):
        always_fails()
    assert isinstance(sys.modules["retry"], types.ModuleType)

