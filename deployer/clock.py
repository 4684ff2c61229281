"""The one clock every deadline, grace, sleep and timestamp reads.

Code that waits takes a :class:`Clock` instead of calling :mod:`time` itself, so a
test can hand it a clock it advances by hand and never waits for real time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time for deadlines, wall time for the cluster's timestamps, and waits."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, graces)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (to compare with timestamps the API server wrote)."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass; True if it was set."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
