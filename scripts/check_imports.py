#!/usr/bin/env python3
"""Fails when the modules of deployer/ import each other in a cycle.

Every ``import`` counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a cycle hidden inside a function is still two modules that
cannot be understood, tested or moved one without the other. A module also depends
on its parent packages (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "deployer"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The deployer modules ``name`` (in ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def main(root: Path = ROOT) -> int:
    paths = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = imports(path, name, known)
        parent = name.rpartition(".")[0]
        while parent:
            if parent != name:
                edges.add(parent)
            parent = parent.rpartition(".")[0]
        # A package's __init__ may import its own submodules; that is not a cycle.
        graph[name] = {e for e in edges if not e.startswith(name + ".") or name == e}
    cycles = _cycles(graph)
    for cycle in cycles:
        print("import cycle: " + " -> ".join([*cycle, cycle[0]]), file=sys.stderr)
    return 1 if cycles else 0


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


if __name__ == "__main__":
    sys.exit(main())
