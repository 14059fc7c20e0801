"""Step results: directories written by the step's own ``FORMAT``, listed, verified, cached locally.

``results/<unique id>/`` holds what ``step.FORMAT.write`` wrote, plus ``result.json``: the fingerprint, the
step class and the sha256 and size of every file. The listing is written last (locally the whole
directory is renamed into place), so a result exists exactly when its listing does.

Reading never trusts the workspace to say how to read: the format is the step class's own ``FORMAT``,
and every file is checked against the listing before the format sees it. A machine verifies a result
once and leaves a mark in its local cache (file sizes, modification times and inodes), so later reads
of an unchanged result cost a few ``stat`` calls. Results in an object store are downloaded once into
the local cache (``<cache>/results/<unique id>``), where memmaps and safetensors are read from disk.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from tango.format import Format
from tango.step import Step
from tango.step_cache import StepCache
from tango.step_info import StepInfo

from .store import Store

RESULTS = "results"
LISTING = "result.json"


class IntegrityError(RuntimeError):
    """A workspace file differs from what its listing says: changed, missing, added or not JSON."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}


def make_listing(directory: Path, unique_id: str, step_class: str) -> dict[str, Any]:
    """The listing of a result directory about to be published."""
    files = {
        name: {"sha256": sha256_file(path), "size": path.stat().st_size}
        for name, path in listed_files(directory).items()
        if name != LISTING
    }
    return {"fingerprint": unique_id, "step_class": step_class, "files": files}


def parse_listing(raw: bytes, where: str, unique_id: str) -> dict[str, Any]:
    """A listing read from the workspace, checked to be JSON naming ``unique_id``."""
    try:
        listing = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where}: not a result listing (not JSON: {exc})") from None
    if not isinstance(listing, dict) or not isinstance(listing.get("files"), dict):
        raise IntegrityError(f"{where}: not a result listing (expected an object with 'files')")
    if listing.get("fingerprint") != unique_id:
        raise IntegrityError(f"{where}: lists fingerprint {listing.get('fingerprint')!r}, expected {unique_id!r}")
    return listing


