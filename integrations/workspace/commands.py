"""The ``olmo-tango workspace`` commands: list results, verify them, copy them between workspaces (and import
a Tango ``LocalWorkspace`` directory), and delete the ones nothing refers to.

Plain functions over :class:`Store` s that return data; ``steps/cli.py`` parses arguments and prints. The only
output here is the progress bars of transfers (on stderr). Nothing read is unpickled or executed: run
records, step infos, listings and manifests are parsed as JSON, result files are only hashed and copied.
A workflow's fingerprints come from the caller (loading a workflow imports the ``steps`` package, which
this library layer never does).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection

from tqdm import tqdm

from .leases import latest_lease, leased_ids
from .results import (
    LISTING, RESULTS, VERIFIED, IntegrityError, VerifiedMarks, directory_problems, listed_files, parse_listing, sha256_file,
)
from .store import Store, local_files
from .workspace import (
    DATE_FORMAT, LAYOUT, MARKER, RUNS, STEPS, local_cache_root, refuse_tango_local_workspace, verified_marks,
)

# What Tango's LocalWorkspace writes: pickled step infos (never opened here), one directory per result with
# the format's files and a JSON ``cache-metadata.json`` naming the format, and run directories whose entries
# are symlinks to results (plus a JSON ``stepinfo.json``: step name -> unique id).
TANGO_STEPINFO = "stepinfo.sqlite"
TANGO_CACHE = "cache"
TANGO_METADATA = "cache-metadata.json"
TANGO_RUNS = "runs"
TANGO_RUN_STEPS = "stepinfo.json"
# ArtifactFormat's layout (steps/common/artifacts.py; a library module does not import a steps module).
ARTIFACT_FORMAT = "ArtifactFormat"
MANIFEST = "manifest.json"
DATA = "data"


class CommandError(RuntimeError):
    """A command that cannot go on: a missing or unusable workspace, an unreadable record it depends on."""


def human_size(size: int | None) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units); None -> ``?``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _info_key(unique_id: str) -> str:
    return f"{STEPS}/{unique_id}.json"


def _listing_key(unique_id: str) -> str:
    return f"{RESULTS}/{unique_id}/{LISTING}"


def open_store(url: str, must_exist: bool = True) -> Store:
    """The store of a workspace at ``url``; a local one must be a directory unless ``must_exist`` is false."""
    store = Store(url)
    if must_exist and store.is_local and not store.local_path().is_dir():
        raise CommandError(f"workspace {url}: no such directory")
    return store


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Contents:
    """What a workspace holds, as read from its store in one listing and a few JSON reads."""

    results: dict[str, set[str]]  # unique id -> files under results/<id>/, for every result directory
    runs: dict[str, dict[str, Any]]  # run name -> record, for the readable records
    infos: dict[str, dict[str, Any]]  # unique id -> step info JSON, for the readable ones
    problems: list[str] = field(default_factory=list)  # records that are not JSON

    def complete(self) -> list[str]:
        """The fingerprints of results whose listing exists (the others are being written, or were abandoned)."""
        return sorted(uid for uid, files in self.results.items() if LISTING in files)

    def incomplete(self) -> list[str]:
        return sorted(uid for uid, files in self.results.items() if LISTING not in files)

    def referenced(self) -> set[str]:
        """Fingerprints a run record names, as a target or as computed."""
        return {uid for record in self.runs.values() for part in ("steps", "computed") for uid in record[part].values()}

    def step_names(self, unique_id: str) -> list[str]:
        names = {name for record in self.runs.values() for part in ("steps", "computed")
                 for name, uid in record[part].items() if uid == unique_id}
        name = self.infos.get(unique_id, {}).get("step_name")
        if name and name != unique_id:
            names.add(name)
        return sorted(names)


def result_files(store: Store) -> dict[str, set[str]]:
    """unique id -> files under ``results/<id>/``, for every result directory (one listing of the store)."""
    results: dict[str, set[str]] = {}
    for key in store.list(f"{RESULTS}/"):
        parts = key.split("/", 2)
        if len(parts) == 3 and not parts[1].startswith("."):  # not local staging directories of results being written
            results.setdefault(parts[1], set()).add(parts[2])
    return results


def read_contents(store: Store) -> Contents:
    contents = Contents(result_files(store), {}, {})
    for key in store.list(f"{RUNS}/"):
        if key.endswith(".json"):
            try:
                record = store.read_json(key)
                if not all(isinstance(record.get(part), dict) for part in ("steps", "computed")):
                    raise ValueError(f"{store.url}/{key}: not a run record (expected 'steps' and 'computed')")
            except ValueError as exc:
                contents.problems.append(str(exc))
                continue
            except AttributeError:
                contents.problems.append(f"{store.url}/{key}: not a run record (expected an object)")
                continue
            contents.runs[key[len(RUNS) + 1 : -len(".json")]] = record
    for key in store.list(f"{STEPS}/"):
        if key.endswith(".json"):
            try:
                info = store.read_json(key)
            except ValueError as exc:
                contents.problems.append(str(exc))
                continue
            if isinstance(info, dict):
                contents.infos[key[len(STEPS) + 1 : -len(".json")]] = info
    return contents


def _read_listing(store: Store, unique_id: str) -> dict[str, Any]:
    key = _listing_key(unique_id)
    return parse_listing(store.read_bytes(key), f"{store.url}/{key}", unique_id)


def _lease_held(store: Store, unique_id: str) -> bool:
    """Whether a run holds the step's lease now (its newest lease is not released): it is being computed,
    or its run has just written the result and not yet recorded it."""
    try:
        _, holder = latest_lease(store, unique_id)
    except (ValueError, FileNotFoundError):
        return True  # unreadable or just replaced: assume someone holds it
    return holder is not None and not holder.released


# ---------------------------------------------------------------------------------------------- ls


def list_results(store: Store) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per result: fingerprint, step names, step class, files, size (bytes; None when the listing
    is unreadable), the runs that computed it and the runs that have it as a target; and the problems met
    (records or listings that are not JSON)."""
    contents = read_contents(store)
    problems = list(contents.problems)
    rows = []
    for unique_id in contents.complete():
        try:
            listing = _read_listing(store, unique_id)
            files, step_class = len(listing["files"]), listing.get("step_class")
            size = sum(entry.get("size", 0) for entry in listing["files"].values())
        except (IntegrityError, FileNotFoundError) as exc:
            problems.append(str(exc))
            files, size, step_class = None, None, contents.infos.get(unique_id, {}).get("step_class_name")
        rows.append({
            "fingerprint": unique_id,
            "step_names": contents.step_names(unique_id),
            "step_class": step_class,
            "files": files,
            "size": size,
            "computed_by": sorted(name for name, r in contents.runs.items() if unique_id in r["computed"].values()),
            "used_by": sorted(name for name, r in contents.runs.items() if unique_id in r["steps"].values()),
        })
    return rows, problems


