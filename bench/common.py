"""What every benchmark reports: a figure of ours against the peer's, and the target."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One benchmark line: ``ours / peer`` must be at most ``target`` (a ratio or absolute)."""

    name: str
    ours: float
    peer: float | None  # None: an absolute target (``ours <= target``)
    target: float
    unit: str
    note: str = ""
    # Differences this small are the clock's and the scheduler's, not the tools'.
    tolerance: float = 0.0

    @property
    def ratio(self) -> float | None:
        return self.ours / self.peer if self.peer else None

    @property
    def ok(self) -> bool:
        if self.peer is not None and self.ours - self.peer <= self.tolerance:
            return True
        value = self.ratio if self.peer is not None else self.ours
        return value is not None and value <= self.target

    def row(self) -> str:
        peer = f"{self.peer:.3f}" if self.peer is not None else "-"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        target = f"<= {self.target}x" if self.peer is not None else f"<= {self.target} {self.unit}"
        if self.tolerance:
            target += f" (or within {self.tolerance * 1000:.0f} ms)"
        verdict = "ok" if self.ok else "MISSED"
        return (
            f"| {self.name} | {self.ours:.3f} {self.unit} | {peer} | {ratio} | {target} "
            f"| {verdict} | {self.note} |"
        )


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``run``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
