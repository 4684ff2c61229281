"""Probes: reads that explain a stuck workload, which no watch delivers.

An autoscaler's ``TriggeredScaleUp``/``Nominated`` event for an Unschedulable pod
(then it is waited for), and a StatefulSet's or DaemonSet's ``FailedCreate`` event
when it has no pod of the new revision (quota, PodSecurity, a webhook). Each
workload is probed at most every :data:`PROBE_EVERY` seconds of the clock.
"""

from __future__ import annotations

from deployer.rollout.context import Context
from deployer.rollout.diagnose import create_failure, node_coming
from deployer.rollout.kinds import DEPLOYMENT
from deployer.rollout.state import Workload
from deployer.rollout.status import pod_problem

__all__ = ["PROBE_EVERY", "changed_at", "probe"]

PROBE_EVERY = 5.0  # seconds between event reads that explain a stuck workload


def changed_at(w: Workload) -> str:
    """The server's time of our last write to ``w`` (managedFields), for event filters."""
    times = [
        str(e.get("time", ""))
        for e in ((w.live or {}).get("metadata") or {}).get("managedFields") or []
        if e.get("manager") == "deployer" or e.get("operation") == "Update"
    ]
    return max(times) if times else ""


def probe(ctx: Context, w: Workload) -> None:
    """Read the events that explain a stuck workload, every few seconds at most."""
    now = ctx.now()
    if ctx.policy.tolerate or now - w.checked_events_at < PROBE_EVERY or w.live is None:
        return
    w.checked_events_at = now
    new = w.kind.new_pods(w.live, w.pods.values(), w.history.values())
    stuck = [p for p in new if (found := pod_problem(p)) and found.reason == "Unschedulable"]
    if stuck:
        w.scale_up = node_coming(ctx.kube, w.namespace, stuck[0])
    if w.kind is not DEPLOYMENT and not new:
        w.create_failure = create_failure(ctx.kube, w.namespace, w.kind.name, w.name, changed_at(w))
