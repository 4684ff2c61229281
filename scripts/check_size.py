#!/usr/bin/env python3
"""Fails when a class in deployer/ passes 300 lines or a function 60.

A newcomer should be able to read any one unit of the action in one sitting; a
class or function that outgrows that is a sign it does more than one job. Lines
are counted from the ``def``/``class`` line (decorators excluded) to the last line
of the body, docstrings and comments included.

``KNOWN`` lists the units that were over the limit when the check came in, with
the size they may not pass; each is to be split, and the check fails once one is
back under its limit until its entry is removed, so the list only ever shrinks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CLASS_LIMIT = 300
FUNCTION_LIMIT = 60
ROOT = Path(__file__).resolve().parent.parent

# "path:Qualified.name" → the most lines it may have until it is split.
KNOWN: dict[str, int] = {}


def units(path: Path) -> list[tuple[str, int, int, bool]]:
    """(qualified name, first line, line count, is a class) for every def and class."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int, int, bool]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                found.append(
                    (name, child.lineno, end - child.lineno + 1, isinstance(child, ast.ClassDef))
                )
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main(root: Path = ROOT, known: dict[str, int] | None = None) -> int:
    known = KNOWN if known is None else known
    problems: list[str] = []
    seen: set[str] = set()
    for path in sorted((root / "deployer").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for name, line, size, is_class in units(path):
            limit = CLASS_LIMIT if is_class else FUNCTION_LIMIT
            key = f"{relative}:{name}"
            allowed = known.get(key)
            if allowed is not None:
                seen.add(key)
                if size <= limit:
                    problems.append(f"{key} is {size} lines now: remove it from KNOWN")
                elif size > allowed:
                    problems.append(f"{key} grew to {size} lines (known at {allowed}); split it")
            elif size > limit:
                what = "class" if is_class else "function"
                problems.append(
                    f"{relative}:{line}: {what} {name} has {size} lines (limit {limit}); split it"
                )
    for key in sorted(set(known) - seen):
        problems.append(f"{key} no longer exists: remove it from KNOWN")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
