"""``olmo-tango workspace ls | verify | sync | gc``: on small workspaces made by running a tiny step through
OlmoWorkspace (and through Tango's own LocalWorkspace, for the import), locally and on the loopback S3 server."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from tango import Step
from tango.workspaces import LocalWorkspace

from integrations.workspace import OlmoWorkspace
from integrations.workspace.commands import human_size
from integrations.workspace import store as store_module
from integrations.workspace.store import Store
from steps.cli import main
from steps.common.artifacts import Artifact
from steps.common.step import ArtifactStep

OLMO_TANGO = Path(sys.executable).parent / "olmo-tango"


@Step.register("workspace_command_test_letters")
class CommandTestLetters(ArtifactStep):
    """Writes the letters of ``word`` (and, nested, how many there are); ``previous`` makes a dependency."""

    VERSION = "001"

    def run(self, word: str, previous: Artifact | None = None) -> Artifact:
        out = self.output_dir()
        (out / "letters.txt").write_text(" ".join(word))
        (out / "nested").mkdir()
        (out / "nested" / "count.json").write_text(json.dumps({"letters": len(word)}))
        return self.artifact(out, {"word": word})


@Step.register("workspace_command_test_pickled")
class CommandTestPickled(Step):
    """A result in Tango's default (dill) format: a Marker, which touches a file when unpickled."""

    VERSION = "001"

    def run(self, path: str) -> object:
        return Marker(Path(path))


