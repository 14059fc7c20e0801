"""The layers of DESIGN.md, checked from the source (no module is imported):

    olmo_model (the network)
      <- stage libraries: every module of steps/<stage>/ that is not a Tango layer module (no Tango)
      <- the Tango layer: steps/<stage>/steps.py and steps/common/step.py, their base
      <- the command layer: steps/cli.py and steps/commands/ (the modules only it uses)

Rules (an arrow is "imports", at any depth of the file, function-level imports included):
- library: a library module imports no Tango layer module, no command layer module, and not ``tango``;
- tango: a Tango layer module imports no command layer module;
- cycle: the stage packages (steps.common, steps.corpus, steps.data, ...), each the union of its modules,
  import each other without a cycle;
- outside: olmo_model and integrations import nothing from steps, and olmo_model not ``tango``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("steps", "olmo_model", "integrations")
COMMAND_LAYER = ("steps.cli", "steps.commands")
TANGO_LAYER_BASES = ("steps.common.step",)

# module -> [(imported module, line)]
Graph = Mapping[str, Iterable[tuple[str, int]]]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """Every module ``source`` imports, relative imports resolved; ``from a import b`` names the module a.b
    when a.b is one of ``known``, else a."""
    found: list[tuple[str, int]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in known else base, node.lineno))
    return list(dict.fromkeys(found))


def project_graph(root: Path = ROOT) -> dict[str, list[tuple[str, int]]]:
    files = {module_name(path, root): path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}
    known = set(files)
    return {
        module: imports_of(path.read_text(), module, path.name == "__init__.py", known)
        for module, path in files.items()
    }


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer(module: str) -> str | None:
    """'command', 'tango', 'library' for a module of steps; None outside it."""
    if not within(module, "steps"):
        return None
    if any(within(module, prefix) for prefix in COMMAND_LAYER):
        return "command"
    if module in TANGO_LAYER_BASES or (module.count(".") == 2 and module.endswith(".steps")):
        return "tango"
    return "library"


def stage_package(module: str) -> str | None:
    """steps.<stage> for a module of a stage package; None for steps/__init__ and the command layer."""
    parts = module.split(".")
    if parts[0] != "steps" or len(parts) < 2 or layer(module) == "command":
        return None
    return ".".join(parts[:2])


def first_lines(imported: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Each imported module once, at the first line that imports it."""
    first: dict[str, int] = {}
    for target, line in imported:
        first[target] = min(line, first.get(target, line))
    return sorted(first.items(), key=lambda item: item[1])


def layer_violations(graph: Graph) -> list[str]:
    problems = []
    for module, imported in graph.items():
        mine = layer(module)
        for target, line in first_lines(imported):
            theirs = layer(target)
            is_tango = within(target, "tango")
            if mine == "library" and theirs in ("tango", "command"):
                problems.append(
                    f"{module} (line {line}) imports {target}: a library module must not import the {theirs} layer"
                    " [rule: library]"
                )
            elif mine == "library" and is_tango:
                problems.append(
                    f"{module} (line {line}) imports {target}: a library module must not import tango [rule: library]"
                )
            elif mine == "tango" and theirs == "command":
                problems.append(
                    f"{module} (line {line}) imports {target}: a Tango layer module must not import the command layer"
                    " [rule: tango]"
                )
            elif mine is None and theirs is not None:
                problems.append(
                    f"{module} (line {line}) imports {target}: {module.split('.')[0]} must not import steps"
                    " [rule: outside]"
                )
            elif within(module, "olmo_model") and is_tango:
                problems.append(
                    f"{module} (line {line}) imports {target}: olmo_model must not import tango [rule: outside]"
                )
    return problems


def package_edges(graph: Graph) -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the module imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, imported in graph.items():
        source = stage_package(module)
        for target, line in first_lines(imported):
            destination = stage_package(target)
            if source and destination and source != destination:
                edges.setdefault((source, destination), []).append(f"{module} (line {line}) imports {target}")
    return edges


