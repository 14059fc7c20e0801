"""Nothing in the project's source can unpickle: a scan of ``steps/``, ``integrations/`` and ``olmo_model/``
for calls that load pickles, each failure named file:line.

Flagged (names resolved through imports, so ``import pickle as p; p.loads`` counts too):
- ``pickle``/``_pickle``/``cPickle``/``dill``/``cloudpickle``/``joblib`` ``load``/``loads``/``Unpickler``,
  ``pandas.read_pickle``, ``shelve.open``;
- ``torch.load(...)`` without ``weights_only=True``; ``numpy.load(..., allow_pickle=True)``;
- ``FileSystemReader`` named anywhere (DCP's default reader unpickles its ``.metadata``);
- ``torch.distributed.checkpoint.load`` / ``load_state_dict`` without
  ``storage_reader=HuggingFaceStorageReader(...)`` (the default reader is ``FileSystemReader``).

Nothing is exempt. Out of scope, because no file is read: the pickling ``torch.distributed`` does between a
job's own ranks (``all_gather_object``) and the launcher's hand-over of the job to the workers it spawns.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("steps", "integrations", "olmo_model")

PICKLE_MODULES = ("pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib")
UNPICKLERS = {f"{m}.{name}" for m in PICKLE_MODULES for name in ("load", "loads", "Unpickler")} | {
    "pandas.read_pickle",
    "shelve.open",
}
DCP_LOADS = {
    "torch.distributed.checkpoint.load",
    "torch.distributed.checkpoint.load_state_dict",
    "torch.distributed.checkpoint.state_dict_loader.load",
    "torch.distributed.checkpoint.state_dict_loader.load_state_dict",
}
PICKLE_FREE_READERS = {"HuggingFaceStorageReader"}


def imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the module's imports."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """``a.b.c`` for a name or attribute chain, its first part resolved through the imports."""
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, names)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def has_pickle_free_reader(call: ast.Call, names: dict[str, str]) -> bool:
    for keyword in call.keywords:
        if keyword.arg == "storage_reader" and isinstance(keyword.value, ast.Call):
            reader = dotted(keyword.value.func, names) or ""
            return reader.rsplit(".", 1)[-1] in PICKLE_FREE_READERS
    return False


def call_problem(call: ast.Call, names: dict[str, str]) -> str | None:
    target = dotted(call.func, names)
    if target in UNPICKLERS:
        return f"{target}(...) unpickles"
    if target == "torch.load" and not keyword_is(call, "weights_only", True):
        return "torch.load(...) without weights_only=True unpickles"
    if target == "numpy.load" and keyword_is(call, "allow_pickle", True):
        return "numpy.load(..., allow_pickle=True) unpickles"
    if target in DCP_LOADS and not has_pickle_free_reader(call, names):
        return f"{target}(...) without storage_reader={'/'.join(sorted(PICKLE_FREE_READERS))}(...) unpickles .metadata"
    return None


def problems(source: str, filename: str) -> list[str]:
    """``file:line: what`` for every way ``source`` could unpickle."""
    tree = ast.parse(source, filename=filename)
    names = imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (problem := call_problem(node, names)):
            found.append(f"{filename}:{node.lineno}: {problem}")
        elif isinstance(node, (ast.Name, ast.Attribute)) and (dotted(node, names) or "").endswith("FileSystemReader"):
            found.append(f"{filename}:{node.lineno}: FileSystemReader unpickles .metadata")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "FileSystemReader" for a in node.names):
            found.append(f"{filename}:{node.lineno}: imports FileSystemReader, which unpickles .metadata")
    return sorted(set(found))


def source_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))


def test_no_source_file_can_unpickle():
    files = source_files()
    assert len(files) > 20  # the scan sees the project
    found = [p for path in files for p in problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source", [
    "import pickle\npickle.load(f)",
    "import pickle as p\np.loads(b)",
    "from pickle import loads\nloads(b)",
    "import dill\ndill.load(f)",
    "import pickle\npickle.Unpickler(f).load()",
    "import torch\ntorch.load(path)",
    "import torch\ntorch.load(path, weights_only=False)",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "import torch.distributed.checkpoint as dcp\ndcp.load(state, checkpoint_id=path)",
    "from torch.distributed import checkpoint\ncheckpoint.load(state, storage_reader=checkpoint.FileSystemReader(p))",
    "from torch.distributed.checkpoint import FileSystemReader\nreader = FileSystemReader(path)",
    "import torch.distributed.checkpoint as dcp\nreader = dcp.FileSystemReader",
    "import torch.distributed.checkpoint as dcp\ndcp.load_state_dict(state, storage_reader=make_reader())",
])
def test_the_scan_catches_each_way_to_unpickle(source):
    assert problems(source, "example.py")


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path, weights_only=True)",
    "import torch.distributed.checkpoint as dcp\ndcp.load(state, storage_reader=dcp.HuggingFaceStorageReader(p))",
    "import numpy as np\nnp.load(path)",
    "model.load_state_dict(weights)",
    '"""Never pickle.load anything; dcp.load( needs a reader."""',
])
def test_the_scan_passes_pickle_free_loading(source):
    assert problems(source, "example.py") == []
