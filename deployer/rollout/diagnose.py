"""Why a workload is not coming up: the pod's problem, events and last log lines.

Events are the pod's Warning events, the Normal ones that explain a wait (an
autoscaler adding a node, a preemption), and the Warning events of the workload
and its ReplicaSet (FailedCreate: quota, PodSecurity, a missing ServiceAccount).
Logs are read bounded: ``limitBytes`` and ``tailLines`` on the request, and every
line cut to :data:`LINE_CHARS`.

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

__all__ = [
    "Diagnosis",
    "create_failure",
    "diagnose_pod",
    "node_coming",
    "object_events",
]

LOG_LINES = 20
LOG_BYTES = 64 * 1024
LINE_CHARS = 500
MAX_EVENTS = 8
# Normal events that explain a wait rather than report progress.
EXPLAINING = frozenset({"TriggeredScaleUp", "NotTriggerScaleUp", "Nominated", "Preempted"})
SCALE_UP = frozenset({"TriggeredScaleUp", "Nominated"})


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
            lines.append("Events:")
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


def _events(kube: Kube, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    listing = kube.request(
        "GET", EVENTS, verb="list", namespace=namespace, query=[("fieldSelector", selector)]
    )
    items = [dict(e) for e in listing.get("items") or []]
    items.sort(key=_event_time)
    return items


def _line(event: Mapping[str, Any], prefix: str = "") -> str:
    count = int(event.get("count") or (event.get("series") or {}).get("count") or 1)
    suffix = f" (x{count})" if count > 1 else ""
    text = f"{prefix}{event.get('reason', '')}: {event.get('message', '')}".strip() + suffix
    return text[:LINE_CHARS]


def warning_events(kube: Kube, namespace: str, pod: str) -> list[str]:
    """The pod's recent Warning events and the Normal ones that explain a wait."""
    items = [
        e
        for e in _events(kube, namespace, "Pod", pod)
        if e.get("type") == "Warning" or e.get("reason") in EXPLAINING
    ]
    return [_line(e) for e in items[-MAX_EVENTS:]]


def object_events(kube: Kube, namespace: str, kind: str, name: str, since: str = "") -> list[str]:
    """Warning events of a workload or ReplicaSet, as ``Kind name: Reason: message``.

    ``since`` (an RFC 3339 time of the server's) leaves out older ones.
    """
    items = [
        e
        for e in _events(kube, namespace, kind, name)
        if e.get("type") == "Warning" and _event_time(e) >= since
    ]
    return [_line(e, f"{kind} {name}: ") for e in items[-MAX_EVENTS:]]


def node_coming(kube: Kube, namespace: str, pod: Mapping[str, Any]) -> bool:
    """Whether an autoscaler or the scheduler said a node is coming for ``pod``."""
    if (pod.get("status") or {}).get("nominatedNodeName"):
        return True
    name = str((pod.get("metadata") or {}).get("name", ""))
    try:
        return any(e.get("reason") in SCALE_UP for e in _events(kube, namespace, "Pod", name))
    except ClusterError:
        return False


def create_failure(kube: Kube, namespace: str, kind: str, name: str, since: str) -> str:
    """The newest FailedCreate Warning of a StatefulSet/DaemonSet at or after ``since``."""
    try:
        items = _events(kube, namespace, kind, name)
    except ClusterError:
        return ""
    for event in reversed(items):
        if event.get("reason") == "FailedCreate" and _event_time(event) >= since:
            return str(event.get("message", ""))[:LINE_CHARS]
    return ""


def last_log_lines(kube: Kube, namespace: str, pod: str, container: str) -> list[str]:
    """The last :data:`LOG_LINES` lines the container wrote (previous run if it crashed)."""
    for previous in ("true", "false"):
        query: list[tuple[str, Any]] = [
            ("tailLines", LOG_LINES),
            ("limitBytes", LOG_BYTES),
            ("previous", previous),
        ]
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
        lines = [line[:LINE_CHARS] for line in str(text).splitlines()[-LOG_LINES:]]
        if lines:
            return lines
    return []


def diagnose_pod(
    kube: Kube,
    namespace: str,
    summary: str,
    pod: str,
    container: str,
    owners: tuple[tuple[str, str], ...] = (),
) -> Diagnosis:
    """Collect events and log lines for ``pod`` (and ``owners``' events); never raises."""
    notes: list[str] = []
    events: list[str] = []
    try:
        for kind, name in owners:
            events += object_events(kube, namespace, kind, name)
        if pod:
            events += warning_events(kube, namespace, pod)
    except ClusterError as e:
        notes.append(f"(events not available: {e.message})")
    log = last_log_lines(kube, namespace, pod, container) if pod else []
    return Diagnosis(summary, tuple(events), tuple(log), tuple(notes))