# ---------------------------------------------------------------------------------------------- verify


@dataclass
class Verification:
    results: int = 0  # complete results checked
    files: int = 0
    size: int = 0
    problems: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # result directories without a listing


def verify_results(store: Store, progress: bool = True) -> Verification:
    """Check every result's files against its listing, in the store itself: a remote workspace's results are
    downloaded to a temporary directory (the local cache is not trusted for this)."""
    contents = read_contents(store)
    report = Verification(problems=list(contents.problems), incomplete=contents.incomplete())
    for unique_id in contents.complete():
        where = f"{store.url}/{RESULTS}/{unique_id}"
        report.results += 1
        try:
            listing = _read_listing(store, unique_id)
        except (IntegrityError, FileNotFoundError) as exc:
            report.problems.append(str(exc))
            continue
        if store.is_local:
            problems = directory_problems(store.local_path(f"{RESULTS}/{unique_id}"), listing, where)
        else:
            with tempfile.TemporaryDirectory(prefix="olmo-verify-") as tmp:
                store.get_tree(f"{RESULTS}/{unique_id}", Path(tmp), progress=progress)
                problems = directory_problems(Path(tmp), listing, where)
        report.problems += problems
        report.files += len(listing["files"])
        report.size += sum(entry.get("size", 0) for entry in listing["files"].values())
    return report


