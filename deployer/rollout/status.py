"""Pure judgements on workload and Pod objects (plain dicts as the API returns them).

:func:`deployment_status`, :func:`statefulset_status` and :func:`daemonset_status`
are ``kubectl rollout status`` exactly (kubectl's ``polymorphichelpers``), and
:func:`job_status` is the Job controller's own conditions. :func:`pod_problem` is
what we add to fail before a deadline, under a :class:`Policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "PodProblem",
    "Policy",
    "Status",
    "condition",
    "daemonset_status",
    "deployment_progress",
    "deployment_status",
    "job_status",
    "partition_pending",
    "pod_problem",
    "rollout_status",
    "statefulset_status",
    "template_without_hash",
]

# The labels controllers stamp on pods and ReplicaSets (Deployments; Argo Rollouts).
_HASH_LABELS = ("pod-template-hash", "rollouts-pod-template-hash")


@dataclass(frozen=True)
class Status:
    """Where a rollout stands after one observation of the workload."""

    state: Literal["waiting", "complete", "failed"]
    message: str
    observed: bool = True  # False while the controller has not seen the current spec
    # Waiting for someone to promote it (an Argo Rollouts pause step without a duration):
    # neither progress nor failure; ``on-pause`` decides.
    paused: bool = False


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The status condition of type ``kind``, if present."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _int(value: Any) -> int:
    return int(value or 0)


def deployment_status(deployment: Mapping[str, Any]) -> Status:
    """Judge a Deployment exactly like ``kubectl rollout status`` (rules in order)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "")
    if _int(meta.get("generation")) > _int(status.get("observedGeneration")):
        return Status("waiting", "Waiting for deployment spec update to be observed", False)
    progressing = condition(deployment, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Status("failed", f'deployment "{name}" exceeded its progress deadline')
    wanted = spec.get("replicas")
    updated = _int(status.get("updatedReplicas"))
    replicas = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if wanted is not None and updated < int(wanted):
        return Status("waiting", f"{updated} out of {wanted} new replicas have been updated")
    if replicas > updated:
        return Status("waiting", f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return Status("waiting", f"{available} of {updated} updated replicas are available")
    return Status("complete", f'deployment "{name}" successfully rolled out')


rollout_status = deployment_status  # the name the first generation used


def _strategy(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("spec") or {}).get("updateStrategy") or {}


def on_delete(obj: Mapping[str, Any]) -> bool:
    """A StatefulSet/DaemonSet whose pods change only when deleted (kubectl errors there)."""
    return str(_strategy(obj).get("type") or "RollingUpdate") != "RollingUpdate"


def statefulset_status(sts: Mapping[str, Any]) -> Status:
    """Judge a StatefulSet exactly like ``kubectl rollout status`` (RollingUpdate only)."""
    meta = sts.get("metadata") or {}
    spec = sts.get("spec") or {}
    status = sts.get("status") or {}
    observed = _int(status.get("observedGeneration"))
    if observed == 0 or _int(meta.get("generation")) > observed:
        return Status("waiting", "Waiting for statefulset spec update to be observed", False)
    replicas = spec.get("replicas")
    ready = _int(status.get("readyReplicas"))
    updated = _int(status.get("updatedReplicas"))
    if replicas is not None and ready < int(replicas):
        return Status("waiting", f"Waiting for {int(replicas) - ready} pods to be ready")
    rolling = _strategy(sts).get("rollingUpdate")
    if rolling is not None:
        partition = rolling.get("partition")
        if (
            replicas is not None
            and partition is not None
            and updated < int(replicas) - int(partition)
        ):
            return Status(
                "waiting",
                "Waiting for partitioned roll out to finish: "
                f"{updated} out of {int(replicas) - int(partition)} new pods have been updated",
            )
        return Status(
            "complete", f"partitioned roll out complete: {updated} new pods have been updated"
        )
    revision = status.get("updateRevision")
    if revision != status.get("currentRevision"):
        return Status(
            "waiting",
            "waiting for statefulset rolling update to complete "
            f"{updated} pods at revision {revision}",
        )
    current = _int(status.get("currentReplicas"))
    return Status(
        "complete", f"statefulset rolling update complete {current} pods at revision {revision}"
    )


def daemonset_status(ds: Mapping[str, Any]) -> Status:
    """Judge a DaemonSet exactly like ``kubectl rollout status`` (RollingUpdate only)."""
    meta = ds.get("metadata") or {}
    status = ds.get("status") or {}
    name = meta.get("name", "")
    if _int(meta.get("generation")) > _int(status.get("observedGeneration")):
        return Status("waiting", "Waiting for daemon set spec update to be observed", False)
    updated = _int(status.get("updatedNumberScheduled"))
    desired = _int(status.get("desiredNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < desired:
        return Status(
            "waiting",
            f'Waiting for daemon set "{name}" rollout to finish: '
            f"{updated} out of {desired} new pods have been updated",
        )
    if available < desired:
        return Status(
            "waiting",
            f'Waiting for daemon set "{name}" rollout to finish: '
            f"{available} of {desired} updated pods are available",
        )
    return Status("complete", f'daemon set "{name}" successfully rolled out')


def job_status(job: Mapping[str, Any]) -> Status:
    """A Job is done at ``Complete=True`` and failed at ``Failed=True``."""
    name = (job.get("metadata") or {}).get("name", "")
    for kind, state in (("Failed", "failed"), ("Complete", "complete")):
        cond = condition(job, kind)
        if cond is not None and cond.get("status") == "True":
            why = ": ".join(str(x) for x in (cond.get("reason"), cond.get("message")) if x)
            if state == "complete":
                return Status("complete", f'job "{name}" completed')
            return Status("failed", f'job "{name}" failed' + (f" ({why})" if why else ""))
    status = job.get("status") or {}
    return Status(
        "waiting",
        f"{_int(status.get('active'))} active, {_int(status.get('succeeded'))} succeeded, "
        f"{_int(status.get('failed'))} failed pods",
    )


def deployment_progress(deployment: Mapping[str, Any]) -> str:
    """The counts a user wants to see change: ``2 of 3 updated replicas available``."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = _int(status.get("updatedReplicas"))
    available = _int(status.get("availableReplicas"))
    old = max(0, _int(status.get("replicas")) - updated)
    line = f"{min(available, updated)} of {wanted} updated replicas available"
    if updated < wanted:
        line += f", {updated} of {wanted} updated"
    if old:
        line += f", {old} old pending termination"
    return line


progress_line = deployment_progress


@dataclass(frozen=True)
class Policy:
    """When a pod problem fails a rollout before its deadline.

    The defaults never fail a rollout the controller would complete in the usual
    ways: a few crashes while a sidecar or database comes up, a registry hiccup
    right after the push, an autoscaler adding a node. ``tolerate`` (the
    ``tolerate-failures-until-deadline`` input) turns pod fail-fast off entirely.
    """

    tolerate: bool = False
    on_pause: str = "wait"  # the on-pause input: "wait" | "succeed" (Argo Rollouts pauses)
    restarts: int = 3  # crashes tolerated per container; the next one in back-off fails
    pull_grace: float = 30.0  # kubelet pull back-off is 10 s, 20 s, ...: two retries
    config_grace: float = 15.0  # a ConfigMap/Secret applied in the same run arriving late
    unschedulable_grace: float = 120.0  # without a scale-up event; with one: the deadline
    replica_failure_grace: float = 10.0  # FailedCreate that terminating pods may clear


@dataclass(frozen=True)
class PodProblem:
    """Something wrong with one pod of the new revision.

    ``grace`` is how long the same problem must persist before the rollout is
    failed for it (0: at once; ``None``: never, only the deadline).
    """

    pod: str
    container: str
    reason: str
    message: str
    grace: float | None

    @property
    def key(self) -> tuple[str, str, str]:
        """What the grace is kept under: the same problem under another reason keeps it.

        The kubelet flips ErrImagePull ↔ ImagePullBackOff (and RegistryUnavailable ↔
        ImagePullBackOff) on every pull attempt; a crash shows as CrashLoopBackOff,
        then Error or OOMKilled.
        """
        reason = self.reason.split(" ", 1)[0]
        return (self.pod, self.container, _FAMILY.get(reason, reason))

    def line(self) -> str:
        where = f"pod {self.pod}" + (f", container {self.container}" if self.container else "")
        text = f"{where}: {self.reason}"
        return f"{text}: {self.message}" if self.message else text


_PERMANENT = {"InvalidImageName", "ErrImageNeverPull", "SignatureValidationFailed"}
# The kubelet's image errors that a retry may heal: a registry 5xx/429, a mirror
# behind our push, a registry that is down (RegistryUnavailable), an image store the
# runtime could not inspect (ImageInspectError).
_PULL = {"ImagePullBackOff", "ErrImagePull", "RegistryUnavailable", "ImageInspectError"}
_CONFIG = {"CreateContainerConfigError", "CreateContainerError"}
_FAMILY = {
    **dict.fromkeys(_PULL, "image-pull"),
    **dict.fromkeys(_CONFIG, "create-container"),
    **dict.fromkeys(("CrashLoopBackOff", "Error", "OOMKilled"), "crash"),
}


def pod_problem(pod: Mapping[str, Any], policy: Policy = Policy()) -> PodProblem | None:
    """The first reason this pod will not become ready by waiting, with its grace.

    - ``InvalidImageName``, ``ErrImageNeverPull``, ``SignatureValidationFailed``: at
      once (no retry fixes them).
    - ``ErrImagePull``/``ImagePullBackOff``/``RegistryUnavailable``/``ImageInspectError``:
      after ``pull_grace`` (a registry 5xx/429, a registry down for a moment or a
      mirror lagging behind our push heals on the kubelet's next pull), counted from
      the first of them: the kubelet's flips between them do not restart it.
    - ``CreateContainerConfigError``/``CreateContainerError``: after ``config_grace``.
    - ``CrashLoopBackOff``, or ``OOMKilled``/``Error`` termination: once the
      container has restarted more than ``restarts`` times.
    - ``PodScheduled=False`` ``Unschedulable``: after ``unschedulable_grace``
      (the caller makes it ``None`` when an autoscaler said a node is coming).
    - Readiness that never passes is left to the deadline (with its events).
    With ``tolerate`` every grace is ``None``: the problem is reported, never fatal.
    """
    found = _pod_problem(pod, policy)
    if found is not None and policy.tolerate:
        return PodProblem(found.pod, found.container, found.reason, found.message, None)
    return found


def _pod_problem(pod: Mapping[str, Any], policy: Policy) -> PodProblem | None:
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
        restarts = _int(cs.get("restartCount"))
        waiting = state.get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        last = ((cs.get("lastState") or {}).get("terminated") or {}).get("reason") or ""
        if reason in _PERMANENT:
            return PodProblem(name, container, reason, message, 0.0)
        if reason in _PULL:
            return PodProblem(name, container, reason, message, policy.pull_grace)
        if reason in _CONFIG:
            return PodProblem(name, container, reason, message, policy.config_grace)
        crashed = reason == "CrashLoopBackOff"
        terminated = state.get("terminated") or {}
        if not crashed and terminated.get("reason") in ("OOMKilled", "Error") and restarts:
            crashed, last = True, str(terminated["reason"])
            reason = last
        if crashed:
            shown = f"{reason} (last exit: {last})" if last and last != reason else reason
            detail = f"restarted {restarts} times" + (f"; {message}" if message else "")
            grace = 0.0 if restarts > policy.restarts else None
            return PodProblem(name, container, shown, detail, grace)
    scheduled = condition(pod, "PodScheduled")
    if (
        scheduled is not None
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        message = str(scheduled.get("message") or "")
        return PodProblem(name, "", "Unschedulable", message, policy.unschedulable_grace)
    return None


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A pod template without ``pod-template-hash`` (as kubectl compares templates).

    Argo Rollouts' ``rollouts-pod-template-hash`` goes too: its ReplicaSets carry it.
    """
    copy: dict[str, Any] = _deepcopy(template)
    copy.pop("$patch", None)
    meta = copy.get("metadata")
    if isinstance(meta, dict) and meta.get("creationTimestamp", "") is None:
        del meta["creationTimestamp"]  # serialized templates carry a null one
    labels = (copy.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        for label in _HASH_LABELS:
            labels.pop(label, None)
    return copy


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


def partition_pending(sts: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> list[str]:
    """Pods a partitioned StatefulSet's rollout covers that are not Ready at its revision.

    After an undo, ``updatedReplicas`` counts the pods below the partition (they
    never left the old revision), so kubectl's "partitioned roll out complete" comes
    while a canary pod still runs the undone revision: these are the pods to wait for.
    """
    if on_delete(sts):
        return []  # its pods change only when deleted: nothing to wait for
    rolling = _strategy(sts).get("rollingUpdate") or {}
    partition = _int(rolling.get("partition"))
    revision = str((sts.get("status") or {}).get("updateRevision") or "")
    name = str((sts.get("metadata") or {}).get("name", ""))
    replicas = _int((sts.get("spec") or {}).get("replicas", 1))
    current = set()
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        ready = (condition(pod, "Ready") or {}).get("status") == "True"
        gone = (pod.get("metadata") or {}).get("deletionTimestamp")
        if labels.get("controller-revision-hash") == revision and ready and not gone:
            current.add(str((pod.get("metadata") or {}).get("name", "")))
    # A pod being replaced is missing for a moment: it is pending too.
    return [f"{name}-{i}" for i in range(partition, replicas) if f"{name}-{i}" not in current]
