"""Virtual time for the fake cluster: a :class:`deployer.clock.Clock` that never sleeps.

Time stands still while any thread that uses the fake is doing something; it moves
only when every such thread is blocked in one of the fake's blocking points
(:meth:`FakeClock.wait`, a watch stream's read, a request held by an outage). It
then jumps to the next instant something is due — a timer (a controller's step,
a pod's fate, a watch's server-side end) or a blocked thread's deadline — runs
what is due there, and wakes whoever can go on. So a test that waits 600 virtual
seconds takes milliseconds, and the same test always sees the same sequence.

A thread counts ("is tracked") from its first blocking point until it ends. A
thread that blocks elsewhere (``queue.get(timeout=...)``, ``time.sleep``) holds
virtual time still for as long as it blocks in real time; see
``docs/development.md`` (the fake cluster) for the rules the product follows.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FakeClock", "FakeDeadlock", "Timer"]

# How long (real seconds) a blocked thread sleeps before it looks again for what
# others did without telling it (an Event set by a thread that then went on).
_POLL = 0.02
# Real seconds with every tracked thread blocked and nothing due before we give up.
_DEADLOCK_AFTER = 5.0
# After a thread was started, real seconds of quiet before time may move, so a
# new thread gets to make its first request at the instant it was started.
_SETTLE = 0.003
_SETTLE_MAX = 0.1


class FakeDeadlock(RuntimeError):
    """Every thread waits for something and nothing is due: the test would hang."""


@dataclass(order=True)
class Timer:
    """Something due at a virtual instant (cancel it with :meth:`cancel`)."""

    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)
    name: str = field(default="", compare=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Blocked:
    predicate: Callable[[], bool]
    deadline: float | None


class FakeClock:
    """Virtual monotonic and wall time; ``wait`` moves time instead of sleeping.

    ``monotonic()`` starts at 1000.0 and ``time()`` at ``start`` (2026-01-01T00:00:00Z).
    """

    def __init__(self, start: float = 1_767_225_600.0, *, monotonic_start: float = 1000.0):
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._elapsed = 0.0
        self._start = start
        self._mono0 = monotonic_start
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._threads: dict[int, threading.Thread] = {}
        self._blocked: dict[int, _Blocked] = {}
        self._activity = 0
        self._threads_seen = threading.active_count()
        self.advances = 0  # how many times time moved (for tests of the fake itself)
        self.deadlock_after = _DEADLOCK_AFTER

    # -- the Clock protocol ------------------------------------------------------------

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed

    def time(self) -> float:
        return self._start + self._elapsed

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` of virtual time pass."""
        if event.is_set():
            return True
        with self.lock:
            deadline = self._elapsed + max(0.0, seconds)
        return self.block_until(event.is_set, deadline)

    # -- for tests and the fake cluster ---------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self._elapsed

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (controllers run meanwhile)."""
        self.wait(threading.Event(), seconds)

    def run_until(self, done: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
        """Let time pass until ``done()`` (checked every ``poll`` virtual seconds) or ``timeout``."""
        end = self._elapsed + timeout
        while not done():
            if self._elapsed >= end:
                return False
            self.sleep(min(poll, end - self._elapsed))
        return True

    def call_at(self, elapsed: float, fn: Callable[[], None], name: str = "") -> Timer:
        """Run ``fn`` when virtual time reaches ``elapsed`` (seconds since the clock was made)."""
        with self.lock:
            timer = Timer(max(elapsed, self._elapsed), next(self._seq), fn, name=name)
            heapq.heappush(self._timers, timer)
            self._activity += 1
            self._cond.notify_all()
            return timer

    def call_later(self, delay: float, fn: Callable[[], None], name: str = "") -> Timer:
        """Run ``fn`` ``delay`` virtual seconds from now."""
        with self.lock:
            return self.call_at(self._elapsed + max(0.0, delay), fn, name)

    def touch(self) -> None:
        """Note that a thread did something (a request): time waits a moment for quiet."""
        with self.lock:
            self._activity += 1
            self._cond.notify_all()

    def notify(self) -> None:
        """Wake blocked threads to look at their conditions again (data arrived)."""
        with self.lock:
            self._cond.notify_all()

    # -- the one blocking point ----------------------------------------------------------

    def block_until(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        """Block until ``predicate()`` (True) or virtual ``deadline`` (False).

        ``predicate`` is evaluated with :attr:`lock` held, by whichever thread looks.
        """
        me = threading.current_thread()
        with self.lock:
            self._threads[me.ident or 0] = me
            self._blocked[me.ident or 0] = _Blocked(predicate, deadline)
            self._activity += 1
            self._cond.notify_all()
            stuck_since: float | None = None
            try:
                while True:
                    if predicate():
                        return True
                    if deadline is not None and self._elapsed >= deadline:
                        return False
                    if self._may_advance():
                        if self._settled():
                            if self._advance():
                                stuck_since = None
                                continue
                            stuck_since = stuck_since or time.monotonic()
                            if time.monotonic() - stuck_since > self.deadlock_after:
                                raise FakeDeadlock(self._deadlock_message())
                        continue
                    stuck_since = None
                    self._cond.wait(_POLL)
            finally:
                self._blocked.pop(me.ident or 0, None)
                self._activity += 1
                self._cond.notify_all()

    def _may_advance(self) -> bool:
        """Every tracked thread is blocked, and none of them can go on now."""
        for ident, thread in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[ident]
                self._blocked.pop(ident, None)
                continue
            blocked = self._blocked.get(ident)
            if blocked is None:
                return False
            if blocked.predicate():
                return False
            if blocked.deadline is not None and self._elapsed >= blocked.deadline:
                return False
        return True

    def _settled(self) -> bool:
        """Wait briefly (real time) for a newly started thread to show itself."""
        count = threading.active_count()
        if count == self._threads_seen:
            return True
        self._threads_seen = count
        began = time.monotonic()
        while time.monotonic() - began < _SETTLE_MAX:
            activity = self._activity
            self._cond.wait(_SETTLE)
            if activity == self._activity:
                break
        return self._may_advance()

    def _next_due(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        candidates = [t.deadline for t in self._blocked.values() if t.deadline is not None]
        if self._timers:
            candidates.append(self._timers[0].due)
        return min(candidates) if candidates else None

    def _advance(self) -> bool:
        """Move to the next due instant and run what is due there; False if nothing is."""
        due = self._next_due()
        if due is None:
            self._cond.wait(_POLL)  # maybe a thread we do not track will act
            return False
        self._elapsed = max(self._elapsed, due)
        self.advances += 1
        self.run_due()
        self._cond.notify_all()
        return True

    def run_due(self) -> None:
        """Run every timer due at or before now (in order; timers may add timers)."""
        with self.lock:
            for _ in range(100_000):
                while self._timers and self._timers[0].cancelled:
                    heapq.heappop(self._timers)
                if not self._timers or self._timers[0].due > self._elapsed:
                    return
                timer = heapq.heappop(self._timers)
                timer.fn()
            raise FakeDeadlock("timers keep adding timers due now (a loop in a controller?)")

    def _deadlock_message(self) -> str:
        names = [t.name for t in self._threads.values()]
        return (
            f"FakeClock: at +{self._elapsed:.3f} s every tracked thread ({', '.join(names)}) "
            "is blocked without a deadline and nothing is due; the test would hang"
        )
