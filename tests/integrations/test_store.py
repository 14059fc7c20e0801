"""The workspace's storage layer, on a local directory and on a loopback S3 server (moto)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from integrations.workspace import store as store_module
from integrations.workspace.store import Store

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 5 * 2**20  # S3's smallest multipart part: a 12 MiB file goes up in 3 parts


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(Store, "block_size", BLOCK)


def new_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "local":
        return str(tmp_path / f"store-{uuid.uuid4().hex[:8]}")
    if kind == "memory":
        return f"memory://store-{uuid.uuid4().hex}"
    return request.getfixturevalue("s3_server").bucket() + "/workspace"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    return Store(new_url(request.param, tmp_path, request))


def make_tree(directory: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "empty": b"",
        "nested/deeper/b.bin": os.urandom(1000),
        "nested/c.json": b'{"c": 3}',
        "big.bin": os.urandom(2 * BLOCK + 2 * 2**20),
        "DONE": b"ok",
    }
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    return files


def read_tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture
def moves(monkeypatch) -> list[tuple[str, str]]:
    """Records ("start" | "end", file name) for every file a tree operation moves (the names a batch
    move is given are the file's key or path relative to the tree)."""
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    transfer = store_module._transfer

    def recording(sizes, last, progress, move):
        def recorded(names, cb):
            with lock:
                events.extend(("start", name) for name in names)
            move(names, cb)
            with lock:
                events.extend(("end", name) for name in names)

        return transfer(sizes, last, progress, recorded)

    monkeypatch.setattr(store_module, "_transfer", recording)
    return events


def assert_moved_last(events: list[tuple[str, str]], last: str, prefix: str) -> None:
    """The final move of ``last`` started after every other file had been moved (and nothing was in flight).
    A move names a file by its path relative to the tree or by its key under ``prefix``."""
    relative = [(kind, name.removeprefix(f"{prefix}/")) for kind, name in events]
    start = max(i for i, (kind, rel) in enumerate(relative) if kind == "start" and rel == last)
    started = sorted(rel for kind, rel in relative[:start] if kind == "start")
    ended = sorted(rel for kind, rel in relative[:start] if kind == "end")
    assert started == ended and {"a.txt", "empty", "nested/deeper/b.bin", "nested/c.json", "big.bin"} <= set(ended)


def test_url_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Store("relative/dir/")
    assert local.is_local and local.url == str(tmp_path / "relative" / "dir")
    assert local.local_path("a/b") == tmp_path / "relative" / "dir" / "a" / "b"
    assert Store(f"file://{tmp_path}/x/").url == str(tmp_path / "x")
    remote = Store("memory://bucket/prefix/")
    assert not remote.is_local and remote.url == "memory://bucket/prefix"
    with pytest.raises(ValueError):
        remote.local_path("a")
    with pytest.raises(ValueError):
        local.read_bytes("../outside")


def test_files(store):
    assert store.list() == [] and not store.exists("a.json")
    store.write_json("a.json", {"x": [1, 2]})
    store.write_bytes("dir/sub/b.bin", b"\x00\x01")
    store.write_bytes("dir/c.txt", b"one")
    store.write_bytes("dir/c.txt", b"two")  # overwrite
    assert store.read_json("a.json") == {"x": [1, 2]}
    assert store.read_bytes("dir/c.txt") == b"two"
    assert store.exists("dir/sub/b.bin") and store.size("dir/sub/b.bin") == 2
    assert store.list() == ["a.json", "dir/c.txt", "dir/sub/b.bin"]
    assert store.list("dir") == store.list("dir/") == ["dir/c.txt", "dir/sub/b.bin"]
    assert store.list("nothing/here") == []

    with pytest.raises(FileNotFoundError, match=f"{store.url}/missing"):
        store.read_bytes("missing")
    with pytest.raises(FileNotFoundError, match=f"{store.url}/missing"):
        store.size("missing")

    other = Store(store.url)  # another client sees writes at once: no instance or listing cache
    assert other.list("dir") == ["dir/c.txt", "dir/sub/b.bin"]
    store.write_bytes("dir/d.txt", b"new")
    assert other.list("dir") == ["dir/c.txt", "dir/d.txt", "dir/sub/b.bin"] and other.exists("dir/d.txt")

    store.delete("a.json")
    store.delete("a.json")  # missing is fine
    store.delete("no/such/dir", recursive=True)
    assert not store.exists("a.json")
    store.delete("dir", recursive=True)
    assert store.list() == [] and other.list() == []
    with pytest.raises(ValueError):
        store.delete("", recursive=True)
    store.write_bytes("after", b"the root is still usable")  # an S3 store's bucket survived
    assert store.list() == ["after"]


class Marker:
    """Unpickling it creates a directory: evidence that something unpickled it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_read_json_never_unpickles(store, tmp_path):
    marker = tmp_path / "unpickled"
    store.write_bytes("steps/x.json", pickle.dumps(Marker(marker)))
    with pytest.raises(ValueError, match=f"{store.url}/steps/x.json: not JSON"):
        store.read_json("steps/x.json")
    assert not marker.exists()
    pickle.loads(store.read_bytes("steps/x.json"))  # the payload is live: unpickling would have fired
    assert marker.exists()


CONTENDER = """
import sys, time
from pathlib import Path
from integrations.workspace.store import Store
store = Store(sys.argv[1])
store.exists("warm-up")
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
print(store.create(sys.argv[3], sys.argv[4].encode()), flush=True)
"""


def test_create_is_atomic(store, tmp_path):
    for round in range(3):
        key = f"leases/step/{round}"
        go = tmp_path / f"go-{round}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", CONTENDER, store.url, str(go), key, f"process-{i}"],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )
            for i in range(2)
        ]
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        barrier = threading.Barrier(8)
        won: dict[str, bool] = {}

        def contend(name: str) -> None:
            barrier.wait()
            won[name] = store.create(key, name.encode())

        threads = [threading.Thread(target=contend, args=(f"thread-{i}",)) for i in range(8)]
        go.touch()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, process in enumerate(processes):
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0
            won[f"process-{i}"] = out.strip() == "True"
        winners = [name for name, created in won.items() if created]
        assert len(won) == 10 and len(winners) == 1, won
        assert store.read_bytes(key) == winners[0].encode()
        assert store.list("leases") == [f"leases/step/{r}" for r in range(round + 1)]  # no temporary files
    assert store.create("leases/step/0", b"again") is False


def test_create_needs_an_atomic_backend():
    with pytest.raises(NotImplementedError, match="memory"):
        Store(f"memory://store-{uuid.uuid4().hex}").create("k", b"")


def test_tree_round_trip(store, tmp_path, moves, capfd):
    files = make_tree(tmp_path / "src")
    moved = store.put_tree(tmp_path / "src", "results/abc", last="DONE", progress=True)
    assert moved == sum(map(len, files.values()))
    assert "100%" in capfd.readouterr().err
    assert_moved_last(moves, "DONE", "results/abc")
    assert store.list("results/abc") == sorted(f"results/abc/{rel}" for rel in files)
    if not store.is_local:  # went up as a multipart upload, in 5 MiB parts
        assert store.fs.info(f"{store.url}/results/abc/big.bin")["ETag"].strip('"').endswith("-3")

    assert store.get_tree("results/abc", tmp_path / "dst") == moved
    assert read_tree(tmp_path / "dst") == files

    with pytest.raises(FileNotFoundError):
        store.put_tree(tmp_path / "src", "results/def", last="no-such-file")


def test_put_tree_links_into_a_local_store(tmp_path):
    store = Store(str(tmp_path / "store"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data")
    store.put_tree(tmp_path / "src", "r")
    assert os.path.samefile(tmp_path / "src" / "f", store.local_path("r/f"))


@pytest.mark.parametrize(
    "source, destination",
    [("local", "s3"), ("s3", "local"), ("s3", "s3"), ("local", "local"), ("s3", "memory"), ("memory", "s3")],
)
def test_copy_tree_to(source, destination, tmp_path, request, moves):
    files = make_tree(tmp_path / "src")
    a = Store(new_url(source, tmp_path, request))
    b = Store(new_url(destination, tmp_path, request))
    a.put_tree(tmp_path / "src", "x/one", last="DONE")
    moves.clear()
    assert a.copy_tree_to("x/one", b, "y/two", last="DONE") == sum(map(len, files.values()))
    assert_moved_last(moves, "DONE", "y/two")
    assert b.list() == sorted(f"y/two/{rel}" for rel in files)
    b.get_tree("y/two", tmp_path / "back")
    assert read_tree(tmp_path / "back") == files


def test_create_conflict_is_a_loss(s3_server, monkeypatch):
    """S3 answers 409 ConditionalRequestConflict to a conditional write racing another one on the same key
    (moto never does, so the backend's error is injected): that write did not create the key."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    store = Store(s3_server.bucket())
    response = {"Error": {"Code": "ConditionalRequestConflict"}, "ResponseMetadata": {"HTTPStatusCode": 409}}

    def conflict(*args, **kwargs):
        raise translate_boto_error(ClientError(response, "PutObject"))

    monkeypatch.setattr(store.fs, "pipe_file", conflict)
    assert store.create("k", b"") is False