class Marker:
    """Unpickling this creates ``path``: proof that something executed a workspace's bytes."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("OLMO_TANGO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def letters(word: str = "ab", name: str = "a", previous: Step | None = None) -> CommandTestLetters:
    kwargs = {} if previous is None else {"previous": previous}
    return CommandTestLetters(word=word, step_name=name, **kwargs)


def run(url: str | Path, name: str, *targets: Step) -> OlmoWorkspace:
    workspace = OlmoWorkspace(str(url))
    workspace.register_run(targets, name=name)
    for step in targets:
        step.result(workspace)
    return workspace


def small_workspace(url: str | Path) -> tuple[Step, Step]:
    """Run "first" computes a and b (b depends on a) and targets b; run "second" targets a (computes nothing)."""
    a = letters("ab", "a")
    b = letters("cde", "b", previous=a)
    run(url, "first", b)
    run(url, "second", a)
    return a, b


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["workspace", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path, *parts: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root/<part> for each part."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for part in parts
        for path in sorted((root / part).rglob("*"))
        if path.is_file()
    }


def result_size(root: Path, unique_id: str) -> int:
    listing = json.loads((root / "results" / unique_id / "result.json").read_text())
    return sum(entry["size"] for entry in listing["files"].values())


# ------------------------------------------------------------------------------------------------ ls


def test_ls_lists_each_result_with_names_size_and_runs(tmp_path, capsys, monkeypatch):
    a, b = small_workspace(tmp_path / "ws")
    code, out, _ = cli(capsys, "ls", "-w", tmp_path / "ws", "--json")
    assert code == 0
    rows = {row["fingerprint"]: row for row in map(json.loads, out.splitlines())}
    assert rows[a.unique_id] == {
        "fingerprint": a.unique_id, "step_names": ["a"], "step_class": "CommandTestLetters", "files": 3,
        "size": result_size(tmp_path / "ws", a.unique_id), "computed_by": ["first"], "used_by": ["second"],
    }
    assert rows[b.unique_id]["step_names"] == ["b"]
    assert (rows[b.unique_id]["computed_by"], rows[b.unique_id]["used_by"]) == (["first"], ["first"])
    assert len(rows) == 2

    monkeypatch.chdir(tmp_path)  # without -w: the workspace tango.yml names
    (tmp_path / "tango.yml").write_text(f"workspace:\n  type: olmo\n  url: {tmp_path / 'ws'}\n")
    code, out, _ = cli(capsys, "ls")
    assert code == 0
    header, row_a = out.splitlines()[0], next(line for line in out.splitlines() if a.unique_id in line)
    assert header.split() == ["STEP", "FINGERPRINT", "SIZE", "COMPUTED", "BY", "USED", "BY"]
    size = human_size(result_size(tmp_path / "ws", a.unique_id))
    assert row_a.split() == ["a", a.unique_id, *size.split(), "first", "second"]
    assert out.splitlines()[-1].startswith("2 results, ")


def test_ls_of_a_missing_workspace_is_an_error(tmp_path, capsys):
    code, _, err = cli(capsys, "ls", "-w", tmp_path / "nowhere")
    assert code == 1
    assert err.startswith("olmo-tango workspace ls: error: ") and "nowhere" in err


def test_the_console_script_lists_a_workspace(tmp_path):
    a, _ = small_workspace(tmp_path / "ws")
    done = subprocess.run([str(OLMO_TANGO), "workspace", "ls", "-w", str(tmp_path / "ws"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["fingerprint"] for line in done.stdout.splitlines()} >= {a.unique_id}


# ------------------------------------------------------------------------------------------------ verify


def test_verify_a_sound_workspace(tmp_path, capsys):
    a, b = small_workspace(tmp_path / "ws")
    code, out, err = cli(capsys, "verify", "-w", tmp_path / "ws")
    assert code == 0, err
    size = result_size(tmp_path / "ws", a.unique_id) + result_size(tmp_path / "ws", b.unique_id)
    assert out == f"2 results verified, 6 files, {human_size(size)}\n"


@pytest.mark.parametrize(
    "change, file, says",
    [
        ("changed", "data/letters.txt", "sha256 does not match result.json"),
        ("missing", "data/nested/count.json", "listed in result.json but missing"),
        ("added", "data/extra.pkl", "not listed in result.json"),
        ("listing", "result.json", "not a result listing (not JSON"),
    ],
)
def test_verify_names_each_problem(tmp_path, capsys, change, file, says):
    _, b = small_workspace(tmp_path / "ws")
    store = Store(str(tmp_path / "ws"))
    key = f"results/{b.unique_id}/{file}"
    if change == "changed":
        store.write_bytes(key, b"z z z")  # a new file in place (results share inodes with work dirs)
    elif change == "missing":
        store.delete(key)
    else:
        store.write_bytes(key, pickle.dumps(Marker(tmp_path / "marker")))
    code, out, err = cli(capsys, "verify", "-w", tmp_path / "ws")
    assert code == 1
    assert f"olmo-tango workspace verify: error: {tmp_path / 'ws'}/{key}: {says}" in err
    assert out == ""
    assert not (tmp_path / "marker").exists()


def test_verify_checks_the_bytes_in_the_bucket_not_the_local_cache(tmp_path, capsys, s3_server):
    url = s3_server.bucket() + "/ws"
    _, b = small_workspace(url)
    OlmoWorkspace(url).step_cache[b]  # a verified copy in the local cache
    key = f"results/{b.unique_id}/data/letters.txt"
    Store(url).write_bytes(key, b"x y z")
    code, _, err = cli(capsys, "verify", "-w", url)
    assert code == 1
    assert f"{url}/{key}: sha256 does not match" in err


# ------------------------------------------------------------------------------------------------ sync


def test_sync_local_to_local_copies_results_infos_and_runs(tmp_path, capsys):
    a, b = small_workspace(tmp_path / "src")
    code, out, err = cli(capsys, "sync", tmp_path / "src", tmp_path / "dst")
    assert code == 0, err
    assert out.startswith("copied 2 results (") and out.endswith("; 0 already there\n")
    src, dst = tmp_path / "src", tmp_path / "dst"
    assert tree(dst, "results", "steps") == tree(src, "results", "steps")
    assert {p.name for p in (dst / "runs").glob("*.json")} == {"first.json", "second.json"}
    assert not (dst / "leases").exists() and not (dst / "work").exists()
    copy = OlmoWorkspace(str(dst))
    assert (copy.step_cache[b].path / "letters.txt").read_text() == "c d e"
    assert copy.registered_run("first").steps["b"].unique_id == b.unique_id

    code, out, _ = cli(capsys, "sync", src, dst)
    assert code == 0
    assert out.startswith("copied 0 results (0 B) in ") and out.endswith("; 2 already there\n")


def test_sync_through_a_bucket_is_byte_identical(tmp_path, capsys, s3_server):
    a, b = small_workspace(tmp_path / "src")
    bucket = s3_server.bucket() + "/ws"
    assert cli(capsys, "sync", tmp_path / "src", bucket)[0] == 0
    code, out, err = cli(capsys, "sync", bucket, tmp_path / "back")
    assert code == 0, err
    assert out.startswith("copied 2 results (")
    assert tree(tmp_path / "back", "results", "steps") == tree(tmp_path / "src", "results", "steps")
    assert (OlmoWorkspace(bucket).step_cache[a].path / "letters.txt").read_text() == "a b"
    code, out, _ = cli(capsys, "sync", tmp_path / "src", bucket)
    assert out.startswith("copied 0 results") and out.endswith("; 2 already there\n")
    code, out, _ = cli(capsys, "verify", "-w", bucket)
    assert (code, out.split(",")[0]) == (0, "2 results verified")


def test_sync_commits_each_result_by_its_listing_after_every_other_file(tmp_path, capsys, s3_server, monkeypatch):
    """Results go up in one batch of their files, then one of their listings; a sync interrupted in the
    first batch leaves no listing (so no result) behind, and the next sync completes it."""
    a, b = small_workspace(tmp_path / "src")
    batches: list[list[str]] = []
    transfer = store_module._transfer

    def recording(sizes, last, progress, move):
        def recorded(names, cb):
            batches.append(list(names))
            if len(batches) == 1 and fail:
                raise OSError("connection reset")
            move(names, cb)

        return transfer(sizes, last, progress, recorded)

    monkeypatch.setattr(store_module, "_transfer", recording)
    bucket = s3_server.bucket() + "/ws"
    fail = True
    assert cli(capsys, "sync", tmp_path / "src", bucket)[0] == 1
    assert not any(key.endswith("/result.json") for key in Store(bucket).list("results"))
    batches.clear()
    fail = False
    assert cli(capsys, "sync", tmp_path / "src", bucket)[0] == 0
    listings = sorted(f"results/{uid}/result.json" for uid in (a.unique_id, b.unique_id))
    assert len(batches) == 2 and sorted(batches[1]) == listings
    assert sorted(batches[0]) == sorted(f"results/{key}" for key in tree(tmp_path / "src" / "results", ".")
                                        if not key.endswith("result.json"))
    assert tree(tmp_path / "src", "results") == {
        key: Store(bucket).read_bytes(key) for key in Store(bucket).list("results")
    }


@pytest.mark.parametrize("where", ["local", "s3"])
def test_sync_refuses_a_tampered_source_result(tmp_path, capsys, request, where):
    src = str(tmp_path / "src") if where == "local" else request.getfixturevalue("s3_server").bucket() + "/src"
    a, b = small_workspace(src)
    key = f"results/{b.unique_id}/data/letters.txt"
    Store(src).write_bytes(key, b"x y z")
    code, out, err = cli(capsys, "sync", src, tmp_path / "dst")
    assert code == 1
    assert f"olmo-tango workspace sync: error: {src}/{key}: sha256 does not match result.json" in err
    assert out.startswith("copied 1 results (")
    assert (tmp_path / "dst" / "results" / a.unique_id / "result.json").is_file()
    assert not (tmp_path / "dst" / "results" / b.unique_id).exists()


def test_sync_with_a_workflow_copies_only_its_steps(tmp_path, capsys):
    a, b = small_workspace(tmp_path / "src")
    workflow = tmp_path / "only-a.jsonnet"
    workflow.write_text('{ steps: { a: { type: "workspace_command_test_letters", word: "ab" } } }')
    code, out, err = cli(capsys, "sync", tmp_path / "src", tmp_path / "dst", "--workflow", workflow)
    assert code == 0, err
    assert out.startswith("copied 1 results (")
    assert [p.name for p in (tmp_path / "dst" / "results").iterdir()] == [a.unique_id]
    assert [p.name for p in (tmp_path / "dst" / "runs").glob("*.json")] == ["second.json"]  # its targets: a only


def test_sync_never_overwrites_the_destination(tmp_path, capsys):
    small_workspace(tmp_path / "src")
    run(tmp_path / "dst", "first", letters("zz", "z"))  # another run of the same name
    before = (tmp_path / "dst" / "runs" / "first.json").read_bytes()
    assert cli(capsys, "sync", tmp_path / "src", tmp_path / "dst")[0] == 0
    assert (tmp_path / "dst" / "runs" / "first.json").read_bytes() == before
    assert (tmp_path / "dst" / "runs" / "second.json").is_file()


def test_sync_refuses_a_tango_local_workspace_as_destination(tmp_path, capsys):
    small_workspace(tmp_path / "src")
    LocalWorkspace(tmp_path / "tango")
    code, _, err = cli(capsys, "sync", tmp_path / "src", tmp_path / "tango")
    assert code == 1 and "olmo-tango workspace sync: error: " in err and "LocalWorkspace" in err


# ------------------------------------------------------------------------------------------------ Tango import


def tango_workspace(directory: Path, marker: Path) -> tuple[Step, Step, Step]:
    """A real Tango LocalWorkspace: run "old-run" targets b (which depends on a) and a dill-format result."""
    workspace = LocalWorkspace(directory)
    a = letters("ab", "a")
    b = letters("cde", "b", previous=a)
    pickled = CommandTestPickled(path=str(marker), step_name="pickled")
    workspace.register_run([b, pickled], name="old-run")
    b.result(workspace)
    pickled.result(workspace)
    marker.unlink(missing_ok=True)  # Tango itself may have read its own pickle back
    return a, b, pickled


@pytest.mark.parametrize("where", ["local", "s3"])
def test_sync_imports_a_tango_local_workspace_without_unpickling(tmp_path, capsys, request, where):
    marker = tmp_path / "marker"
    a, b, pickled = tango_workspace(tmp_path / "tango", marker)
    (tmp_path / "tango" / "stepinfo.sqlite").write_bytes(pickle.dumps(Marker(marker)))  # never opened
    new = str(tmp_path / "new") if where == "local" else request.getfixturevalue("s3_server").bucket() + "/new"
    code, out, err = cli(capsys, "sync", tmp_path / "tango", new)
    assert code == 0, err
    tango = tmp_path / "tango"
    assert out == f"imported 2 results from Tango LocalWorkspace {tango}; skipped 1 (not artifact directories)\n"
    assert not marker.exists()
    assert not Store(new).list(f"results/{pickled.unique_id}/")

    workspace = OlmoWorkspace(new)
    assert (workspace.step_cache[b].path / "letters.txt").read_text() == "c d e"
    assert workspace.step_cache[a].summary == {"word": "ab"}
    assert b.result(workspace).fingerprint == b.unique_id  # a cached result for Tango
    info = workspace.step_info(b)
    assert (info.step_name, info.step_class_name, info.version) == ("b", "CommandTestLetters", "001")
    assert info.dependencies == {a.unique_id} and info.cacheable and info.end_time is not None
    assert workspace.step_info(a).step_name == "a"
    assert workspace.registered_run("old-run").steps["b"].unique_id == b.unique_id
    code, out, _ = cli(capsys, "verify", "-w", new)
    assert (code, out.split(",")[0]) == (0, "2 results verified")

    code, out, _ = cli(capsys, "sync", tmp_path / "tango", new)  # again: nothing new
    assert out.startswith("imported 0 results") and out.endswith("; 2 already there\n")
    assert not marker.exists()


def test_an_olmo_workspace_refuses_a_tango_local_workspace(tmp_path, capsys):
    tango_workspace(tmp_path / "tango", tmp_path / "marker")
    code, _, err = cli(capsys, "ls", "-w", tmp_path / "tango")
    assert code == 1 and "olmo-tango workspace sync" in err  # the message says how to import it


def test_the_import_refuses_a_result_that_does_not_match_its_manifest(tmp_path, capsys):
    a, b, _ = tango_workspace(tmp_path / "tango", tmp_path / "marker")
    target = tmp_path / "tango" / "cache" / b.unique_id / "data" / "letters.txt"
    target.unlink()  # hard-linked with the work dir: replace, don't write through
    target.write_text("x y z")
    code, out, err = cli(capsys, "sync", tmp_path / "tango", tmp_path / "new")
    assert code == 1
    assert f"olmo-tango workspace sync: error: {target}: sha256 does not match manifest.json" in err
    assert out.startswith("imported 1 results from Tango LocalWorkspace")
    assert not (tmp_path / "new" / "results" / b.unique_id).exists()
    assert (tmp_path / "new" / "results" / a.unique_id / "result.json").is_file()


# ------------------------------------------------------------------------------------------------ gc


def test_gc_deletes_only_what_nothing_refers_to(tmp_path, capsys):
    a, b = small_workspace(tmp_path / "ws")
    c, d = letters("xyz", "c"), letters("uvw", "d")
    run(tmp_path / "ws", "old", c, d)
    (tmp_path / "ws" / "runs" / "old.json").unlink()  # a run record removed: c and d are garbage
    keep = tmp_path / "keep-d.jsonnet"
    keep.write_text('{ steps: { d: { type: "workspace_command_test_letters", word: "uvw" } } }')
    size_c, size_d = (result_size(tmp_path / "ws", step.unique_id) for step in (c, d))

    with pytest.raises(SystemExit):
        main(["workspace", "gc", "-w", str(tmp_path / "ws")])  # neither --dry-run nor --yes
    assert "one of the arguments --dry-run --yes is required" in capsys.readouterr().err

    code, out, _ = cli(capsys, "gc", "-w", tmp_path / "ws", "--dry-run", "--keep-workflow", keep)
    assert code == 0
    assert out.splitlines()[0].split() == [c.unique_id, "c", *human_size(size_c).split()]
    assert out.splitlines()[-1] == f"1 results ({human_size(size_c)}) would be deleted; run with --yes to delete them"
    assert (tmp_path / "ws" / "results" / c.unique_id / "result.json").is_file()

    code, out, _ = cli(capsys, "gc", "-w", tmp_path / "ws", "--yes", "--keep-workflow", keep)
    assert (code, out) == (0, f"deleted 1 results ({human_size(size_c)})\n")
    assert not (tmp_path / "ws" / "results" / c.unique_id).exists()
    assert not (tmp_path / "ws" / "steps" / f"{c.unique_id}.json").exists()
    assert sorted(p.name for p in (tmp_path / "ws" / "results").iterdir()) == sorted(
        [a.unique_id, b.unique_id, d.unique_id]
    )
    assert cli(capsys, "verify", "-w", tmp_path / "ws")[0] == 0

    code, out, _ = cli(capsys, "gc", "-w", tmp_path / "ws", "--yes")  # without the kept workflow
    assert (code, out) == (0, f"deleted 1 results ({human_size(size_d)})\n")
    assert not (tmp_path / "ws" / "results" / d.unique_id).exists()


def test_gc_keeps_a_result_whose_step_a_run_holds(tmp_path, capsys):
    c = letters("xyz", "c")
    run(tmp_path / "ws", "old", c)
    (tmp_path / "ws" / "runs" / "old.json").unlink()
    lease = tmp_path / "ws" / "leases" / c.unique_id / "00000009.json"
    lease.write_text(json.dumps({"run": "busy", "host": "h", "pid": 1, "since": "now", "beat": 0, "released": False}))
    code, out, _ = cli(capsys, "gc", "-w", tmp_path / "ws", "--dry-run")
    assert out.splitlines()[-1].startswith("0 results (0 B) would be deleted; kept 1 a run holds the lease of")


def test_gc_refuses_when_a_run_record_is_unreadable(tmp_path, capsys):
    small_workspace(tmp_path / "ws")
    (tmp_path / "ws" / "runs" / "second.json").write_bytes(b"\x80not json")
    code, _, err = cli(capsys, "gc", "-w", tmp_path / "ws", "--yes")
    assert code == 1 and "olmo-tango workspace gc: error: " in err and "second.json" in err
    assert len(list((tmp_path / "ws" / "results").iterdir())) == 2
