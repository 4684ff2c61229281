"""Why a pod is not coming up: its problem, its Warning events and its last log lines.

Everything here is best effort: a diagnosis that cannot be read (no permission,
a pod without logs, a pod already gone) is left out, never raised, because the
rollout's own reason has already been decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.cluster import EVENTS, PODS, Kube
from deployer.errors import ClusterError

__all__ = ["Diagnosis", "diagnose_pod"]

LOG_LINES = 20
MAX_EVENTS = 8


@dataclass(frozen=True)
class Diagnosis:
    """What we found about one pod. ``events`` and ``log`` are untrusted text."""

    summary: str  # our own line: pod, container, reason, message
    events: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The multi-line form for the job summary."""
        lines = [self.summary]
        if self.events:
            lines.append("Warning events:")
            lines.extend(f"  {e}" for e in self.events)
        if self.log:
            lines.append(f"Last {len(self.log)} log lines:")
            lines.extend(f"  {line}" for line in self.log)
        lines.extend(self.notes)
        return "\n".join(lines)


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def warning_events(kube: Kube, namespace: str, pod: str) -> list[str]:
    """The pod's most recent Warning events, oldest first, as ``Reason: message (xN)``."""
    selector = f"involvedObject.kind=Pod,involvedObject.name={pod}"
    listing = kube.request(
        "GET", EVENTS, verb="list", namespace=namespace, query=[("fieldSelector", selector)]
    )
    items = [e for e in listing.get("items") or [] if e.get("type") == "Warning"]
    items.sort(key=_event_time)
    lines = []
    for event in items[-MAX_EVENTS:]:
        count = int(event.get("count") or (event.get("series") or {}).get("count") or 1)
        suffix = f" (x{count})" if count > 1 else ""
        lines.append(f"{event.get('reason', '')}: {event.get('message', '')}".strip() + suffix)
    return lines


def last_log_lines(kube: Kube, namespace: str, pod: str, container: str) -> list[str]:
    """The last :data:`LOG_LINES` lines the container wrote (previous run if it crashed)."""
    for previous in ("true", "false"):
        query: list[tuple[str, Any]] = [("tailLines", LOG_LINES), ("previous", previous)]
        if container:
            query.append(("container", container))
        try:
            text = kube.request(
                "GET",
                PODS,
                verb="get",
                namespace=namespace,
                name=pod,
                sub="log",
                query=query,
                raw=True,
            )
        except ClusterError:
            continue
        lines = str(text).splitlines()[-LOG_LINES:]
        if lines:
            return lines
    return []


def diagnose_pod(kube: Kube, namespace: str, summary: str, pod: str, container: str) -> Diagnosis:
    """Collect events and log lines for ``pod``; never raises a ClusterError."""
    notes: list[str] = []
    try:
        events = warning_events(kube, namespace, pod)
    except ClusterError as e:
        events = []
        notes.append(f"(events not available: {e.message})")
    log = last_log_lines(kube, namespace, pod, container) if pod else []
    return Diagnosis(summary, tuple(events), tuple(log), tuple(notes))