# ---------------------------------------------------------------------------------------------- sync


@dataclass
class SyncReport:
    copied: list[str] = field(default_factory=list)
    size: int = 0  # bytes moved
    seconds: float = 0.0
    already: list[str] = field(default_factory=list)  # identical listing in the destination
    refused: list[str] = field(default_factory=list)  # one message per bad file of a source result
    warnings: list[str] = field(default_factory=list)  # results left as they are in the destination
    runs: list[str] = field(default_factory=list)  # run records copied (or made, for an import)
    skipped: list[str] = field(default_factory=list)  # Tango cache entries that are not artifact results
    tango: bool = False  # the source was a Tango LocalWorkspace directory


def is_tango_local_workspace(store: Store) -> bool:
    if not store.is_local or store.exists(MARKER):
        return False
    return store.exists(TANGO_STEPINFO) or all(store.local_path(name).is_dir() for name in (TANGO_CACHE, TANGO_RUNS))


def _open_destination(url: str) -> Store:
    dst = open_store(url, must_exist=False)
    refuse_tango_local_workspace(dst)  # WorkspaceError, with how to import it
    dst.create(MARKER, f'{{"layout": {LAYOUT}}}\n'.encode())
    return dst


@dataclass
class _Outcome:
    """What syncing one result does: ``copy`` (verified, to be copied), ``copied``, ``already`` (identical
    there), ``kept`` or ``refused``."""

    kind: str
    size: int = 0
    messages: list[str] = field(default_factory=list)
    listing: dict[str, Any] = field(default_factory=dict)


def _in_destination(
    dst: Store, unique_id: str, files: set[str], listing: dict[str, Any], leased: set[str]
) -> _Outcome | None:
    """The outcome when the destination already has (or is computing) the result; None when it should be
    copied, after clearing what an interrupted copy left. ``files``: the destination's files of the result;
    ``leased``: the fingerprints with leases there (:func:`leased_ids`)."""
    if LISTING not in files:
        if unique_id in leased and _lease_held(dst, unique_id):
            return _Outcome("kept", messages=[
                f"{dst.url}/{RESULTS}/{unique_id}: being computed there by a run (lease held); not copied"
            ])
        if files:
            dst.delete(f"{RESULTS}/{unique_id}", recursive=True)  # what an interrupted copy left
        return None
    try:
        same = json.loads(dst.read_bytes(_listing_key(unique_id))) == listing
    except ValueError:
        same = False
    if same:
        return _Outcome("already")
    return _Outcome("kept", messages=[
        f"{dst.url}/{_listing_key(unique_id)}: the destination holds a different result of this fingerprint; "
        f"kept it, not copied (run `olmo-tango workspace verify` on both)"
    ])


def _plan_result(
    src: Store, dst: Store, unique_id: str, dst_files: set[str], leased: set[str], marks: VerifiedMarks
) -> _Outcome:
    """What to do with one result: ``copy`` when the destination lacks it (a local source's files are
    verified against the listing here, unless this machine's ``marks`` say it verified them as they are; a
    remote one's once downloaded), else the outcome."""
    try:
        raw = src.read_bytes(_listing_key(unique_id))
        listing = parse_listing(raw, f"{src.url}/{_listing_key(unique_id)}", unique_id)
    except (IntegrityError, FileNotFoundError) as exc:
        return _Outcome("refused", messages=[str(exc)])
    present = _in_destination(dst, unique_id, dst_files, listing, leased)
    if present is not None:
        return present
    if src.is_local:
        prefix = f"{RESULTS}/{unique_id}"
        problems = marks.problems(unique_id, src.local_path(prefix), raw, listing, f"{src.url}/{prefix}")
        if problems:
            return _Outcome("refused", messages=problems)
    return _Outcome("copy", listing=listing)


