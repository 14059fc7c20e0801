"""The project's workspace: steps run through Tango into it, results verified on read, nothing unpickled,
leases taken atomically and taken over when their holder dies; locally and on the loopback S3 server."""
from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from tango import Step
from tango.workspace import Workspace

from integrations.workspace import OlmoWorkspace, WorkspaceError
from integrations.workspace.leases import Leases
from integrations.workspace.results import IntegrityError
from steps.common.artifacts import Artifact
from steps.common.step import ArtifactStep


@Step.register("workspace_test_numbers")
class WorkspaceTestNumbers(ArtifactStep):
    """Writes ``count`` numbers into a file; counts its runs in ``RUNS``."""

    VERSION = "001"
    RUNS: list[str] = []

    def run(self, count: int, delay_s: float = 0.0) -> Artifact:
        WorkspaceTestNumbers.RUNS.append(self.unique_id)
        time.sleep(delay_s)
        out = self.output_dir()
        (out / "numbers.txt").write_text("\n".join(map(str, range(count))))
        (out / "nested").mkdir()
        (out / "nested" / "half.txt").write_text(str(count / 2))
        return self.artifact(out, {"count": count})


@Step.register("workspace_test_pickled")
class WorkspaceTestPickled(Step):
    """A step with Tango's default format (DillFormat)."""

    def run(self) -> int:
        raise AssertionError("must not run: its result could not be stored safely")


class Marker:
    """Unpickling this creates ``path``: proof that something executed a workspace's bytes."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(params=["local", "s3"])
def workspace_url(request, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    if request.param == "local":
        return str(tmp_path / "workspace")
    return request.getfixturevalue("s3_server").bucket() + "/workspace"


def run_step(workspace: OlmoWorkspace, count: int = 5, **kwargs) -> tuple[Step, Artifact]:
    step = WorkspaceTestNumbers(count=count, **kwargs)
    workspace.register_run([step])
    return step, step.result(workspace)


def test_a_result_is_stored_read_back_and_reused(workspace_url):
    WorkspaceTestNumbers.RUNS.clear()
    workspace = OlmoWorkspace(workspace_url)
    step, artifact = run_step(workspace)
    assert (artifact.path / "numbers.txt").read_text() == "0\n1\n2\n3\n4"
    assert artifact.fingerprint == step.unique_id

    again = OlmoWorkspace(workspace_url)  # another process's view
    assert step in again.step_cache
    assert again.step_cache[step].summary == {"count": 5}
    assert WorkspaceTestNumbers(count=5).result(again).fingerprint == step.unique_id
    assert WorkspaceTestNumbers.RUNS == [step.unique_id]  # computed once

    info = again.step_info(step)
    assert info.result_location == f"{again.url}/results/{step.unique_id}"
    (run,) = again.registered_runs().values()
    assert again.run_record(run.name)["computed"] == {step.name: step.unique_id}


def test_workspace_records_are_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    step, _ = run_step(workspace)
    root = tmp_path / "workspace"
    records = [*root.glob("steps/*.json"), *root.glob("runs/*.json"), *root.glob("leases/*/*.json"),
               *root.glob("results/*/result.json"), *root.glob("results/*/manifest.json")]
    assert len(records) >= 5
    for record in records:
        json.loads(record.read_text())
    lease = json.loads(next(root.glob(f"leases/{step.unique_id}/*.json")).read_text())
    assert lease["released"] is True


def test_a_copied_workspace_names_its_new_place(tmp_path, monkeypatch):
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    step, _ = run_step(OlmoWorkspace(str(tmp_path / "a")))
    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)
    copy = OlmoWorkspace(str(tmp_path / "b"))
    assert copy.step_cache[step].path == tmp_path / "b" / "results" / step.unique_id / "data"
    assert copy.step_info(step).result_location == f"{tmp_path / 'b'}/results/{step.unique_id}"


@pytest.mark.parametrize("change", ["altered", "missing", "added"])
def test_a_changed_result_file_is_refused_naming_it(workspace_url, tmp_path, change):
    step, _ = run_step(OlmoWorkspace(workspace_url))
    reader = OlmoWorkspace(workspace_url)
    key = f"results/{step.unique_id}/data/nested/half.txt"
    if change == "altered":
        reader.store.write_bytes(key, b"3.0")
    elif change == "missing":
        reader.store.delete(key)
    else:
        key = f"results/{step.unique_id}/data/extra.pkl"
        reader.store.write_bytes(key, pickle.dumps(Marker(tmp_path / "marker")))
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # a fresh machine: nothing verified yet
    with pytest.raises(IntegrityError, match=key.rsplit("/", 2)[-1]):
        reader.step_cache[step]
    assert not (tmp_path / "marker").exists()


def test_a_result_changed_after_verification_is_verified_again(tmp_path, monkeypatch):
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    step, artifact = run_step(OlmoWorkspace(str(tmp_path / "workspace")))
    target = tmp_path / "workspace" / "results" / step.unique_id / "data" / "numbers.txt"
    target.unlink()  # the result shares inodes with the work dir: replace, don't write through
    target.write_text("0\n1\n2\n3\n9")
    with pytest.raises(IntegrityError, match="numbers.txt: sha256 does not match"):
        OlmoWorkspace(str(tmp_path / "workspace")).step_cache[step]


@pytest.mark.parametrize("record", ["steps", "listing", "manifest"])
def test_a_pickle_in_place_of_a_record_is_refused_and_never_executed(workspace_url, tmp_path, record):
    step, _ = run_step(OlmoWorkspace(workspace_url))
    workspace = OlmoWorkspace(workspace_url)
    key = {
        "steps": f"steps/{step.unique_id}.json",
        "listing": f"results/{step.unique_id}/result.json",
        "manifest": f"results/{step.unique_id}/manifest.json",
    }[record]
    workspace.store.write_bytes(key, pickle.dumps(Marker(tmp_path / "marker")))
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # a machine that has not verified it yet
    fresh = OlmoWorkspace(workspace_url)
    with pytest.raises((IntegrityError, ValueError), match=key.rsplit("/", 1)[-1]):
        fresh.step_info(step) if record == "steps" else fresh.step_cache[step]
    assert not (tmp_path / "marker").exists()


def test_a_listing_naming_another_step_class_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    step, _ = run_step(OlmoWorkspace(str(tmp_path / "workspace")))
    listing = tmp_path / "workspace" / "results" / step.unique_id / "result.json"
    data = json.loads(listing.read_text())
    listing.write_text(json.dumps({**data, "step_class": "DillStep"}))
    info = OlmoWorkspace(str(tmp_path / "workspace")).step_info(step)
    with pytest.raises(IntegrityError, match="written by step class 'DillStep'"):
        OlmoWorkspace(str(tmp_path / "workspace")).step_cache[info]


def test_a_step_info_naming_a_pickling_step_class_is_refused(tmp_path, monkeypatch):
    """Tango's own steps default to DillFormat: a record pointing at one must not get it used."""
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    step, _ = run_step(OlmoWorkspace(str(tmp_path / "workspace")))
    record = tmp_path / "workspace" / "steps" / f"{step.unique_id}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "step_class_name": "PrintStep"}))
    import tango.steps  # noqa: F401  (registers PrintStep, whose FORMAT is Tango's DillFormat)

    workspace = OlmoWorkspace(str(tmp_path / "workspace"))
    with pytest.raises(IntegrityError, match="names another step class, 'PrintStep'"):
        workspace.step_cache[workspace.step_info(step.unique_id)]


