"""The judge: one pure function from what was observed (and when) to a verdict.

``judge(snapshot, now, policy)`` never talks to the API and never reads a clock:
the stage builds a :class:`Snapshot` from its watches and passes the one clock's
``now``, so every rule here is unit-tested with plain dicts and numbers.

Rules, in order:

1. kubectl's own judgement of the kind (:meth:`Kind.status`). A
   ``ProgressDeadlineExceeded`` that was already there when we made our change
   is stale (an undo right after a timed-out rollout) and is not a failure.
2. A Deployment paused during the rollout fails: it would wait forever.
3. Unless failures are tolerated: a *new* ``ReplicaSetCreateError`` (the
   Deployment controller could not create the new ReplicaSet: a webhook timing
   out, a quota on ReplicaSets) and a create failure of the current revision's
   pods fail once they persisted ``replica_failure_grace`` (the controllers retry
   both). The create failure is the new ReplicaSet's own ``ReplicaFailure`` (the
   Deployment's copy keeps the message of an earlier failure with the same reason,
   ``SetDeploymentCondition``), else a new ``ReplicaFailure`` of the Deployment, or
   a StatefulSet/DaemonSet ``FailedCreate`` event. An exceeded quota is not a
   failure while a terminating pod of the workload may still be charged to it
   (``maxSurge: 0`` at a quota: the new pod fits once the old one is gone); once
   none is, the grace grows by as long as the wait was, since the ReplicaSet
   controller's back-off (5 ms, doubling) puts its next try up to that far out.
4. Problems of the pods of the current revision (:meth:`Kind.new_pods`,
   :func:`pod_problem`), each after its grace; an Unschedulable pod never fails
   while an autoscaler said a node is coming.
5. A pause that waits for a promotion (an Argo Rollouts pause step without a
   duration) ends the wait as ``paused`` with ``on-pause: succeed``; with ``wait``
   it waits, and the deadline says where it stopped.

Before all of these: while the stage knows the controller cannot have seen our
change yet (``Snapshot.pending``: a ``workloadRef`` Rollout whose Deployment we
patched), the workload is waiting, whatever its status says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from deployer.rollout.kinds import DEPLOYMENT, Kind, new_replicaset
from deployer.rollout.status import PodProblem, Policy, condition, pod_problem

__all__ = ["Snapshot", "Verdict", "baseline", "create_failure", "judge", "timed_out", "unready"]

Seen = dict[tuple[str, str, str], float]
_WORKLOAD = "(workload)"
_CREATE_ERROR = (_WORKLOAD, "", "ReplicaSetCreateError")
_CREATE_FAILURE = (_WORKLOAD, "", "ReplicaFailure")
_QUOTA_HELD = (_WORKLOAD, "", "quota-held")


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
    # The workload's ReplicaSets (Deployment) or ControllerRevisions (StatefulSet,
    # DaemonSet), as a watch on ``kind.history`` with its selector sees them.
    history: tuple[Mapping[str, Any], ...] = ()
    pending: str = ""  # why the controller cannot have seen our change yet ('' when it can)


@dataclass(frozen=True)
class Verdict:
    """The judge's answer. ``seen`` is when each current problem was first seen."""

    state: Literal["waiting", "complete", "failed", "paused"]
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
    for pod in s.kind.new_pods(s.obj, s.pods, s.history):
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
        state: Literal["waiting", "complete", "failed", "paused"], message: str, **kw: Any
    ) -> Verdict:
        return Verdict(state, message, progress, seen, **kw)

    if s.pending:
        return Verdict("waiting", s.pending, "", seen)
    if status.state == "complete":
        return verdict("complete", status.message)
    if status.state == "failed":
        # A Deployment's ProgressDeadlineExceeded may be from before our change; the other
        # judges (a Job's Failed: a Job runs once, it is new each run) are current.
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
        failed = _create_failed(s, now, policy, seen)
        if failed:
            return verdict("failed", failed)
    for pod in s.kind.new_pods(s.obj, s.pods, s.history):
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
    if status.paused and policy.on_pause == "succeed":
        return verdict("paused", status.message)
    return verdict("waiting", status.message)


def create_failure(s: Snapshot) -> str:
    """Why the current revision's pods cannot be created ("" if they can), as text."""
    if s.kind is DEPLOYMENT:
        rs = new_replicaset(s.obj, s.history)
        if rs is not None:  # its own condition, never the Deployment's copy of an old one
            cond = condition(rs, "ReplicaFailure")
            if cond is None or cond.get("status") != "True":
                return ""
            return f"{cond.get('reason') or 'ReplicaFailure'}: {cond.get('message', '')}".strip()
    failure = _fresh(s, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        return f"{failure.get('reason') or 'ReplicaFailure'}: {failure.get('message', '')}".strip()
    return f"FailedCreate: {s.create_failure}" if s.create_failure else ""


def _terminating_charged(s: Snapshot, now: float, seen: Seen) -> bool:
    """Whether a terminating pod of the workload may still count against a quota.

    A quota charges a terminating pod until ``deletionTimestamp`` + its grace
    (QuotaV1Pod), that is up to twice the grace after the delete; we count from when
    we first saw it terminating, so no clock of ours is compared with the server's.
    """
    charged = False
    for pod in s.pods:
        meta = pod.get("metadata") or {}
        if not meta.get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        key = (str(meta.get("name", "")), "", "Terminating")
        first = seen[key] = s.seen.get(key, now)
        if now - first <= 2 * float(meta.get("deletionGracePeriodSeconds") or 0):
            charged = True
    return charged


def _create_failed(s: Snapshot, now: float, policy: Policy, seen: Seen) -> str:
    """Rule 3: the failure text once a create problem outlasted its grace, else ""."""
    progressing = _fresh(s, "Progressing")
    if progressing is not None and progressing.get("reason") == "ReplicaSetCreateError":
        first = seen[_CREATE_ERROR] = s.seen.get(_CREATE_ERROR, now)
        if now - first >= policy.replica_failure_grace:
            return f"ReplicaSetCreateError: {progressing.get('message', '')}"
        return ""
    text = create_failure(s)
    if not text:
        return ""
    if "exceeded quota" in text and _terminating_charged(s, now, seen):
        seen[_QUOTA_HELD] = s.seen.get(_QUOTA_HELD, now)
        return ""
    first = seen[_CREATE_FAILURE] = s.seen.get(_CREATE_FAILURE, now)
    grace = policy.replica_failure_grace
    if _QUOTA_HELD in s.seen:
        held_since = seen[_QUOTA_HELD] = s.seen[_QUOTA_HELD]
        grace += first - held_since
    return text if now - first >= grace else ""


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
        failure = create_failure(s).partition(": ")[2]
        progressing = (condition(s.obj, "Progressing") or {}).get("message")
        if failure:
            reason += f"; {failure}"
        elif not s.pods and progressing:
            reason += f"; {progressing}"
    return reason, pod
