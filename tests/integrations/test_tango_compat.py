"""Each Tango fix in integrations.tango_compat is needed here and works.

Every test exercises the behaviour a fix restores, so removing the fix fails it; where the
environment still shows the original failure, the test also checks the original breaks.
"""
import importlib
import importlib.util
import pickle
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from integrations import tango_compat
from olmo_model.config import Config


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



ROOT = Path(__file__).resolve().parents[2]
TANGO = Path(sys.executable).parent / "tango"


def _tango_run(workflow_text: str, tmp_path: Path) -> tuple[int, list[str]]:
    """``tango run`` from the repository root on a workflow importing olmo-micro; exit status and output lines."""
    workflow = tmp_path / "workflow.jsonnet"
    workflow.write_text(f"(import '{ROOT / 'workflows' / 'olmo-micro.jsonnet'}') + {workflow_text}\n")
    result = subprocess.run([str(TANGO), "run", str(workflow), "-w", str(tmp_path / "workspace")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return result.returncode, result.stdout.splitlines()


def test_a_config_error_is_the_first_line_of_tango_runs_output_naming_the_step_and_key(tmp_path):
    status, lines = _tango_run("{ steps+: { pretrain+: { execution+: { world_size: 3 } } } }", tmp_path)
    assert status != 0
    assert lines[0] == (
        "ConfigurationError: step 'pretrain': PretrainOlmo: data_order.global_batch_size 4 is not divisible by "
        "world_size 3 (execution): every rank trains global_batch_size / world_size instances a step"
    )
    assert not any("Traceback" in line for line in lines)


def test_a_misspelt_step_type_is_a_config_error_not_a_broken_integrations_import_error(tmp_path):
    status, lines = _tango_run("{ steps+: { pretrain+: { type: 'pretrian' } } }", tmp_path)
    assert status != 0
    assert lines[0].startswith("ConfigurationError: step 'pretrain': 'pretrian' not in acceptable choices for "
                               "steps.pretrain.type: [")
    assert "'pretrain'" in lines[0] and not any("modeling_flax_auto" in line for line in lines)


def test_a_broken_tango_integration_reads_as_missing_with_its_reason():
    from tango.common.exceptions import IntegrationMissingError

    original = subprocess.run(
        [sys.executable, "-c", "import tango.integrations.transformers"], capture_output=True, text=True, cwd="/"
    )
    if original.returncode == 0:
        pytest.skip("Tango's transformers integration imports with this transformers")
    assert "ImportError" in original.stderr.splitlines()[-1]  # not IntegrationMissingError: Tango does not skip it
    with pytest.raises(IntegrationMissingError, match=r"Tango's 'transformers' integration does not import with the "
                                                      r"installed packages \(ImportError: "):
        importlib.import_module("tango.integrations.transformers")
    assert "transformers" in tango_compat.BROKEN_INTEGRATIONS
    importlib.import_module("tango.integrations.torch")  # a working integration imports as before


def test_tango_info_says_why_a_broken_integration_is_not_used(monkeypatch):
    import logging

    monkeypatch.setitem(tango_compat.BROKEN_INTEGRATIONS, "transformers", "ImportError: cannot import name 'x' [y]")
    record = logging.LogRecord("tango.__main__", logging.INFO, __file__, 1, " [yellow]\N{ballot x} %s (not installed)[/]",
                               ("transformers",), None)
    assert logging.getLogger("tango.__main__").filter(record)
    assert record.getMessage().startswith(" [yellow]\N{ballot x} transformers (installed, but Tango's integration does "
                                          "not import: ImportError: cannot import name 'x' \\[y]")
    other = logging.LogRecord("tango.__main__", logging.INFO, __file__, 1, " %s (not installed)", ("beaker",), None)
    assert logging.getLogger("tango.__main__").filter(other) and other.getMessage() == " beaker (not installed)"


def test_tangos_command_line_needs_no_fix_on_click_without_tangos_cap(tmp_path):
    """ai2-tango 1.3.2 caps click < 8.1.4 (a 2023 cap for a type checker); setup.sh installs it without the cap
    (README "Dependencies and pins"). On today's click its command line works unchanged, so tango_compat has no fix
    for it: help, version, info and settings here; ``tango run`` in the tests above and in tests/workflows."""

    def tango(*arguments: str, cwd: Path = ROOT) -> str:
        result = subprocess.run([str(TANGO), *arguments], cwd=cwd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    assert "Commands:" in tango("--help") and "--workspace" in tango("run", "--help")
    assert "1.3.2" in tango("--version")
    info = tango("--log-level", "INFO", "info")
    assert f"Loaded from {ROOT / 'tango.yml'}" in " ".join(info.split())
    assert "integrations.tango_compat" in info and "(not found)" not in info
    settings = tmp_path / "tango.yml"
    tango("settings", "init", "-p", str(settings), cwd=tmp_path)
    tango("--settings", str(settings), "settings", "set", "workspace", str(tmp_path / "workspace"), cwd=tmp_path)
    tango("--settings", str(settings), "settings", "set", "log-level", "debug", cwd=tmp_path)
    written = yaml.safe_load(settings.read_text())
    assert written["workspace"] == {"type": "local", "dir": str(tmp_path / "workspace")}
    assert written["log_level"] == "debug"



@dataclass(frozen=True)
class Shape(Config):
    """A typed config for the next test (at module level, so it pickles)."""

    widths: tuple[int, ...]
    depth: int = 1


def test_a_typed_config_argument_is_built_by_the_step_and_fingerprinted_as_the_block():
    """``typed_configs``: Tango hands a ``Config``-annotated argument over as written, so the step builds it (keys
    checked by ``build_config``), and the typed config's fingerprint is the block's, as if the step took a dict."""
    from tango import Step
    from tango.common import from_params
    from tango.common.det_hash import det_hash

    from steps.common.step import ArtifactStep, ContentHash, ContentHashed

    @Step.register("typed-config-test", exist_ok=True)
    class ShapedStep(ArtifactStep):
        CONTENT_HASHED = {"shape": ContentHash(lambda block: str(block["widths"]))}  # a lambda: not picklable
        CONFIGS = {"shape": Shape.from_dict}

        def run(self, shape: Shape) -> None:
            raise AssertionError("never run here")

    block = {"widths": [4, 8]}
    step = Step.from_params({"type": "typed-config-test", "shape": dict(block)})
    assert step.kwargs["shape"] == Shape(widths=(4, 8))
    assert det_hash(step.kwargs["shape"]) == det_hash(ContentHashed(block, ShapedStep.CONTENT_HASHED["shape"]))
    assert det_hash(step.kwargs["shape"]) != det_hash(Shape(widths=(4, 8)))
    copied = pickle.loads(pickle.dumps(step.kwargs["shape"]))  # as worker processes and Tango's step copies get it
    assert copied == Shape(widths=(4, 8)) and det_hash(copied) == det_hash(step.kwargs["shape"])
    with pytest.raises(Exception, match=r"shape: unknown key\(s\) 'width'; expected some of depth, widths"):
        Step.from_params({"type": "typed-config-test", "shape": {"width": [4]}})

    original = from_params.construct_arg
    from_params.construct_arg = tango_compat.ORIGINAL_FUNCTIONS["construct_arg"]
    try:  # without the fix Tango builds the config itself, and the fingerprint is no longer the block's
        built_by_tango = Step.from_params({"type": "typed-config-test", "shape": dict(block)})
    finally:
        from_params.construct_arg = original
    assert det_hash(built_by_tango.kwargs["shape"]) != det_hash(block)