def _step_info(src: Store, unique_id: str) -> bytes | None:
    """The raw step info of ``unique_id`` in ``src``, if it is a JSON record of that fingerprint."""
    try:
        raw = src.read_bytes(_info_key(unique_id))
        info = json.loads(raw)
    except (FileNotFoundError, ValueError):
        return None  # no step info (or not JSON): the result is complete without it
    return raw if isinstance(info, dict) and info.get("unique_id") == unique_id else None


def _put_results(src: Store, dst: Store, trees: dict[str, Path], progress: bool) -> dict[str, _Outcome]:
    """Upload results (fingerprint -> local directory of its verified files) in one batch, their listings
    after every other file, then their step infos."""
    files = {uid: {f"{RESULTS}/{uid}/{rel}": tree / rel for rel in local_files(tree)} for uid, tree in trees.items()}
    everything = {key: path for result in files.values() for key, path in result.items()}
    dst.put_files(everything, last=[_listing_key(uid) for uid in trees], progress=progress)
    infos = {uid: _step_info(src, uid) for uid in trees}
    dst.write_many({_info_key(uid): raw for uid, raw in infos.items() if raw is not None})
    return {uid: _Outcome("copied", size=sum(path.stat().st_size for path in files[uid].values())) for uid in trees}


def _copy_remote_result(src: Store, dst: Store, unique_id: str, listing: dict[str, Any]) -> _Outcome:
    """Download one result of a remote source, verify it against its listing, and upload it."""
    prefix = f"{RESULTS}/{unique_id}"
    with tempfile.TemporaryDirectory(prefix="olmo-sync-") as tmp:
        src.get_tree(prefix, Path(tmp))
        problems = directory_problems(Path(tmp), listing, f"{src.url}/{prefix}")
        if problems:
            return _Outcome("refused", messages=problems)
        return _put_results(src, dst, {unique_id: Path(tmp)}, progress=False)[unique_id]


def _copy_results(src: Store, dst: Store, plans: dict[str, _Outcome], progress: bool) -> dict[str, _Outcome]:
    """Copy the results planned ``copy``: a local source's all in one batch, a remote source's one by one
    (each downloaded and verified first), ``Store.workers`` at a time."""
    todo = [uid for uid, plan in plans.items() if plan.kind == "copy"]
    if src.is_local:
        return _put_results(src, dst, {uid: src.local_path(f"{RESULTS}/{uid}") for uid in todo}, progress)
    with ThreadPoolExecutor(Store.workers) as pool, tqdm(
        total=len(todo), unit="result", disable=not progress or not todo, file=sys.stderr
    ) as bar:
        copied = {}
        for uid, outcome in zip(todo, pool.map(lambda uid: _copy_remote_result(src, dst, uid, plans[uid].listing), todo)):
            copied[uid] = outcome
            bar.update()
    return copied


def _copy_run_records(src: Store, dst: Store, contents: Contents, only: Collection[str] | None) -> list[str]:
    """Create the run records (and logs) that ``dst`` lacks, of the runs whose targets are all in ``only`` (if
    given), with the step infos of their targets (Tango looks them up); returns their names."""
    there = set(dst.list(f"{RUNS}/")) | set(dst.list(f"{STEPS}/"))
    copied = []
    for name, record in sorted(contents.runs.items()):
        targets = set(record["steps"].values())
        key = f"{RUNS}/{name}.json"
        if (only is not None and not targets <= set(only)) or key in there:
            continue
        infos = {_info_key(uid): _step_info(src, uid) for uid in sorted(targets) if _info_key(uid) not in there}
        for info_key, raw in infos.items():
            if raw is not None:
                dst.create(info_key, raw)
        if dst.create(key, src.read_bytes(key)):
            copied.append(name)
            if src.exists(f"{RUNS}/{name}.log"):
                dst.write_bytes(f"{RUNS}/{name}.log", src.read_bytes(f"{RUNS}/{name}.log"))
    return copied


