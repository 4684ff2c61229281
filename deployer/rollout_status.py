"""Pure judgements on Deployment and Pod objects (plain dicts as the API returns them).

:func:`rollout_status` is ``kubectl rollout status`` exactly. :func:`deployment_problem`
and :func:`pod_problem` are what we add to fail before the progress deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "GRACE_SECONDS",
    "PodProblem",
    "Status",
    "condition",
    "deployment_problem",
    "pod_problem",
    "progress_line",
    "rollout_status",
    "template_without_hash",
]

GRACE_SECONDS = 15.0
_HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class Status:
    """Where a rollout stands after one observation of the Deployment."""

    state: Literal["waiting", "complete", "failed"]
    message: str


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The status condition of type ``kind``, if present."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def rollout_status(deployment: Mapping[str, Any]) -> Status:
    """Judge a Deployment exactly like ``kubectl rollout status`` (rules in order)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return Status("waiting", "Waiting for deployment spec update to be observed")
    progressing = condition(deployment, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Status("failed", f'deployment "{name}" exceeded its progress deadline')
    wanted = spec.get("replicas")
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if wanted is not None and updated < int(wanted):
        return Status("waiting", f"{updated} out of {wanted} new replicas have been updated")
    if replicas > updated:
        return Status("waiting", f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return Status("waiting", f"{available} of {updated} updated replicas are available")
    return Status("complete", f'deployment "{name}" successfully rolled out')


def progress_line(deployment: Mapping[str, Any]) -> str:
    """The counts a user wants to see change: ``2 of 3 updated replicas available``."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    old = max(0, int(status.get("replicas") or 0) - updated)
    line = f"{min(available, updated)} of {wanted} updated replicas available"
    if updated < wanted:
        line += f", {updated} of {wanted} updated"
    if old:
        line += f", {old} old pending termination"
    return line


def deployment_problem(deployment: Mapping[str, Any]) -> str | None:
    """A Deployment condition kubectl ignores but that will not heal by waiting.

    ``Progressing`` reason ``ReplicaSetCreateError`` (e.g. a quota refusing the new
    ReplicaSet): kubectl keeps waiting until the deadline; we fail at once.
    """
    progressing = condition(deployment, "Progressing")
    if progressing is not None and progressing.get("reason") == "ReplicaSetCreateError":
        return f"ReplicaSetCreateError: {progressing.get('message', '')}".strip()
    return None


@dataclass(frozen=True)
class PodProblem:
    """Something wrong with one pod of the new ReplicaSet.

    ``grace`` is how long the same problem must persist before the rollout is
    failed for it (0: at once).
    """

    pod: str
    container: str
    reason: str
    message: str
    grace: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.pod, self.container, self.reason)

    def line(self) -> str:
        where = f"pod {self.pod}" + (f", container {self.container}" if self.container else "")
        text = f"{where}: {self.reason}"
        return f"{text}: {self.message}" if self.message else text


# Waiting reasons that a retry will not fix, reported at once. The kubelet only
# says ImagePullBackOff after a pull has failed and it has backed off.
_PERMANENT = {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
# Waiting reasons that may clear by themselves: a registry hiccup, a ConfigMap or
# Secret applied in the same run arriving a moment later.
_TRANSIENT = {"ErrImagePull", "CreateContainerConfigError", "CreateContainerError"}


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """The first reason this pod will not become ready by waiting, with its grace.

    Policy (users fought flaky fail-fast, Skaffold #5210/#6912, so a single
    transient crash must not fail a deploy):

    - ``ImagePullBackOff``, ``InvalidImageName``, ``ErrImageNeverPull``: at once.
    - ``ErrImagePull``, ``CreateContainerConfigError``, ``CreateContainerError``:
      once the same reason has persisted for :data:`GRACE_SECONDS`.
    - ``CrashLoopBackOff`` (also after ``OOMKilled``): once the container has
      restarted at least twice, i.e. crashed again after the first back-off; a
      one-off crash (restartCount 1) is tolerated. A container that keeps
      crash-looping at restartCount 1 fails after :data:`GRACE_SECONDS`.
    - ``OOMKilled`` or ``Error`` termination with restarts >= 2: as a crash loop.
    - ``PodScheduled=False`` ``Unschedulable``: after 2 x :data:`GRACE_SECONDS`,
      as capacity freed by terminating old pods (or an autoscaler) may fix it.
    - Readiness that never passes is not judged here: it fails at the deadline
      with the pod's ``Unhealthy`` events as the diagnosis.
    """
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = str(meta.get("name", ""))
    if meta.get("deletionTimestamp"):
        return None
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for cs in statuses:
        container = str(cs.get("name", ""))
        state = cs.get("state") or {}
        restarts = int(cs.get("restartCount") or 0)
        waiting = state.get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        last = ((cs.get("lastState") or {}).get("terminated") or {}).get("reason") or ""
        if reason in _PERMANENT:
            return PodProblem(name, container, reason, message, 0.0)
        if reason in _TRANSIENT:
            return PodProblem(name, container, reason, message, GRACE_SECONDS)
        if reason == "CrashLoopBackOff":
            shown = f"{reason} (last exit: {last})" if last else reason
            detail = message or f"restarted {restarts} times"
            return PodProblem(
                name, container, shown, detail, 0.0 if restarts >= 2 else GRACE_SECONDS
            )
        terminated = state.get("terminated") or {}
        if terminated.get("reason") in ("OOMKilled", "Error") and restarts >= 2:
            code = terminated.get("exitCode")
            return PodProblem(
                name,
                container,
                str(terminated["reason"]),
                f"exit code {code}, {restarts} restarts",
                0.0,
            )
    scheduled = condition(pod, "PodScheduled")
    if (
        scheduled is not None
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        return PodProblem(
            name, "", "Unschedulable", str(scheduled.get("message") or ""), 2 * GRACE_SECONDS
        )
    return None


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A pod template with the ``pod-template-hash`` label removed (as kubectl compares)."""
    copy: dict[str, Any] = _deepcopy(template)
    labels = (copy.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(_HASH_LABEL, None)
    return copy


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value
