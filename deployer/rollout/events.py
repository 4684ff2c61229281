"""The one event source of a wait: watch items, the clock's ticks, and nothing else.

Each :class:`~deployer.cluster.Watch` is read by a daemon thread (``watch-…``) that
puts what it sees on one queue and wakes the reader. The reader (the watch loop)
blocks only in ``clock.wait(wake, seconds)``, so a test's clock decides when time
passes (see :mod:`deployer.clock`), and a cancel is seen within one tick.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from types import TracebackType

from deployer.clock import Clock
from deployer.cluster import Watch, WatchEvent
from deployer.errors import ClusterError

__all__ = ["Events", "Item"]

# A stopped watch ends its read at once; this only bounds a stuck one (an API server that
# stalls), on the clock: after a cancel the runner kills the container 10 s after SIGINT.
_JOIN_SECONDS = 0.5


@dataclass(frozen=True)
class Item:
    """One thing a watch saw (or its failure), and which stream it came from."""

    key: str  # the workload's key, or ``kind/namespace`` for a workload stream
    stream: str  # "workload" | "pods" | "history"
    what: WatchEvent | ClusterError


class _Pump(threading.Thread):
    """Feeds one :class:`Watch` into the queue."""

    def __init__(self, watch: Watch, key: str, stream: str, events: Events) -> None:
        super().__init__(daemon=True, name=f"watch-{stream}-{key}")
        self.watch, self.key, self.stream, self.events = watch, key, stream, events
        self.done = threading.Event()  # waited for on the clock (a join is not)

    def run(self) -> None:
        try:
            self._pump()
        finally:
            self.done.set()

    def _pump(self) -> None:
        try:
            for event in self.watch:
                self.events.put(Item(self.key, self.stream, event))
        except ClusterError as e:
            if not self.watch.stopped.is_set():
                self.events.put(Item(self.key, self.stream, e))
        except Exception as e:  # never die silently: the loop would wait for the deadline
            if not self.watch.stopped.is_set():
                error = ClusterError(f"Watching failed: {e}")
                self.events.put(Item(self.key, self.stream, error))


class Events:
    """Watches read in the background, handed out one item at a time; a context manager."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._queue: queue.Queue[Item] = queue.Queue()
        self._wake = threading.Event()
        self._pumps: list[_Pump] = []

    def watch(self, watch: Watch, key: str, stream: str) -> None:
        """Start reading ``watch``; its events arrive as :class:`Item` with ``key``."""
        pump = _Pump(watch, key, stream, self)
        self._pumps.append(pump)
        pump.start()

    def put(self, item: Item) -> None:
        self._queue.put(item)
        self._wake.set()

    def next(self, seconds: float) -> Item | None:
        """The next item, waiting at most ``seconds`` on the clock; None when none came."""
        for attempt in range(3):
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            if attempt == 0:
                self._wake.clear()  # then look again: an item may have come in between
            elif attempt == 1:
                self.clock.wait(self._wake, max(0.0, seconds))
        return None

    def close(self) -> None:
        """Stop every watch and wait (at most :data:`_JOIN_SECONDS`) for its thread to end.

        A thread still in a stalled read is left: it is a daemon, and its watch is stopped.
        """
        pumps, self._pumps = self._pumps, []
        for p in pumps:
            p.watch.stop()
        until = self.clock.monotonic() + _JOIN_SECONDS
        for p in pumps:
            left = until - self.clock.monotonic()
            if left <= 0:
                break
            self.clock.wait(p.done, left)

    def __enter__(self) -> Events:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