def sync(src_url: str, dst_url: str, only: Collection[str] | None = None, progress: bool = True) -> SyncReport:
    """Copy the results of ``src_url`` that ``dst_url`` lacks (only the fingerprints in ``only``, if given),
    each verified against its listing on the way and committed by copying its listing after its other files;
    then the step infos of the copied results and the run records ``dst_url`` lacks. A Tango LocalWorkspace
    directory as ``src_url`` is imported (see :func:`import_tango_local`)."""
    src = open_store(src_url)
    if Store(dst_url).url == src.url:
        raise CommandError(f"{src_url} and {dst_url} are the same workspace")
    if is_tango_local_workspace(src):
        return import_tango_local(src.local_path(), dst_url, only, progress)
    if not src.exists(MARKER):
        raise CommandError(f"{src.url}: not a workspace (no {MARKER})")
    dst = _open_destination(dst_url)
    report = SyncReport()
    start = time.monotonic()
    contents = read_contents(src)
    there, leased, marks = result_files(dst), leased_ids(dst), verified_marks()
    todo = [uid for uid in contents.complete() if only is None or uid in only]
    with ThreadPoolExecutor(Store.workers) as pool:
        plans = dict(zip(todo, pool.map(
            lambda uid: _plan_result(src, dst, uid, there.get(uid, set()), leased, marks), todo
        )))
    plans.update(_copy_results(src, dst, plans, progress))
    for unique_id, outcome in plans.items():
        if outcome.kind == "copied":
            report.copied.append(unique_id)
            report.size += outcome.size
        elif outcome.kind == "already":
            report.already.append(unique_id)
        elif outcome.kind == "refused":
            report.refused += outcome.messages
        else:
            report.warnings += outcome.messages
    report.warnings += contents.problems
    report.runs = _copy_run_records(src, dst, contents, only)
    report.seconds = time.monotonic() - start
    return report


# ---------------------------------------------------------------------------------------------- Tango import


def _tango_step_names(directory: Path) -> tuple[dict[str, set[str]], dict[str, dict[str, str]]]:
    """From a Tango LocalWorkspace's ``runs/``: unique id -> step names (from the runs' symlinks into
    ``cache/`` and their JSON ``stepinfo.json``), and run name -> {target step name: unique id}."""
    cache = (directory / TANGO_CACHE).resolve()
    names: dict[str, set[str]] = {}
    targets: dict[str, dict[str, str]] = {}
    runs = directory / TANGO_RUNS
    for run in sorted(runs.iterdir()) if runs.is_dir() else []:
        if not run.is_dir() or run.is_symlink():
            continue
        targets[run.name] = {}
        for entry in sorted(run.iterdir()):
            if entry.is_symlink():
                target = (run / os.readlink(entry)).resolve()
                if target.parent == cache:
                    names.setdefault(target.name, set()).add(entry.name)
                    targets[run.name][entry.name] = target.name
        try:
            recorded = json.loads((run / TANGO_RUN_STEPS).read_bytes())
        except (OSError, ValueError):
            recorded = {}
        for name, unique_id in recorded.items() if isinstance(recorded, dict) else []:
            if isinstance(unique_id, str):
                names.setdefault(unique_id, set()).add(name)
    return names, targets


