"""The package's modules import each other without a cycle.

Every import of a ``flask_tiered_state`` module counts, those deferred into a function
too (a deferred import hides a cycle, it does not remove it); only imports under
``if TYPE_CHECKING:`` are left out, because they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import flask_tiered_state

PACKAGE = Path(flask_tiered_state.__file__).parent
NAME = "flask_tiered_state"


def modules(root: Path = PACKAGE) -> dict[str, tuple[Path, list[str]]]:
    """``{dotted name: (file, the package its relative imports start from)}``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [NAME, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
            package = parts
        else:
            package = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def _imports(tree: ast.AST, package: list[str]) -> Iterator[tuple[str, str | None]]:
    """``(module, imported name)`` of every import that can run."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield from ((module, alias.name) for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, package) in known.items():
        edges = set()
        for module, imported in _imports(ast.parse(path.read_text("utf-8")), package):
            target = f"{module}.{imported}" if f"{module}.{imported}" in known else module
            if target in known and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert found == [], "\n".join(
        " <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)
        for c in found
    )


def test_the_check_finds_a_deferred_cycle_and_ignores_type_checking(tmp_path: Path) -> None:
    root = tmp_path / NAME
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from . import b\n")
    (root / "b.py").write_text("def f():\n    from .a import x\n")
    (root / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . a import y\n"
    )
    (root / "d.py").write_text("from .c import z\n")
    graph = import_graph(root)
    assert cycles(graph) == [[f"{NAME}.a", f"{NAME}.b"]]
    assert graph[f"{NAME}.c"] == set()
