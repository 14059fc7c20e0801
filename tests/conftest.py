"""Fixtures shared by test packages: ``tango run`` from the repository root, and the micro workflow run
once per session (the slow end-to-end tests read it)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "workflows" / "olmo-micro.jsonnet"
TANGO = Path(sys.executable).parent / "tango"


def run_tango(workflow: Path, workspace: Path, *arguments: str) -> tuple[set[str], str]:
    """Run ``tango run`` (with ``arguments``, e.g. ``-D name=value``) from the repository root; return the steps it
    started and its output."""
    result = subprocess.run(
        [str(TANGO), "run", str(workflow), "-w", str(workspace), *arguments],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    return set(re.findall(r'Starting step "([^"]+)"', output)), output


@pytest.fixture(scope="session", autouse=True)
def local_workspace_cache(tmp_path_factory) -> Path:
    """This machine's workspace cache (verified marks, copies of remote results) for the session, so tests
    never read or write ~/.cache/olmo-tango; subprocesses inherit it. Tests may point it elsewhere."""
    import os

    directory = tmp_path_factory.mktemp("olmo-tango-cache")
    previous = os.environ.get("OLMO_TANGO_CACHE")
    os.environ["OLMO_TANGO_CACHE"] = str(directory)
    yield directory
    if previous is None:
        del os.environ["OLMO_TANGO_CACHE"]
    else:
        os.environ["OLMO_TANGO_CACHE"] = previous


@pytest.fixture(scope="session")
def tango_run():
    """:func:`run_tango`: ``tango_run(workflow, workspace) -> (steps started, output)``."""
    return run_tango


@pytest.fixture(scope="session")
def micro_workspace(tmp_path_factory) -> Path:
    """A workspace in which ``tango run workflows/olmo-micro.jsonnet`` computed every step. Tests may add
    steps to it (an ablation, regenerated batches) but must not remove or change any."""
    from tango import StepGraph
    from tango.common.util import import_module_and_submodules

    import_module_and_submodules("steps")
    directory = tmp_path_factory.mktemp("micro-workspace")
    started, _ = run_tango(MICRO, directory)
    assert started == set(StepGraph.from_file(MICRO))  # a fresh workspace computes every step
    return directory


@pytest.fixture(scope="session")
def s3_process():
    """moto's ``moto_server`` on 127.0.0.1 for the whole session (started by the first test that needs it)."""
    from tests.s3_server import s3_server as run_s3_server

    with run_s3_server(set_environment=False) as server:
        yield server


@pytest.fixture
def s3_server(s3_process, monkeypatch):
    """The loopback S3 server: ``.endpoint`` is its URL and ``.bucket()`` creates a fresh bucket and returns
    ``s3://<bucket>``.

    During the test (only: other tests must not see a live S3 endpoint), os.environ (inherited by the
    subprocesses tests start: ``tango run``, ``olmo-tango``) has ``AWS_ENDPOINT_URL=http://127.0.0.1:<port>``,
    ``AWS_ACCESS_KEY_ID=testing``, ``AWS_SECRET_ACCESS_KEY=testing`` and ``AWS_DEFAULT_REGION=us-east-1``.
    ``AWS_ENDPOINT_URL`` alone points s3fs at the server: botocore reads it when a client is made, and s3fs
    (through aiobotocore) makes its client lazily, so an ``S3FileSystem`` created during the test honours it
    (``Store`` never reuses a cached instance)."""
    for name, value in s3_process.environment.items():
        monkeypatch.setenv(name, value)
    return s3_process
