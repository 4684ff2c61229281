"""The watch iterator: list, watch, resume, relist on 410, back off on dropped streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from deployer.clock import SYSTEM_CLOCK
from deployer.cluster import PODS, Watch
from deployer.errors import ClusterError


class FakeKube:
    """Lists and watch streams from a script; a stream may be an exception."""

    def __init__(self, lists: list[dict[str, Any]], streams: list[Any]) -> None:
        self.lists, self.streams = lists, streams
        self.cancel = threading.Event()
        self.clock = SYSTEM_CLOCK
        self.deadline = time.monotonic() + 60
        self.watched_from: list[str] = []

    def request(self, method: str, resource: Any, **kwargs: Any) -> Any:
        return self.lists.pop(0)

    def watch(self, resource: Any, namespace: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.watched_from.append(kwargs["resource_version"])
        if not self.streams:
            self.cancel.set()
            return
        stream = self.streams.pop(0)
        if isinstance(stream, Exception):
            raise stream
        yield from stream


def pod(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}}


def test_resumes_from_the_last_version_and_relists_on_410() -> None:
    kube = FakeKube(
        lists=[
            {"metadata": {"resourceVersion": "1"}, "items": [pod("a", "1")]},
            {"metadata": {"resourceVersion": "9"}, "items": [pod("b", "9")]},
        ],
        streams=[
            [
                {"type": "ADDED", "object": pod("b", "2")},
                {"type": "BOOKMARK", "object": pod("", "3")},
            ],
            [{"type": "ERROR", "object": {"code": 410}}],
            [{"type": "DELETED", "object": pod("b", "10")}],
        ],
    )
    events = [(e.type, [o["metadata"]["name"] for o in e.objects]) for e in Watch(kube, PODS, "ns")]  # type: ignore[arg-type]
    assert events == [
        ("SYNC", ["a"]),
        ("ADDED", ["b"]),
        ("SYNC", ["b"]),  # the relist after 410 Gone
        ("DELETED", ["b"]),
    ]
    assert kube.watched_from == ["1", "3", "9", "10"]


class StepClock:
    """A clock whose waits pass at once and move time on by what was asked."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.now += seconds
        return event.is_set()


def test_dropped_streams_are_retried_until_the_deadline_then_given_up() -> None:
    drop = urllib3.exceptions.ProtocolError("connection reset")
    kube = FakeKube(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": []}], streams=[drop] * 40
    )
    kube.clock = StepClock()  # type: ignore[assignment]
    kube.deadline = 100.0 + 25  # an outage longer than the old 8 tries (about 20 s)
    watch = Watch(kube, PODS, "ns")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match=r"Lost the watch on pods in namespace ns: no answer"):
        list(watch)
    assert kube.clock.now >= kube.deadline
    assert len(kube.watched_from) > 8  # it did not give up after 8 drops


def test_an_outage_shorter_than_the_deadline_is_ridden_out() -> None:
    drop = urllib3.exceptions.ProtocolError("connection reset")
    streams: list[Any] = [drop] * 10 + [[{"type": "ADDED", "object": pod("a", "2")}]]
    kube = FakeKube(lists=[{"metadata": {"resourceVersion": "1"}, "items": []}], streams=streams)
    kube.clock = StepClock()  # type: ignore[assignment]
    kube.deadline = 100.0 + 120
    events = [e.type for e in Watch(kube, PODS, "ns")]  # type: ignore[arg-type]
    assert events == ["SYNC", "ADDED"]
    assert kube.clock.now - 100 > 20  # about 25 s of dropped connections


def test_a_refused_watch_is_an_error_naming_it() -> None:
    kube = FakeKube(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": []}],
        streams=[[{"type": "ERROR", "object": {"code": 403, "message": "forbidden"}}]],
    )
    with pytest.raises(ClusterError, match="Watching pods in namespace ns failed: forbidden"):
        list(Watch(kube, PODS, "ns"))  # type: ignore[arg-type]