def strongly_connected(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    successors: dict[str, list[str]] = {node: [] for node in nodes}
    for source, destination in edges:
        successors.setdefault(source, []).append(destination)
        successors.setdefault(destination, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in successors[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(successors):
        if node not in index:
            visit(node)
    return components


def cycle_violations(graph: Graph) -> list[str]:
    edges = package_edges(graph)
    nodes = {package for module in graph if (package := stage_package(module))}
    problems = []
    for component in strongly_connected(nodes, edges):
        if len(component) < 2:
            continue
        inside = sorted(edge for edge in edges if edge[0] in component and edge[1] in component)
        lines = [f"  {source} -> {destination}: " + "; ".join(edges[source, destination]) for source, destination in inside]
        problems.append(
            f"stage packages {', '.join(component)} import each other in a cycle [rule: cycle]:\n" + "\n".join(lines)
        )
    return problems


def violations(graph: Graph) -> list[str]:
    return layer_violations(graph) + cycle_violations(graph)


def package_graph(graph: Graph) -> dict[str, list[str]]:
    """steps.<stage> -> the stage packages it imports (for reports)."""
    result: dict[str, set[str]] = {package: set() for module in graph if (package := stage_package(module))}
    for source, destination in package_edges(graph):
        result[source].add(destination)
    return {package: sorted(targets) for package, targets in sorted(result.items())}


def test_the_project_keeps_its_layers():
    problems = violations(project_graph())
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_the_checker_sees_every_kind_of_violation():
    """A synthetic project that breaks each rule once; the checker must name module, import and rule."""
    graph = {
        "steps.data.order": [("steps.data.steps", 3)],  # library -> Tango layer
        "steps.data.batches": [("steps.common.step", 4)],  # library -> the Tango layer's base
        "steps.data.tokenize": [("tango.step", 5)],  # library -> tango
        "steps.data.steps": [("steps.cli", 6), ("tango", 101)],  # Tango layer -> command layer (tango is fine)
        "steps.train.trainer": [("steps.commands.train_node", 7)],  # library -> command layer
        "steps.corpus.mix": [("steps.evaluation.tasks", 8)],  # corpus -> evaluation ...
        "steps.evaluation.steps": [("steps.corpus.sources", 9)],  # ... -> corpus: a cycle
        "olmo_model.model": [("steps.common.documents", 10), ("tango", 12)],
        "integrations.launcher": [("steps.train.worker", 11)],
        "steps.cli": [("steps.data.steps", 102), ("steps.commands.regenerate", 103)],  # fine
        "steps.commands.regenerate": [("steps.train.steps", 104), ("tango", 105)],  # fine
        "steps.common.models": [("olmo_model", 106)],  # fine
    }
    problems = violations(graph)
    expected = [
        ("steps.data.order (line 3) imports steps.data.steps", "[rule: library]"),
        ("steps.data.batches (line 4) imports steps.common.step", "[rule: library]"),
        ("steps.data.tokenize (line 5) imports tango.step", "[rule: library]"),
        ("steps.data.steps (line 6) imports steps.cli", "[rule: tango]"),
        ("steps.train.trainer (line 7) imports steps.commands.train_node", "[rule: library]"),
        ("olmo_model.model (line 10) imports steps.common.documents", "[rule: outside]"),
        ("olmo_model.model (line 12) imports tango", "[rule: outside]"),
        ("integrations.launcher (line 11) imports steps.train.worker", "[rule: outside]"),
    ]
    for where, rule in expected:
        assert any(where in problem and rule in problem for problem in problems), (where, problems)
    cycles = [problem for problem in problems if "[rule: cycle]" in problem]
    assert len(cycles) == 1 and "steps.corpus, steps.evaluation" in cycles[0]
    assert "steps.corpus.mix (line 8) imports steps.evaluation.tasks" in cycles[0]
    assert "steps.evaluation.steps (line 9) imports steps.corpus.sources" in cycles[0]
    assert len(problems) == len(expected) + 1, problems
    # the same project without the offending imports (lines < 100) is clean
    clean = {module: [edge for edge in edges if edge[1] > 100] for module, edges in graph.items()}
    assert violations(clean) == []


def test_the_checker_resolves_relative_imports():
    known = {"steps.data.steps", "steps.data.order", "steps.common.step", "steps.common"}
    source = "from .steps import X\nfrom . import order\nfrom ..common import step\nfrom ..common.step import Y\n"
    found = imports_of(source, "steps.data.batches", False, known)
    assert found == [("steps.data.steps", 1), ("steps.data.order", 2), ("steps.common.step", 3), ("steps.common.step", 4)]
    assert imports_of("from . import order\n", "steps.data", True, known) == [("steps.data.order", 1)]
    assert imports_of("import tango.step as s\n", "steps.data.order", False, known) == [("tango.step", 1)]


if __name__ == "__main__":  # prints the stage package graph and what breaks the layers
    full = project_graph()
    for package, targets in package_graph(full).items():
        print(f"{package} -> {', '.join(targets) or '(nothing)'}")
    print("\n".join(violations(full)) or "no violations")
