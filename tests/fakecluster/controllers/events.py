"""core/v1 Events as the controllers' recorder writes them (repeats raise ``count``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.meta import deep, meta

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["record"]


def record(
    cluster: FakeCluster,
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str,
    *,
    host: str = "",
    field_path: str = "",
) -> None:
    """Record an event about ``involved``; the same event again bumps its count."""
    store = cluster.store
    t = cluster.registry.of_kind("Event")
    m = meta(involved)
    namespace = m.get("namespace") or "default"
    for event in store.list(t, namespace):
        io = event.get("involvedObject") or {}
        if (
            io.get("uid") == m.get("uid")
            and event.get("reason") == reason
            and event.get("message") == message
            and event.get("type") == type_
            and (event.get("source") or {}).get("component") == component
        ):
            updated = deep(event)
            updated["count"] = int(event.get("count") or 1) + 1
            updated["lastTimestamp"] = store.now()
            store.update(t, updated, manager=component)
            return
    cluster.event_seq += 1
    nanos = int(cluster.clock.time() * 1e9) + cluster.event_seq
    source: dict[str, Any] = {"component": component}
    if host:
        source["host"] = host
    involved_ref: dict[str, Any] = {
        "kind": involved.get("kind", ""),
        "namespace": m.get("namespace", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "apiVersion": involved.get("apiVersion", ""),
        "resourceVersion": m.get("resourceVersion", ""),
    }
    if field_path:
        involved_ref["fieldPath"] = field_path
    body = {
        "metadata": {"name": f"{m.get('name', '')}.{nanos:x}", "namespace": namespace},
        "involvedObject": involved_ref,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": store.now(),
        "lastTimestamp": store.now(),
        "count": 1,
        "type": type_,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": host,
    }
    store.create(t, body, manager=component)
