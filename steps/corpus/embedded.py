"""Embedded sources: an offline corpus made from what any machine with Python has.

Kinds: ``python-docs`` (the docstrings of each standard-library module),
``python-code`` (the standard-library source files), ``package-metadata`` (the long description
of each installed distribution) and ``system-docs`` (plain-text files under /usr/share/doc and the
licenses in /usr/share/common-licenses; possibly none). Each kind lists its candidates in a sorted
order that does not depend on where things are installed; a source reads the first
``max_documents`` of them.
"""
from __future__ import annotations

import ast
import email
import gzip
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import sys
import sysconfig
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from olmo_model.config import Config, require

ADDED = "olmo-tango"  # the Dolma ``added`` field of documents made here (fixed, so outputs are reproducible)
EmbeddedKind = Literal["python-docs", "python-code", "package-metadata", "system-docs"]


@dataclass(frozen=True)
class EmbeddedSource(Config):
    """Documents made from the Python standard library, installed packages or /usr/share/doc.

    The candidates of a kind are listed in a sorted, machine-independent order; the source reads
    the first ``max_documents`` of them (all when ``None``). Empty or undecodable candidates are
    skipped (and counted), so a source may yield fewer documents than that.
    """

    name: str
    type: Literal["embedded"]
    kind: EmbeddedKind
    max_documents: int | None = None
    max_chars_per_document: int | None = None

    def check(self) -> None:
        for key in ("max_documents", "max_chars_per_document"):
            value = getattr(self, key)
            require(value is None or value > 0, f"source {self.name!r}.{key}", "a positive integer or null", value)


@dataclass(frozen=True)
class Candidate:
    """One file an embedded source may turn into a document."""

    key: str  # stable, path-independent: the document id is f"{kind}/{key}"
    url: str  # metadata url, used by URL dedup
    read: Callable[[], bytes]


STDLIB_EXCLUDED_PACKAGES = frozenset(
    {"test", "tests", "idlelib", "turtledemo", "__phello__", "pydoc_data", "encodings", "ensurepip"}
)
SYSTEM_DOC_ROOTS = (("doc", Path("/usr/share/doc")), ("common-licenses", Path("/usr/share/common-licenses")))
SYSTEM_DOC_NAME = re.compile(r"^(readme.*|changelog.*|copyright|.*\.txt)$", re.IGNORECASE)
NOT_PLAIN_TEXT = (".html", ".htm", ".pdf", ".png", ".svg", ".gif", ".jpg", ".jpeg", ".xml", ".json")


def _stdlib_modules() -> list[tuple[str, Path]]:
    """``(module name, file)`` of the pure-Python standard library, sorted by module name.

    Folders that are not importable names (site-packages, lib-dynload, config-*) and the test,
    IDE, demo and generated-table packages are skipped.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    modules = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d.isidentifier() and d not in STDLIB_EXCLUDED_PACKAGES]
        package = Path(folder).relative_to(root).parts
        for file in files:
            stem = file[:-3]
            if file.endswith(".py") and stem.isidentifier():
                parts = package if stem == "__init__" else (*package, stem)
                if parts:
                    modules.append((".".join(parts), Path(folder) / file))
    return sorted(modules)


def _python_candidates(kind: str) -> list[Candidate]:
    scheme = "python" if kind == "python-docs" else "python-source"
    return [Candidate(module, f"{scheme}://{module}", path.read_bytes) for module, path in _stdlib_modules()]


def _normalized_distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# This project's own description is its README, whose numbers come from the corpus: leave it out.
EXCLUDED_DISTRIBUTIONS = {"olmo-tango"}


def _installed_paths() -> list[str]:
    """``sys.path`` without folders inside a package: a package's vendored copies, not installed distributions
    (``import ray`` puts ray/thirdparty_files first, so a Ray worker would also see its colorama)."""
    return [entry for entry in sys.path if not (Path(entry or ".").resolve().parent / "__init__.py").exists()]


def _package_candidates() -> list[Candidate]:
    """One candidate per installed distribution (the first on sys.path wins), sorted by name."""
    first: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions(path=_installed_paths()):
        name = dist.metadata["Name"] if dist.metadata else None
        if name and _normalized_distribution_name(name) not in EXCLUDED_DISTRIBUTIONS:
            first.setdefault(_normalized_distribution_name(name), dist)

    def reader(dist: importlib.metadata.Distribution) -> Callable[[], bytes]:
        return lambda: (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").encode("utf-8")

    return [Candidate(name, f"pypi://{name}", reader(first[name])) for name in sorted(first)]


def _system_doc_candidates() -> list[Candidate]:
    """Plain-text docs under /usr/share/doc and the licenses in /usr/share/common-licenses.

    Symbolic links are not followed, so each file is read once, under its real name.
    """
    candidates = []
    for label, root in SYSTEM_DOC_ROOTS:
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            for file in files:
                path = Path(folder) / file
                plain_name = file[:-3] if file.endswith(".gz") else file
                wanted = label == "common-licenses" or (
                    SYSTEM_DOC_NAME.match(plain_name) and not plain_name.lower().endswith(NOT_PLAIN_TEXT)
                )
                if wanted and not path.is_symlink() and path.is_file():
                    key = f"{label}/{path.relative_to(root).as_posix()}"
                    candidates.append(Candidate(key, path.as_uri(), _file_reader(path)))
    return sorted(candidates, key=lambda c: c.key)


def _file_reader(path: Path) -> Callable[[], bytes]:
    if path.suffix == ".gz":
        return lambda: gzip.decompress(path.read_bytes())
    return path.read_bytes


def _read_candidate(candidate: Candidate) -> bytes | None:
    """The candidate's bytes, or None when it cannot be read (a broken file is skipped, not fatal)."""
    try:
        return candidate.read()
    except (OSError, EOFError, zlib.error):
        return None