def test_a_step_whose_format_unpickles_is_refused_before_it_runs(tmp_path):
    with pytest.raises(IntegrityError, match="its FORMAT DillFormat may unpickle"):
        WorkspaceTestPickled().result(OlmoWorkspace(str(tmp_path / "workspace")))


def test_tango_local_workspaces_are_refused_with_how_to_import(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    sqlite3.connect(old / "stepinfo.sqlite").close()
    with pytest.raises(WorkspaceError, match=r"olmo-tango workspace sync .*old NEW_WORKSPACE"):
        OlmoWorkspace(str(old))


def test_urls_and_tango_yml_give_this_workspace(tmp_path):
    assert isinstance(Workspace.from_url(str(tmp_path / "a")), OlmoWorkspace)
    assert isinstance(Workspace.from_url(f"file://{tmp_path / 'b'}"), OlmoWorkspace)
    assert isinstance(Workspace.from_params({"type": "olmo", "url": str(tmp_path / "c")}), OlmoWorkspace)


def test_of_many_contenders_one_takes_a_lease(workspace_url):
    store = OlmoWorkspace(workspace_url).store
    leases = [Leases(store, lambda i=i: f"run{i}", ttl_s=30) for i in range(6)]
    results: list = [None] * len(leases)
    barrier = threading.Barrier(len(leases))

    def race(i: int) -> None:
        barrier.wait()
        results[i] = leases[i]._try_create("Step-001-x", 1)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = [lease for lease in results if lease is not None]
    assert len(holders) == 1
    holders[0].release()


def test_a_dead_holders_lease_is_taken_over_after_it_expires(workspace_url, caplog):
    store = OlmoWorkspace(workspace_url).store
    dead = Leases(store, lambda: "dead-run", ttl_s=1.0).acquire("Step-001-y", "step", done=lambda: False)
    dead._stop.set()  # the holder dies: no more heartbeats, no release
    started = time.monotonic()
    with caplog.at_level("INFO"):
        taker = Leases(store, lambda: "second-run", ttl_s=1.0).acquire("Step-001-y", 'step "y"', done=lambda: False)
    assert taker is not None and taker.generation == dead.generation + 1
    assert time.monotonic() - started >= 1.0
    assert 'waiting for step "y": held by run dead-run' in caplog.text
    assert 'taking over step "y" from run dead-run' in caplog.text
    time.sleep(0.6)  # the loser's next heartbeat notices
    assert dead._superseded()
    taker.release()


def test_a_waiting_run_gets_the_result_of_the_holder(workspace_url):
    first, second = OlmoWorkspace(workspace_url), OlmoWorkspace(workspace_url)
    WorkspaceTestNumbers.RUNS.clear()
    results = {}

    def run(name: str, workspace: OlmoWorkspace) -> None:
        results[name] = run_step(workspace, count=7, delay_s=1.5)[1]

    threads = [threading.Thread(target=run, args=(n, w)) for n, w in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(WorkspaceTestNumbers.RUNS) == 1
    assert results["a"].manifest == results["b"].manifest
