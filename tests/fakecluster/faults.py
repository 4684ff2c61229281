"""Faults a test switches on: an API outage, one-off error answers, 410 as a status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.fakecluster.api import _json, connection_refused, read_timeout

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["Faults"]


@dataclass
class _Injected:
    method: str | None
    path_contains: str
    status: int
    reason: str
    message: str
    times: int


class Faults:
    """The fault switches of one fake cluster."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.outage_until: float | None = None
        self.outage_mode = "refused"
        self.gone_as_status = False  # answer a too-old watch with 410 instead of an ERROR event
        self.injected: list[_Injected] = []
        self.hooks: list[Callable[[str, str], tuple[int, bytes] | None]] = []

    def outage(self, seconds: float, mode: str = "refused") -> None:
        """Every request fails for ``seconds`` of virtual time.

        ``refused``: connections are refused (``ConnectionRefusedError``); ``503``: the
        apiserver answers 503 ServiceUnavailable; ``hang``: requests get no answer until
        the outage ends or their read timeout passes (``ReadTimeoutError``). Open watches
        are cut at the start (except ``503``).
        """
        assert mode in ("refused", "503", "hang"), mode
        with self.cluster.clock.lock:
            self.outage_until = self.cluster.clock.elapsed + seconds
            self.outage_mode = mode
            if mode != "503":
                self.cluster.cut_watches()

    def _in_outage(self) -> bool:
        return self.outage_until is not None and self.cluster.clock.elapsed < self.outage_until

    def fail(
        self,
        status: int = 500,
        *,
        method: str | None = None,
        path_contains: str = "",
        reason: str = "InternalError",
        message: str = "Internal error occurred: injected by the test",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (a Status body)."""
        self.injected.append(_Injected(method, path_contains, status, reason, message, times))

    def before_request(self, path: str, timeout: tuple[float, float]) -> None:
        """Outside the cluster lock: refuse or hold a request during an outage."""
        clock = self.cluster.clock
        with clock.lock:
            if not self._in_outage():
                return
            mode, until = self.outage_mode, self.outage_until
        if mode == "refused":
            raise connection_refused()
        if mode == "hang":
            assert until is not None
            limit = clock.elapsed + timeout[1]
            if not clock.block_until(lambda: not self._in_outage(), min(until, limit)) and (
                self._in_outage()
            ):
                raise read_timeout(timeout[1])

    def answer(self, method: str, path: str) -> tuple[int, bytes] | None:
        """With the cluster lock held: an injected or outage answer, if any."""
        if self._in_outage() and self.outage_mode == "503":
            return 503, _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "the server is currently unable to handle the request",
                    "reason": "ServiceUnavailable",
                    "code": 503,
                }
            )
        for hook in self.hooks:
            found = hook(method, path)
            if found is not None:
                return found
        for item in self.injected:
            if item.times <= 0:
                continue
            if item.method not in (None, method) or item.path_contains not in path:
                continue
            item.times -= 1
            return item.status, _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": item.message,
                    "reason": item.reason,
                    "code": item.status,
                }
            )
        return None
