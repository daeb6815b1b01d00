"""No import cycle between the modules of orchestrator, actors and supervisors.

Every ``import`` counts, wherever it stands: at module level, inside a
function (the usual way to paper over a cycle) or under ``TYPE_CHECKING``.
Modules are read with ``ast``, never imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("orchestrator", "actors", "supervisors")

def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → source file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module (or its closest package) that ``import name`` loads from ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The modules of ours that ``name`` imports, anywhere in its source."""
    parts = name.split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _known(alias.name, modules)) is not None:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # ``from package import module``
                    yield submodule
                elif (target := _known(source, modules)) is not None:
                    yield target


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {
        name: {t for t in imports_of(name, path, modules) if t != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "orchestrator"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from ._a import A as A\n")
    (pkg / "_a.py").write_text("def f():\n    from .sub import _b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import orchestrator._a\n"
    )
    (pkg / "_c.py").write_text("from . import _a\nimport orchestrator.sub\n")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    modules = package_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["orchestrator"] == {"orchestrator._a"}
    assert graph["orchestrator._a"] == {"orchestrator.sub._b"}
    assert graph["orchestrator.sub._b"] == {"orchestrator._a"}
    assert graph["orchestrator._c"] == {"orchestrator._a", "orchestrator.sub"}
    assert cycles(graph) == {frozenset({"orchestrator._a", "orchestrator.sub._b"})}


def test_no_import_cycle() -> None:
    modules = package_modules()
    assert "orchestrator.daemon._journal" in modules  # the walk sees the packages
    assert sorted(map(sorted, cycles(import_graph(modules)))) == []
