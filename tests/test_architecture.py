"""The package layout is the architecture: imports between harness modules, drawn with `ast`
(function-level imports included), form no cycle and never point from a lower step of the flow up
to a higher one. The layers are DESIGN.md's package map; a new package must be placed here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "harness"

# Lowest first. A module may import modules of its own layer or of lower ones, never higher.
LAYERS: list[tuple[str, ...]] = [
    ("harness", "harness.errors", "harness.paths", "harness.plugins", "harness.naming", "harness.tasks"),
    ("harness.config.schema", "harness.config.yamlfile", "harness.config.golden_set"),
    ("harness.data", "harness.models"),
    ("harness.methods", "harness.training"),
    ("harness.eval",),
    ("harness.stages",),
    ("harness.eval.golden_assertions", "harness.eval.golden_scoring"),
    ("harness.planning.validation", "harness.planning.experiment_loader", "harness.config", "harness.results"),
    ("harness.planning",),
    ("harness.execution",),
    (
        "harness.tracking",
        "harness.report",
        "harness.golden.gate",
        "harness.golden.outputs",
        "harness.golden.summary",
        "harness.golden",
    ),
    ("harness.api", "harness.cli", "harness.__main__"),  # the two front doors: Python and the command line
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


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


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        pytest.fail(f"{module} is in no layer of tests/test_architecture.py: place its package there")
    return rank


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


def test_no_import_points_up_the_flow():
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in sorted(import_graph().items())
        for b in sorted(targets)
        if layer_of(b) > layer_of(a)
    ]
    assert not upward, "imports against the flow:\n" + "\n".join(upward)


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The two tests above can fail: a constructed graph with a cycle and an upward arrow."""
    graph = {
        "harness.eval.a": {"harness.eval.b"},
        "harness.eval.b": {"harness.eval.a"},
        "harness.training.x": {"harness.execution.runner"},
        "harness.execution.runner": set(),
    }
    assert find_cycle(graph) == ["harness.eval.a", "harness.eval.b", "harness.eval.a"]
    assert layer_of("harness.execution.runner") > layer_of("harness.training.x")


def test_function_level_imports_are_part_of_the_graph(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from harness.execution import runner\n    import harness.errors\n")
    modules = {"harness.execution.runner", "harness.errors", "harness.execution"}
    assert harness_imports(source, modules) == {"harness.execution.runner", "harness.errors"}