def _reflow(text: str) -> str:
    """Join the wrapped lines of each paragraph into one line; paragraphs become lines."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _docstrings(node: ast.AST) -> Iterator[str]:
    """The docstring of ``node``, then those of its public classes and functions (and their methods)."""
    docstring = ast.get_docstring(node, clean=True)
    if docstring:
        yield docstring
    for child in getattr(node, "body", ()):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not child.name.startswith("_"):
            if isinstance(child, ast.ClassDef):
                yield from _docstrings(child)
            elif docstring := ast.get_docstring(child, clean=True):
                yield docstring


def _python_docs_text(source: str) -> str | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return "\n".join(_reflow(d) for d in _docstrings(tree))


def _package_description(metadata_text: str) -> str:
    """The long description: the body of METADATA after its headers (or its Description header)."""
    message = email.message_from_string(metadata_text)
    body = message.get_payload()
    if isinstance(body, str) and body.strip():
        return body.strip()
    return inspect.cleandoc(message.get("Description", "") or "")


# kind -> (candidate lister, text maker); the text maker returns None for unparseable content. Prose
# is reflowed as web text comes out of extraction: a paragraph per line, no blank separator lines
# (Gopher's duplicate-line rule would count those).
EMBEDDED_KINDS: dict[str, tuple[Callable[[], list[Candidate]], Callable[[str], str | None]]] = {
    "python-docs": (lambda: _python_candidates("python-docs"), _python_docs_text),
    "python-code": (lambda: _python_candidates("python-code"), lambda source: source),
    "package-metadata": (_package_candidates, lambda metadata: _reflow(_package_description(metadata))),
    "system-docs": (_system_doc_candidates, _reflow),
}


def _selected_candidates(spec: EmbeddedSource) -> list[Candidate]:
    list_candidates, _ = EMBEDDED_KINDS[spec.kind]
    return list_candidates()[: spec.max_documents]


def embedded_fingerprint(spec: EmbeddedSource) -> str:
    selection = ["embedded", spec.kind, spec.max_documents, spec.max_chars_per_document]
    digest = hashlib.sha256(json.dumps(selection).encode())
    for candidate in _selected_candidates(spec):
        content = _read_candidate(candidate)
        digest.update(candidate.key.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(content).digest() if content is not None else b"unreadable")
    return digest.hexdigest()


def embedded_documents(spec: EmbeddedSource, skipped: Counter) -> Iterator[dict[str, Any]]:
    _, make_text = EMBEDDED_KINDS[spec.kind]
    for candidate in _selected_candidates(spec):
        content = _read_candidate(candidate)
        if content is None:
            skipped["unreadable"] += 1
            continue
        try:
            raw = content.decode("utf-8")
        except UnicodeDecodeError:
            skipped["not_utf8"] += 1
            continue
        text = make_text(raw)
        if text is None:
            skipped["unparseable"] += 1
            continue
        text = text[: spec.max_chars_per_document]
        if not text.strip():
            skipped["empty"] += 1
            continue
        yield {
            "id": f"{spec.kind}/{candidate.key}",
            "text": text,
            "source": spec.name,
            "added": ADDED,
            "metadata": {"url": candidate.url},
        }
