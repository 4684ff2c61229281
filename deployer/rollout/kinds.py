"""The workload kinds a rollout verifies, and what differs between them.

Each :class:`Kind` names its resource, where its history lives (ReplicaSets or
ControllerRevisions), its ``kubectl rollout status`` judge, and how to tell the
pods of its current template from the others — by the revision the controller
stamped on them, never by image (a template change that keeps the digest, or a
registry mirror that rewrites pods' images, would fool that):

- Deployment: the pods of the new ReplicaSet (the one whose template is the
  Deployment's, as the controller finds it), matched on ``pod-template-hash``;
- StatefulSet: ``controller-revision-hash == status.updateRevision``, once the
  controller has observed the current generation;
- DaemonSet (its status has no updateRevision): the hash of the ControllerRevision
  whose template is the DaemonSet's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deployer.cluster import (
    CONTROLLERREVISIONS,
    DAEMONSETS,
    DEPLOYMENTS,
    JOBS,
    REPLICASETS,
    ROLLOUTS,
    STATEFULSETS,
    Resource,
)
from deployer.rollout import argo_status
from deployer.rollout.status import (
    Status,
    daemonset_status,
    deployment_progress,
    deployment_status,
    job_status,
    on_delete,
    statefulset_status,
    template_without_hash,
)

__all__ = [
    "DAEMONSET",
    "DEPLOYMENT",
    "JOB",
    "KINDS",
    "ROLLOUT",
    "STATEFULSET",
    "Kind",
    "containers_of",
    "controlled_by",
    "images",
    "kind_named",
    "new_replicaset",
    "resource_version",
    "revision_hash",
    "template_of",
    "uid_of",
]

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION_HASH = "controller-revision-hash"


def template_of(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """``spec.template`` of a workload, ReplicaSet or Job (a ControllerRevision's too)."""
    if obj is None:
        return {}
    if "data" in obj and "revision" in obj:  # a ControllerRevision (list items have no kind)
        obj = obj.get("data") or {}
    return dict((obj.get("spec") or {}).get("template") or {})


def containers_of(template: Mapping[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    """The containers of a pod template (init containers first when ``init``)."""
    spec = template.get("spec") or {}
    found = list(spec.get("initContainers") or []) if init else []
    return found + list(spec.get("containers") or [])


def images(template: Mapping[str, Any]) -> dict[str, str]:
    """Container name → image for every (init) container of a template."""
    return {str(c.get("name")): str(c.get("image", "")) for c in containers_of(template)}


def uid_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference is the object with ``uid``."""
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def _status_progress(status: Callable[[Mapping[str, Any]], Status]) -> Callable[..., str]:
    return lambda obj: status(obj).message


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _observed(obj: Mapping[str, Any]) -> bool:
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    return int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation


def new_replicaset(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The Deployment's new ReplicaSet, as its controller finds it (FindNewReplicaSet).

    Owned by the Deployment, with its pod template (``pod-template-hash`` aside); the
    oldest such one when several are.
    """
    uid = uid_of(deployment)
    current = template_without_hash(template_of(deployment))
    found = [
        rs
        for rs in replicasets
        if controlled_by(rs, uid) and template_without_hash(template_of(rs)) == current
    ]
    found.sort(key=lambda rs: str((rs.get("metadata") or {}).get("creationTimestamp", "")))
    return found[0] if found else None


def revision_hash(daemonset: Mapping[str, Any], revisions: Iterable[Mapping[str, Any]]) -> str:
    """The ``controller-revision-hash`` of the DaemonSet's current template ("" if not seen yet)."""
    uid = uid_of(daemonset)
    current = template_without_hash(template_of(daemonset))
    for rev in revisions:
        if controlled_by(rev, uid) and template_without_hash(template_of(rev)) == current:
            return str(_labels(rev).get(REVISION_HASH, ""))
    return ""


@dataclass(frozen=True)
class Kind:
    """One workload kind."""

    name: str  # as in manifests: Deployment
    resource: Resource
    history: Resource  # where ``kubectl rollout undo`` finds the previous template
    judge_status: Callable[[Mapping[str, Any]], Status]
    progress: Callable[[Mapping[str, Any]], str]
    api_version: str = "apps/v1"  # as in manifests
    # Which of its pods run the current template, when a hash label says it better than
    # the images do (Argo Rollouts: ``rollouts-pod-template-hash`` = currentPodHash).
    current_pods: (
        Callable[[Mapping[str, Any], Iterable[Mapping[str, Any]]], list[Mapping[str, Any]]] | None
    ) = None
    custom: bool = False  # served through a CRD: no strategic merge patch
    undo_command: str = "kubectl rollout undo {lower}/{name} -n {namespace}"
    resume_command: str = "kubectl rollout resume {lower}/{name} -n {namespace}"

    @property
    def lower(self) -> str:
        return self.name.lower()

    def command(self, template: str, namespace: str, name: str) -> str:
        """``undo_command``/``resume_command`` for one object."""
        return template.format(lower=self.lower, name=name, namespace=namespace)

    def status(self, obj: Mapping[str, Any]) -> Status:
        """kubectl's judgement; OnDelete (kubectl errors) is reported, not waited for."""
        if self.history is CONTROLLERREVISIONS and on_delete(obj):
            return Status(
                "complete",
                "updateStrategy OnDelete: pods change only when deleted; not waited for",
            )
        return self.judge_status(obj)

    def owns_pod(
        self,
        obj: Mapping[str, Any],
        pod: Mapping[str, Any],
        history: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        """Whether ``pod`` belongs to workload ``obj`` (Deployments and Rollouts own through a
        ReplicaSet).

        For those, ``history`` (their ReplicaSets) makes this exact; without it the
        ReplicaSet's name (``<deployment>-<hash>``) decides.
        """
        if self.history is not REPLICASETS:
            return controlled_by(pod, uid_of(obj))
        owned = {uid_of(rs) for rs in history if controlled_by(rs, uid_of(obj))}
        name = str((obj.get("metadata") or {}).get("name", ""))
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
            if not ref.get("controller") or ref.get("kind") != "ReplicaSet":
                continue
            if owned:
                if ref.get("uid") in owned:
                    return True
            elif str(ref.get("name", "")).rpartition("-")[0] == name:
                return True
        return False

    def new_pods(
        self,
        obj: Mapping[str, Any],
        pods: Iterable[Mapping[str, Any]],
        history: Iterable[Mapping[str, Any]] = (),
    ) -> list[Mapping[str, Any]]:
        """The pods of ``obj``'s current revision (see the module docstring).

        ``history`` is the workload's ReplicaSets (Deployment) or ControllerRevisions
        (DaemonSet); without the one of the current template no pod is new yet.
        """
        history = list(history)
        if self.current_pods is not None:
            return self.current_pods(obj, [p for p in pods if self.owns_pod(obj, p, history)])
        if self.name == "Job":  # a Job's template cannot change: all its pods are current
            return [p for p in pods if controlled_by(p, uid_of(obj))]
        if self.name == "Deployment":
            rs = new_replicaset(obj, history)
            if rs is None:
                return []
            key, wanted = POD_TEMPLATE_HASH, _labels(rs).get(POD_TEMPLATE_HASH)
            owner = uid_of(rs)
        elif self.name == "StatefulSet":
            if not _observed(obj):
                return []
            key, wanted = REVISION_HASH, (obj.get("status") or {}).get("updateRevision")
            owner = uid_of(obj)
        else:
            key, wanted = REVISION_HASH, revision_hash(obj, history)
            owner = uid_of(obj)
        if not wanted:
            return []
        return [p for p in pods if controlled_by(p, owner) and _labels(p).get(key) == wanted]


DEPLOYMENT = Kind("Deployment", DEPLOYMENTS, REPLICASETS, deployment_status, deployment_progress)
STATEFULSET = Kind(
    "StatefulSet",
    STATEFULSETS,
    CONTROLLERREVISIONS,
    statefulset_status,
    _status_progress(statefulset_status),
)
DAEMONSET = Kind(
    "DaemonSet",
    DAEMONSETS,
    CONTROLLERREVISIONS,
    daemonset_status,
    _status_progress(daemonset_status),
)
ROLLOUT = Kind(
    "Rollout",
    ROLLOUTS,
    REPLICASETS,
    argo_status.rollout_status,
    argo_status.rollout_progress,
    "argoproj.io/v1alpha1",
    current_pods=argo_status.new_pods,
    custom=True,
    undo_command="kubectl argo rollouts undo {name} -n {namespace}",
    resume_command="kubectl argo rollouts promote {name} -n {namespace}",
)
KINDS: dict[str, Kind] = {k.lower: k for k in (DEPLOYMENT, STATEFULSET, DAEMONSET, ROLLOUT)}
# A migration Job: run to completion before the workloads, never undone (not in KINDS).
JOB = Kind("Job", JOBS, JOBS, job_status, _status_progress(job_status), "batch/v1")


def kind_named(api_version: str, kind: str) -> Kind | None:
    """The :class:`Kind` of a manifest, if it is a workload we verify (in :data:`KINDS`)."""
    found = KINDS.get(kind.lower())
    return found if found is not None and found.api_version == api_version else None