def _is_artifact_result(entry: Path) -> bool:
    """A complete Tango cache entry written by ArtifactFormat (judged from JSON and file names only)."""
    try:
        metadata = json.loads((entry / TANGO_METADATA).read_bytes())
        format_type = str(metadata["format"]["type"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        format_type.replace("::", ".").rsplit(".", 1)[-1] == ARTIFACT_FORMAT
        and (entry / MANIFEST).is_file()
        and (entry / DATA).is_dir()
    )


def _manifest_problems(entry: Path, manifest_raw: bytes, data_files: dict[str, Any], unique_id: str) -> list[str]:
    where = entry / MANIFEST
    try:
        manifest = json.loads(manifest_raw)
    except ValueError as exc:
        return [f"{where}: not JSON ({exc})"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return [f"{where}: not an artifact manifest (expected an object with 'files')"]
    if manifest.get("fingerprint", unique_id) != unique_id:
        return [f"{where}: names fingerprint {manifest.get('fingerprint')!r}, expected {unique_id!r}"]
    listed = manifest["files"]
    problems = [
        f"{entry / DATA / name}: listed in {MANIFEST} but missing" for name in sorted(set(listed) - set(data_files))
    ]
    problems += [f"{entry / DATA / name}: not listed in {MANIFEST}" for name in sorted(set(data_files) - set(listed))]
    problems += [
        f"{entry / DATA / name}: sha256 does not match {MANIFEST} (changed)"
        for name in sorted(set(listed) & set(data_files))
        if data_files[name]["sha256"] != listed[name]
    ]
    return problems


def _imported_step_info(unique_id: str, names: set[str], inputs: Any, mtime: float, src: Path) -> dict[str, Any]:
    parts = unique_id.split("-")
    when = datetime.fromtimestamp(mtime, timezone.utc).strftime(DATE_FORMAT)
    dependencies = sorted(v for v in inputs.values() if isinstance(v, str)) if isinstance(inputs, dict) else []
    return {
        "unique_id": unique_id,
        "step_name": sorted(names)[0] if names else None,
        "step_class_name": parts[0],
        "version": parts[1] if len(parts) > 2 else None,
        "dependencies": dependencies,
        "cacheable": True,
        "start_time": when,
        "end_time": when,
        "error": None,
        "result_location": None,
        "config": None,
        "metadata": {"imported_from": f"{src} (Tango LocalWorkspace)"},
    }


def import_tango_local(
    directory: Path, dst_url: str, only: Collection[str] | None = None, progress: bool = True
) -> SyncReport:
    """Write the ArtifactFormat results of a Tango LocalWorkspace directory into the workspace ``dst_url``.

    Nothing there is unpickled: ``stepinfo.sqlite`` and results in other formats (Tango's dill) are never
    opened. Each ``cache/<unique id>/`` with a ``cache-metadata.json`` naming ArtifactFormat, a
    ``manifest.json`` and ``data/`` has its data checked against the manifest's sha256, then becomes
    ``results/<unique id>/`` (data, manifest, and a fresh listing written last) with a minimal step info;
    each old run becomes a run record naming its imported targets (when the destination has no run of
    that name). Other cache entries are skipped and counted.
    """
    directory = Path(directory).absolute()
    dst = _open_destination(dst_url)
    report = SyncReport(tango=True)
    start = time.monotonic()
    names, run_targets = _tango_step_names(directory)
    there, leased = result_files(dst), leased_ids(dst)
    cache = directory / TANGO_CACHE
    present: set[str] = set()
    for entry in sorted(cache.iterdir()) if cache.is_dir() else []:
        unique_id = entry.name
        if only is not None and unique_id not in only:
            continue
        if not entry.is_dir() or not _is_artifact_result(entry):
            report.skipped.append(unique_id)
            continue
        prefix = f"{RESULTS}/{unique_id}"
        manifest_raw = (entry / MANIFEST).read_bytes()
        data_files = {
            name: {"sha256": sha256_file(path), "size": path.stat().st_size} for name, path in listed_files(entry / DATA).items()
        }
        problems = _manifest_problems(entry, manifest_raw, data_files, unique_id)
        if problems:
            report.refused += problems
            continue
        step_class = unique_id.split("-", 1)[0]
        listing = {
            "fingerprint": unique_id,
            "step_class": step_class,
            "files": {
                **{f"{DATA}/{name}": entry_ for name, entry_ in data_files.items()},
                MANIFEST: {"sha256": hashlib.sha256(manifest_raw).hexdigest(), "size": len(manifest_raw)},
            },
        }
        found = _in_destination(dst, unique_id, there.get(unique_id, set()), listing, leased)
        if found is not None:
            if found.kind == "already":
                report.already.append(unique_id)
            else:
                report.warnings += found.messages
            present.add(unique_id)
            continue
        report.size += dst.put_tree(entry / DATA, f"{prefix}/{DATA}", progress=progress)
        dst.write_bytes(f"{prefix}/{MANIFEST}", manifest_raw)
        dst.write_bytes(f"{prefix}/{LISTING}", json.dumps(listing, indent=2, sort_keys=True).encode())
        report.size += len(manifest_raw)
        inputs = json.loads(manifest_raw).get("inputs")
        info = _imported_step_info(unique_id, names.get(unique_id, set()), inputs, entry.stat().st_mtime, directory)
        dst.write_bytes(_info_key(unique_id), _json_bytes(info))
        report.copied.append(unique_id)
        present.add(unique_id)
    for name, targets in sorted(run_targets.items()):
        steps = {step: uid for step, uid in targets.items() if uid in present and dst.exists(_info_key(uid))}
        if not steps:
            continue
        when = datetime.fromtimestamp((directory / TANGO_RUNS / name).stat().st_mtime, timezone.utc)
        record = {
            "name": name,
            "start_date": when.strftime(DATE_FORMAT),
            "host": None,
            "steps": steps,
            "computed": {},  # a Tango LocalWorkspace does not say which run computed a step
            "imported_from": f"{directory} (Tango LocalWorkspace)",
        }
        if dst.create(f"{RUNS}/{name}.json", _json_bytes(record)):
            report.runs.append(name)
    report.seconds = time.monotonic() - start
    return report


# ---------------------------------------------------------------------------------------------- gc


@dataclass
class Garbage:
    results: list[dict[str, Any]] = field(default_factory=list)  # fingerprint, step names, size
    held: list[str] = field(default_factory=list)  # unreferenced, but a run holds the step's lease: kept
    deleted: bool = False

    @property
    def size(self) -> int:
        return sum(row["size"] or 0 for row in self.results)


def collect_garbage(store: Store, keep: Collection[str] = (), delete: bool = False) -> Garbage:
    """The results no run record names (as target or as computed) and not in ``keep``; with ``delete``,
    removes each (listing first, then its directory, its step info and this machine's cached copy).
    Results whose step a run holds the lease of are kept (the run may not have recorded them yet); so are
    result directories without a listing (being written). Refuses when a run record is unreadable."""
    contents = read_contents(store)
    bad_runs = [problem for problem in contents.problems if f"/{RUNS}/" in problem]
    if bad_runs:
        raise CommandError(f"{bad_runs[0]}: cannot tell which results that run refers to; fix or remove the record")
    referenced = contents.referenced() | set(keep)
    garbage = Garbage(deleted=delete)
    for unique_id in contents.complete():
        if unique_id in referenced:
            continue
        if _lease_held(store, unique_id):
            garbage.held.append(unique_id)
            continue
        try:
            listing = _read_listing(store, unique_id)
            size = sum(entry.get("size", 0) for entry in listing["files"].values())
        except (IntegrityError, FileNotFoundError):
            size = None
        garbage.results.append({"fingerprint": unique_id, "step_names": contents.step_names(unique_id), "size": size})
    if delete:
        local = local_cache_root()
        for row in garbage.results:
            unique_id = row["fingerprint"]
            store.delete(_listing_key(unique_id))  # readers see the result gone, never half of it
            store.delete(f"{RESULTS}/{unique_id}", recursive=True)
            store.delete(_info_key(unique_id))
            shutil.rmtree(local / RESULTS / unique_id, ignore_errors=True)
            (local / VERIFIED / f"{unique_id}.json").unlink(missing_ok=True)
    return garbage