def directory_problems(directory: Path, listing: dict[str, Any], where: str) -> list[str]:
    """Every difference between ``directory`` and its listing, one message per file (empty when they match)."""
    present = {name: path for name, path in listed_files(directory).items() if name != LISTING}
    listed = listing["files"]
    problems = [f"{where}/{name}: listed in {LISTING} but missing" for name in sorted(set(listed) - set(present))]
    problems += [
        f"{where}/{name}: not listed in {LISTING} (added by another writer?)" for name in sorted(set(present) - set(listed))
    ]
    for name, entry in sorted(listed.items()):
        path = present.get(name)
        if path is not None and (path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256")):
            problems.append(f"{where}/{name}: sha256 does not match {LISTING} (changed by another writer?)")
    return problems



VERIFIED = "verified"  # the directory of the marks under a machine's cache root


class VerifiedMarks:
    """This machine's record of result directories it has verified, and in what state their files were."""

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def _state(directory: Path) -> dict[str, list[int]]:
        return {name: [p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino] for name, p in listed_files(directory).items()}

    def _mark_file(self, unique_id: str) -> Path:
        return self.root / f"{unique_id}.json"

    def holds(self, unique_id: str, directory: Path, listing_sha256: str) -> bool:
        try:
            mark = json.loads(self._mark_file(unique_id).read_text())
        except (OSError, ValueError):
            return False
        expected = {"directory": str(directory), "listing": listing_sha256, "files": self._state(directory)}
        return mark == expected

    def problems(
        self, unique_id: str, directory: Path, raw_listing: bytes, listing: dict[str, Any], where: str
    ) -> list[str]:
        """Every difference between ``directory`` and its ``listing`` (``directory_problems``; ``raw_listing``: its
        bytes), unless this machine verified the directory as it is now; a directory without any is marked."""
        digest = hashlib.sha256(raw_listing).hexdigest()
        if self.holds(unique_id, directory, digest):
            return []
        problems = directory_problems(directory, listing, where)
        if not problems:
            self.mark(unique_id, directory, digest)
        return problems

    def mark(self, unique_id: str, directory: Path, listing_sha256: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        mark = {"directory": str(directory), "listing": listing_sha256, "files": self._state(directory)}
        staging = self._mark_file(unique_id).with_suffix(f".tmp-{uuid.uuid4().hex}")
        staging.write_text(json.dumps(mark))
        staging.replace(self._mark_file(unique_id))


# Formats whose ``read`` only parses data (JSON, text, directories of files); Tango's default ``DillFormat``
# and anything else that unpickles is refused.
SAFE_FORMATS = ("ArtifactFormat", "JsonFormat", "TextFormat")


def check_safe_format(format: Format, step_class: str) -> None:
    if type(format).__name__ not in SAFE_FORMATS:
        raise IntegrityError(
            f"step class {step_class}: its FORMAT {type(format).__name__} may unpickle; this workspace stores "
            f"and reads only {', '.join(SAFE_FORMATS)}"
        )


def step_format(step: Step | StepInfo) -> Format:
    """The format of a step's result: its class's own ``FORMAT``, never one the workspace names."""
    if isinstance(step, Step):
        format, step_class = step.FORMAT, step.class_name
    else:
        step_class = step.step_class_name
        if not step.unique_id.startswith(f"{step_class}-"):
            raise IntegrityError(f"step info of {step.unique_id} names another step class, {step_class!r}")
        classes = [Step.by_name(name) for name in Step.list_available()]
        found = [cls for cls in classes if isinstance(cls, type) and cls.__name__ == step_class]
        if not found:
            raise KeyError(f"step class {step_class!r} of {step.unique_id} is not registered (import its package)")
        format = found[0].FORMAT
    check_safe_format(format, step_class)
    return format


class ResultCache(StepCache):
    """Tango's ``StepCache`` over ``results/`` of a store, with a verified local copy per machine."""

    def __init__(self, store: Store, local_root: Path):
        self.store = store
        self.local_root = local_root
        self.marks = VerifiedMarks(local_root / VERIFIED)
        self._read: dict[str, Any] = {}  # results read by this process

    def _listing_key(self, unique_id: str) -> str:
        return f"{RESULTS}/{unique_id}/{LISTING}"

    def url(self, unique_id: str) -> str:
        return f"{self.store.url}/{RESULTS}/{unique_id}"

    def exists(self, unique_id: str) -> bool:
        return unique_id in self._read or self.store.exists(self._listing_key(unique_id))

    def __contains__(self, step: Any) -> bool:
        return isinstance(step, (Step, StepInfo)) and self.exists(step.unique_id)

    def __getitem__(self, step: Step | StepInfo) -> Any:
        unique_id = step.unique_id
        if unique_id not in self._read:
            format = step_format(step)
            directory = self.verified_directory(unique_id, step.class_name if isinstance(step, Step) else step.step_class_name)
            self._read[unique_id] = format.read(directory)
        return self._read[unique_id]

    def unique_ids(self) -> list[str]:
        """The fingerprints of the results in the store."""
        return sorted(key.split("/")[1] for key in self.store.list(f"{RESULTS}/") if key.endswith(f"/{LISTING}"))

    def verified_directory(self, unique_id: str, step_class: str | None = None) -> Path:
        """A local directory holding the result, every file checked against the listing (KeyError if absent);
        with ``step_class``, the listing must name that class."""
        try:
            raw = self.store.read_bytes(self._listing_key(unique_id))
        except FileNotFoundError:
            raise KeyError(unique_id) from None
        where = self.url(unique_id)
        listing = parse_listing(raw, f"{where}/{LISTING}", unique_id)
        if step_class is not None and listing.get("step_class") != step_class:
            raise IntegrityError(f"{where}/{LISTING}: written by step class {listing.get('step_class')!r}, not {step_class!r}")
        digest = hashlib.sha256(raw).hexdigest()
        if self.store.is_local:
            directory = self.store.local_path(f"{RESULTS}/{unique_id}")
        else:
            directory = self.local_root / RESULTS / unique_id
            if not self.marks.holds(unique_id, directory, digest):
                self._download(unique_id, directory)
        problems = self.marks.problems(unique_id, directory, raw, listing, where)
        if problems:
            raise IntegrityError(problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)")
        return directory

    def _download(self, unique_id: str, directory: Path) -> None:
        staging = directory.with_name(f".{unique_id}.tmp-{uuid.uuid4().hex}")
        try:
            self.store.get_tree(f"{RESULTS}/{unique_id}", staging, progress=True)
            shutil.rmtree(directory, ignore_errors=True)
            staging.rename(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def __setitem__(self, step: Step, value: Any) -> None:
        unique_id = step.unique_id
        parent = self.store.local_path(RESULTS) if self.store.is_local else self.local_root / RESULTS
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{unique_id}.tmp-{uuid.uuid4().hex}"
        try:
            staging.mkdir()
            step.FORMAT.write(value, staging)
            listing = json.dumps(make_listing(staging, unique_id, step.class_name), indent=2, sort_keys=True).encode()
            (staging / LISTING).write_bytes(listing)
            if not self.store.is_local:
                self.store.put_tree(staging, f"{RESULTS}/{unique_id}", last=LISTING, progress=True)
            directory = parent / unique_id
            shutil.rmtree(directory, ignore_errors=True)
            staging.rename(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.marks.mark(unique_id, directory, hashlib.sha256(listing).hexdigest())
        self._read.pop(unique_id, None)

    def __delitem__(self, step: Step | StepInfo) -> None:
        unique_id = step.unique_id
        self._read.pop(unique_id, None)
        self.store.delete(f"{RESULTS}/{unique_id}", recursive=True)
        shutil.rmtree(self.local_root / RESULTS / unique_id, ignore_errors=True)

    def __len__(self) -> int:
        return len(self.unique_ids())
