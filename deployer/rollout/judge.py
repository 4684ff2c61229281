"""The judge: one pure function from what was observed (and when) to a verdict.

``judge(snapshot, now, policy)`` never talks to the API and never reads a clock:
the stage builds a :class:`Snapshot` from its watches and passes the one clock's
``now``, so every rule here is unit-tested with plain dicts and numbers.

Rules, in order:

1. kubectl's own judgement of the kind (:meth:`Kind.status`). A
   ``ProgressDeadlineExceeded`` that was already there when we made our change
   is stale (an undo right after a timed-out rollout) and is not a failure.
2. A Deployment paused during the rollout fails: it would wait forever.
3. Unless failures are tolerated: a *new* ``ReplicaSetCreateError`` fails at
   once (it is written while ``observedGeneration`` still lags, so this does not
   wait for it), and a new ``ReplicaFailure`` (quota, PodSecurity, a missing
   ServiceAccount, a webhook) or a StatefulSet/DaemonSet ``FailedCreate`` event
   fails once it persisted ``replica_failure_grace``.
4. Problems of the pods running the current template (:func:`pod_problem`), each
   after its grace; an Unschedulable pod never fails while an autoscaler said a
   node is coming.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from deployer.rollout.kinds import DEPLOYMENT, Kind
from deployer.rollout.status import PodProblem, Policy, condition, pod_problem

__all__ = ["Snapshot", "Verdict", "baseline", "judge", "timed_out", "unready"]

Seen = dict[tuple[str, str, str], float]
_WORKLOAD = "(workload)"


def _fingerprint(cond: Mapping[str, Any]) -> str:
    keys = ("status", "reason", "message", "lastUpdateTime", "lastTransitionTime")
    return "|".join(str(cond.get(k, "")) for k in keys)


def baseline(obj: Mapping[str, Any] | None) -> dict[str, str]:
    """The workload's conditions at the moment of our change, to tell stale from new."""
    return {
        str(c.get("type")): _fingerprint(c)
        for c in ((obj or {}).get("status") or {}).get("conditions") or []
    }


@dataclass(frozen=True)
class Snapshot:
    """Everything the judge may look at for one workload."""

    kind: Kind
    obj: Mapping[str, Any]
    pods: tuple[Mapping[str, Any], ...] = ()
    baseline: Mapping[str, str] = field(default_factory=dict)
    seen: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    scale_up: bool = False  # a TriggeredScaleUp/Nominated event: a node is coming
    create_failure: str = ""  # a FailedCreate event of a StatefulSet/DaemonSet since our change


@dataclass(frozen=True)
class Verdict:
    """The judge's answer. ``seen`` is when each current problem was first seen."""

    state: Literal["waiting", "complete", "failed"]
    message: str
    progress: str
    seen: Seen
    problem: PodProblem | None = None
    pod: Mapping[str, Any] | None = None  # the pod to diagnose


def _fresh(s: Snapshot, kind: str) -> Mapping[str, Any] | None:
    cond = condition(s.obj, kind)
    if cond is None or s.baseline.get(kind) == _fingerprint(cond):
        return None
    return cond


def unready(s: Snapshot) -> Mapping[str, Any] | None:
    """The first pod of the current template that is not Ready."""
    for pod in s.kind.new_pods(s.obj, s.pods):
        ready = condition(pod, "Ready")
        if ready is None or ready.get("status") != "True":
            return pod
    return None


def judge(s: Snapshot, now: float, policy: Policy) -> Verdict:
    """The verdict on ``s`` at time ``now``; see the module docstring for the rules."""
    status = s.kind.status(s.obj)
    progress = s.kind.progress(s.obj) if status.observed else ""
    seen: Seen = {}

    def verdict(
        state: Literal["waiting", "complete", "failed"], message: str, **kw: Any
    ) -> Verdict:
        return Verdict(state, message, progress, seen, **kw)

    if status.state == "complete":
        return verdict("complete", status.message)
    if status.state == "failed":
        # A Deployment's ProgressDeadlineExceeded may be from before our change; a Job's
        # Failed is its own (a Job runs once: it is new each run).
        if s.kind is not DEPLOYMENT or _fresh(s, "Progressing") is not None:
            return verdict("failed", status.message, pod=unready(s))
        status = type(status)("waiting", "the progress deadline condition is from before")
    if s.kind is DEPLOYMENT and (s.obj.get("spec") or {}).get("paused"):
        name = (s.obj.get("metadata") or {}).get("name", "")
        return verdict(
            "failed",
            f"paused during the rollout; resume it (kubectl rollout resume deployment/{name})",
        )
    if not policy.tolerate:
        progressing = _fresh(s, "Progressing")
        if progressing is not None and progressing.get("reason") == "ReplicaSetCreateError":
            return verdict("failed", f"ReplicaSetCreateError: {progressing.get('message', '')}")
        failure = _fresh(s, "ReplicaFailure")
        text = ""
        if failure is not None and failure.get("status") == "True":
            text = f"{failure.get('reason') or 'ReplicaFailure'}: {failure.get('message', '')}"
        elif s.create_failure:
            text = f"FailedCreate: {s.create_failure}"
        if text:
            key = (_WORKLOAD, "", "ReplicaFailure")
            first = seen[key] = s.seen.get(key, now)
            if now - first >= policy.replica_failure_grace:
                return verdict("failed", text.strip())
    for pod in s.kind.new_pods(s.obj, s.pods):
        found = pod_problem(pod, policy)
        if found is None:
            continue
        grace = found.grace
        if found.reason == "Unschedulable" and s.scale_up:
            grace = None
        # A problem that went away and came back starts its grace again.
        first = seen[found.key] = s.seen.get(found.key, now)
        if grace is not None and now - first >= grace:
            return verdict("failed", found.line(), problem=found, pod=pod)
    return verdict("waiting", status.message)


def timed_out(s: Snapshot, spent: float) -> tuple[str, Mapping[str, Any] | None]:
    """The reason (and the pod to diagnose) when the deadline came first."""
    status = s.kind.status(s.obj)
    reason = f"not complete after {spent:.0f} s: {status.message}"
    pod = unready(s)
    if pod is not None:
        found = pod_problem(pod)
        ready = condition(pod, "Ready") or {}
        why = found.line() if found else ready.get("message") or ready.get("reason") or "not ready"
        reason += f"; pod {pod['metadata']['name']} never became ready ({why})"
    else:
        for kind in ("ReplicaFailure", "Progressing"):
            cond = condition(s.obj, kind) or {}
            if cond.get("message") and (kind == "ReplicaFailure" or not s.pods):
                reason += f"; {cond['message']}"
                break
        if s.create_failure:
            reason += f"; {s.create_failure}"
    return reason, pod
