"""`python -m bench`: every benchmark, as one Markdown table (also written to .testenv/bench.md)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bench.common import Figure

MODULES = [
    "bench.build_push",
    "bench.overhead",
    "bench.builders",
    "bench.cache",
    "bench.rollout",
    "bench.progressive",
    "bench.container",
    "bench.render",
]


def main() -> int:
    figures: list[Figure] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        figures.extend(module.run())
    lines = [
        "| benchmark | ours | peer | ratio | target | verdict | note |",
        "|---|---|---|---|---|---|---|",
        *(f.row() for f in figures),
    ]
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).resolve().parent.parent / ".testenv" / "bench.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table + "\n")
    return 0 if all(f.ok for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
