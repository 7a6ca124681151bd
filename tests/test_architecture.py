"""The package layout is the architecture: each package (a folder of harness/, or a module at its
root) is one layer, and imports between packages, drawn with `ast` (function-level imports
included), only point down. A package may import its own modules and the packages of lower
layers; never a higher layer, nor a peer of its own layer. Modules form no import cycle. The layers
are DESIGN.md's package map; a new package must be placed here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "harness"

# Lowest first. Each entry is a layer: packages that may import any lower layer but not each other.
LAYERS: list[tuple[str, ...]] = [
    ("harness.errors", "harness.naming", "harness.version"),
    ("harness.paths", "harness.plugins", "harness.tasks"),  # foundation: atomic files, the Registry, task types
    # the formats: the files a user writes (experiment schema, YAML reading, golden-set schema) and
    # the arm folders and results.json a run writes
    ("harness.config", "harness.results"),
    ("harness.data", "harness.models"),
    ("harness.training", "harness.eval"),  # the loop and its objectives; evaluation, golden scoring included
    ("harness.methods",),
    ("harness.stages",),
    ("harness.planning",),  # validation against the world, then the plan
    ("harness.execution",),
    ("harness.tracking", "harness.report"),
    ("harness.golden",),  # the release gate: candidate vs baseline, outputs, promotion
    ("harness.api",),
    ("harness.cli",),
    ("harness", "harness.__main__"),  # the package root re-exports the API (lazily); `python -m harness`
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """harness.eval.metrics -> harness.eval; a module at the root (harness.errors) is its own package."""
    return ".".join(module.split(".")[:2])


def harness_imports(path: Path, modules: set[str]) -> set[str]:
    """Every harness module a file imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolved against the file's own package
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from harness.eval import predict` imports the submodule harness.eval.predict
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {name: harness_imports(path, modules) - {name} for name, path in files.items()}


def layer_of(package: str, layers: list[tuple[str, ...]] = LAYERS) -> int:
    for rank, layer in enumerate(layers):
        if package in layer:
            return rank
    pytest.fail(f"package {package} is in no layer of tests/test_architecture.py: place it there (and in DESIGN.md)")


def arrows_against_the_layers(graph: dict[str, set[str]], layers: list[tuple[str, ...]] = LAYERS) -> list[str]:
    """Each import from one package to another that is not in a lower layer (up, or to a peer)."""
    wrong = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            source, dest = package_of(importer), package_of(target)
            if source != dest and layer_of(dest, layers) >= layer_of(source, layers):
                wrong.append(
                    f"{importer} ({source}, layer {layer_of(source, layers)}) imports {target} "
                    f"({dest}, layer {layer_of(dest, layers)})"
                )
    return wrong


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_harness_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_between_packages_points_down_the_layers():
    wrong = arrows_against_the_layers(import_graph())
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(wrong)


def test_the_layer_table_names_exactly_the_packages_there_are():
    packages = {package_of(module) for module in import_graph()}
    listed = [package for layer in LAYERS for package in layer]
    assert len(listed) == len(set(listed)), "a package is listed in two layers"
    assert set(listed) == packages, f"not a package: {set(listed) - packages}; not placed: {packages - set(listed)}"


def test_the_checker_sees_a_cycle_an_upward_and_a_sideways_import():
    """The tests above can fail: a constructed graph with a cycle, an import up a layer and one to
    a peer of the same layer; imports inside a package and down a layer pass."""
    layers = [("harness.errors",), ("harness.data", "harness.models"), ("harness.eval",), ("harness.execution",)]
    graph = {
        "harness.eval.a": {"harness.eval.b", "harness.data.x", "harness.errors"},  # own package, down, down
        "harness.eval.b": {"harness.eval.a"},  # a cycle inside a package
        "harness.data.x": {"harness.execution.runner"},  # up
        "harness.models.y": {"harness.data.x"},  # sideways, to a peer
        "harness.execution.runner": {"harness.errors"},  # down, two layers
        "harness.errors": set(),
    }
    assert find_cycle(graph) == ["harness.eval.a", "harness.eval.b", "harness.eval.a"]
    wrong = arrows_against_the_layers(graph, layers)
    assert [line.split(" (")[0] for line in wrong] == ["harness.data.x", "harness.models.y"]
    assert "imports harness.execution.runner (harness.execution, layer 3)" in wrong[0]
    with pytest.raises(pytest.fail.Exception, match="harness.report is in no layer"):
        layer_of("harness.report", layers)


def test_function_level_imports_are_part_of_the_graph(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from harness.execution import runner\n    import harness.errors\n")
    modules = {"harness.execution.runner", "harness.errors", "harness.execution"}
    assert harness_imports(source, modules) == {"harness.execution.runner", "harness.errors"}
