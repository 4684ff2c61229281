"""Watch streams: what one ``GET ...?watch=true`` sees, read as the real client reads it.

A :class:`Watcher` is registered with the store and gets every change of its
resource; it keeps those that match its namespace and selectors, turning a change
that makes an object match (or stop matching) a label selector into ``ADDED`` (or
``DELETED``), as the apiserver's watch cache does. :class:`FakeStream` is the
:class:`deployer.cluster.Stream` the transport hands out: ``chunks()`` yields one
JSON line per event and blocks in virtual time (:meth:`FakeClock.block_until`)
while there is none.

Faults a test can cause: :meth:`Watcher.cut` (connection reset: the read raises
``ProtocolError``), :meth:`Watcher.stall` (events are held back; the read times
out after the client's read timeout), :meth:`Watcher.expire` (an ``ERROR`` event
with 410 Gone, then the server ends the watch).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3

from tests.fakecluster.resources import ResourceType

if TYPE_CHECKING:
    from tests.fakecluster.clock import FakeClock, Timer

__all__ = ["Change", "FakeStream", "Watcher"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One committed write: the object after it (and before, for updates and deletes)."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    t: ResourceType
    obj: Obj
    old: Obj | None


def _line(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class Watcher:
    """One open watch: its filter, its buffer of encoded events, and its state."""

    def __init__(
        self,
        clock: FakeClock,
        t: ResourceType,
        namespace: str | None,
        match: Callable[[Mapping[str, Any]], bool],
        *,
        bookmarks: bool,
        read_timeout: float | None,
        on_close: Callable[[Watcher], None],
    ) -> None:
        self.clock = clock
        self.t = t
        self.namespace = namespace
        self.match = match
        self.bookmarks = bookmarks
        self.read_timeout = read_timeout
        self.buffer: collections.deque[bytes] = collections.deque()
        self.held: list[bytes] = []
        self.ended = False
        self.broken: Exception | None = None
        self.interrupted = False
        self.stalled = False
        self.sent = 0
        self.last_data = clock.elapsed
        self.timers: list[Timer] = []
        self._on_close = on_close

    # -- what the store and the transport do ----------------------------------------------

    def _in_scope(self, obj: Mapping[str, Any]) -> bool:
        if self.namespace is None:
            return True
        return bool((obj.get("metadata") or {}).get("namespace") == self.namespace)

    def event_for(self, change: Change) -> tuple[str, Obj] | None:
        """The event this watch sees for ``change`` (selector transitions included)."""
        if change.t.group != self.t.group or change.t.plural != self.t.plural:
            return None
        now = self._in_scope(change.obj) and self.match(change.obj)
        before = change.old is not None and self._in_scope(change.old) and self.match(change.old)
        if change.type == "ADDED":
            return ("ADDED", change.obj) if now else None
        if change.type == "DELETED":
            return ("DELETED", change.obj) if before or now else None
        if now and before:
            return ("MODIFIED", change.obj)
        if now:
            return ("ADDED", change.obj)
        if before:
            return ("DELETED", change.obj)
        return None

    def offer(self, change: Change) -> None:
        found = self.event_for(change)
        if found is not None:
            self.push({"type": found[0], "object": found[1]})

    def push(self, event: Mapping[str, Any]) -> None:
        if self.ended:
            return
        if self.stalled:
            self.held.append(_line(event))
            return
        self.buffer.append(_line(event))
        self.clock.notify()

    def bookmark(self, rv: int) -> None:
        if self.bookmarks:
            self.push(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": self.t.kind,
                        "apiVersion": self.t.api_version,
                        "metadata": {"resourceVersion": str(rv)},
                    },
                }
            )

    def end(self) -> None:
        """The server ends the watch (timeoutSeconds passed): a clean end of the body."""
        self.ended = True
        self.clock.notify()
        self.close()

    def cut(self) -> None:
        """The connection is reset: the reader gets a ``ProtocolError``."""
        self.broken = urllib3.exceptions.ProtocolError(
            "Connection broken: ConnectionResetError(104, 'Connection reset by peer')",
            ConnectionResetError(104, "Connection reset by peer"),
        )
        self.buffer.clear()  # a reset connection loses what was not read yet
        self.ended = True
        self.clock.notify()
        self.close()

    def stall(self, stalled: bool = True) -> None:
        """Hold events back (a stuck connection); un-stalling delivers what was held."""
        self.stalled = stalled
        if not stalled:
            self.buffer.extend(self.held)
            self.held.clear()
            self.clock.notify()

    def expire(self, rv: int) -> None:
        """The watch fell out of the server's window: ERROR 410, then the end."""
        self.push(
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {rv}",
                    "reason": "Expired",
                    "code": 410,
                },
            }
        )
        self.ended = True
        self.clock.notify()
        self.close()

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self._on_close(self)

    # -- what the reader does ------------------------------------------------------------------

    def _ready(self) -> bool:
        return bool(self.buffer) or self.ended or self.interrupted

    def read_chunks(self) -> Iterator[bytes]:
        while True:
            with self.clock.lock:
                deadline = (
                    self.last_data + self.read_timeout if self.read_timeout is not None else None
                )
            if not self.clock.block_until(self._ready, deadline):
                self.close()
                raise urllib3.exceptions.ReadTimeoutError(
                    None,  # type: ignore[arg-type]
                    "/watch",
                    f"Read timed out. (read timeout={self.read_timeout})",
                )
            with self.clock.lock:
                if self.interrupted:
                    self.close()
                    return
                if self.buffer:
                    chunk = self.buffer.popleft()
                    self.sent += 1
                    self.last_data = self.clock.elapsed
                elif self.broken is not None:
                    raise self.broken
                else:
                    return
            yield chunk


class FakeStream:
    """The :class:`deployer.cluster.Stream` of the fake transport."""

    def __init__(self, status: int, body: bytes = b"", watcher: Watcher | None = None) -> None:
        self.status = status
        self._body = body
        self.watcher = watcher
        self.released: bool | None = None  # the ``finished`` the client released it with

    def read(self) -> bytes:
        if self.watcher is not None:
            return b"".join(self.chunks())
        return self._body

    def chunks(self) -> Iterator[bytes]:
        if self.watcher is None:
            if self._body:
                yield self._body
            return
        yield from self.watcher.read_chunks()

    def interrupt(self) -> None:
        watcher = self.watcher
        if watcher is not None:
            with watcher.clock.lock:
                watcher.interrupted = True
                watcher.clock.notify()

    def release(self, finished: bool) -> None:
        self.released = finished
        if self.watcher is not None:
            with self.watcher.clock.lock:
                self.watcher.interrupted = True
                self.watcher.close()
