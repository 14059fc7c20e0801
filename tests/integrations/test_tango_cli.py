"""``olmo-tango run``: Tango's ``run`` with the repository's tango.yml from any directory (where plain ``tango run``
knows none of the project's step types), its configuration errors on the first line."""
from __future__ import annotations

import subprocess

import pytest
import sys
from pathlib import Path

from integrations.tango_cli import REPOSITORY, SETTINGS, tango_arguments

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"


def test_the_repositorys_settings_and_workspace_are_passed_unless_a_workspace_is_given():
    assert REPOSITORY == ROOT and SETTINGS == ROOT / "tango.yml"
    assert tango_arguments(["w.jsonnet", "-s", "mix"]) == [
        "--settings", str(ROOT / "tango.yml"), "run", "w.jsonnet", "-s", "mix", "-w", str(ROOT / "workspace"),
    ]
    for given in (["-w", "elsewhere"], ["--workspace=s3://b/w"], ["-welsewhere"]):
        assert tango_arguments(["w.jsonnet", *given]) == ["--settings", str(SETTINGS), "run", "w.jsonnet", *given]


def test_olmo_tango_run_runs_a_workflow_from_a_directory_without_tango_yml(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    workflow = Path(*([".."] * len(elsewhere.parts[1:]))) / MICRO.relative_to("/")  # relative to where it runs
    command = ["run", str(workflow), "-w", str(tmp_path / "workspace"), "-s", "tokenizer"]
    plain = subprocess.run([str(BIN / "tango"), *command], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert plain.returncode != 0  # Tango alone: no tango.yml here, none of the project's steps

    result = subprocess.run([str(BIN / "olmo-tango"), *command], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert list((tmp_path / "workspace" / "results").glob("LoadTokenizer-*"))
    assert not (elsewhere / "workspace").exists()


@pytest.mark.parametrize("override, error", [
    ("pretrian+: { max_steps: 5 }",
     "Jsonnet error: recipe 'olmo-micro' params: unknown key(s) ['pretrian']; expected some of ["),
    ("execution+: { checkpoint_evry: 5 }",
     "ConfigurationError: step 'source_package_metadata': CorpusSource: execution: unknown key(s) "
     "'checkpoint_evry'; expected some of "),
], ids=["params", "execution"])
def test_olmo_tango_run_prints_a_workflows_error_first(tmp_path, override, error):
    workflow = tmp_path / "typo.jsonnet"
    workflow.write_text(f"(import '{MICRO}') + {{ params+:: {{ {override} }} }}\n")
    result = subprocess.run([str(BIN / "olmo-tango"), "run", str(workflow), "-w", str(tmp_path / "workspace")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith(error), first
    assert not (tmp_path / "workspace" / "results").exists()  # before anything ran