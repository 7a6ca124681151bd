"""Dependency hygiene: every package the code imports is declared in pyproject.toml, every one
declared is imported (or named below with the reason it is not), and every one is pinned in
constraints.txt (torch aside: setup.sh installs the build that fits the machine)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Declared, never imported by our code: another library loads them for us.
LOADED_BY_OTHERS = {
    "tabulate": "pandas' DataFrame.to_markdown (harness report --format md)",
    "pytest-timeout": "pytest loads it as a plugin (timeout = 600 in pyproject.toml)",
    "ruff": "a command, not a library: .ci/run runs `ruff check .` before the tests",
}
NOT_PINNED = {"torch"}
# The `docs` extra: nothing imports it; MkDocs loads each package from what mkdocs.yml names.
DOCS_LOADED_BY_MKDOCS = {
    "mkdocs": "docs_dir:",  # builds the site from mkdocs.yml
    "mkdocs-material": "name: material",  # the theme
    "mkdocstrings-python": "python:",  # the mkdocstrings plugin's handler (docs/api.md)
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(group: list[str]) -> set[str]:
    return {canonical(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]) for req in group}


def imported_modules(folder: Path) -> dict[str, str]:
    """Top-level third-party modules imported anywhere under folder (also inside functions and
    through pytest.importorskip), each with one file that imports it."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "importorskip"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("harness", "tests", "__future__"):
                    found.setdefault(top, str(path.relative_to(folder.parent)))
    return found


@functools.cache
def installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # slow: reads every installed package's RECORD


def distributions_of(module: str) -> set[str]:
    return {canonical(d) for d in installed().get(module, [])}


def test_every_imported_module_is_declared():
    runtime = declared(PYPROJECT["project"]["dependencies"])
    dev = runtime | declared(PYPROJECT["project"]["optional-dependencies"]["dev"])
    missing = []
    # benchmarks may also use the `bench` extra (lm-eval for bench/vs_lm_eval.py), which CI does not install
    bench = dev | declared(PYPROJECT["project"]["optional-dependencies"].get("bench", []))
    # the site's build hook (docs/gen_reference.py) may use the `docs` extra, which setup.sh installs
    docs = dev | declared(PYPROJECT["project"]["optional-dependencies"]["docs"])
    folders = ((ROOT / "harness", runtime), (ROOT / "tests", dev), (ROOT / "bench", bench), (ROOT / "docs", docs))
    for folder, allowed in folders:
        for module, where in imported_modules(folder).items():
            dists = distributions_of(module)
            if not dists and folder.name == "bench" and canonical(module) in bench - dev:
                continue  # an optional benchmark extra (lm_eval -> lm-eval) that this machine need not have
            assert dists, f"{module} (imported in {where}) is not installed"
            if not dists & allowed:
                missing.append(f"{module} ({where}) -> declare one of {sorted(dists)}")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_every_declared_package_is_imported_or_explained():
    everything = declared(PYPROJECT["project"]["dependencies"]) | declared(
        PYPROJECT["project"]["optional-dependencies"]["dev"]
    )
    used = set()
    for folder in (ROOT / "harness", ROOT / "tests", ROOT / "bench", ROOT / "docs"):
        for module in imported_modules(folder):
            used |= distributions_of(module)
    unused = sorted(everything - used - set(LOADED_BY_OTHERS))
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}; drop them or say why"
    assert not set(LOADED_BY_OTHERS) & used, "a package listed as loaded by others is imported: drop it from the list"
    assert "evaluate" not in everything  # fetches metric scripts from the Hub at run time: see README


def test_the_docs_extra_is_what_mkdocs_yml_loads():
    docs = declared(PYPROJECT["project"]["optional-dependencies"]["docs"])
    assert docs == set(DOCS_LOADED_BY_MKDOCS), "explain every docs package in DOCS_LOADED_BY_MKDOCS (and only those)"
    config = (ROOT / "mkdocs.yml").read_text()
    for package, named_by in DOCS_LOADED_BY_MKDOCS.items():
        assert named_by in config, f"mkdocs.yml no longer uses {package} ({named_by!r}): drop it from the docs extra"


def test_every_declared_package_is_pinned():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: '{line}' is not a name==version pin"
            pins[canonical(name)] = version
    extras = PYPROJECT["project"]["optional-dependencies"]
    everything = declared(PYPROJECT["project"]["dependencies"]) | declared(extras["dev"]) | declared(extras["docs"])
    unpinned = sorted(everything - set(pins) - NOT_PINNED)
    assert not unpinned, f"declared but not pinned in constraints.txt: {unpinned}"
    for name in everything & set(pins):  # the pins are what is installed and was tested
        assert importlib.metadata.version(name) == pins[name], name


def test_the_scanner_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text(
        "def f():\n    import yaml.parser\n    from scipy import stats\n"
        "import pytest\npytest.importorskip('playwright.sync_api')\nfrom . import x\n"
    )
    assert set(imported_modules(tmp_path)) == {"yaml", "scipy", "pytest", "playwright"}
