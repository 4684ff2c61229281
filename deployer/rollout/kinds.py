"""The workload kinds a rollout verifies, and what differs between them.

Each :class:`Kind` names its resource, where its history lives (ReplicaSets or
ControllerRevisions), its ``kubectl rollout status`` judge, and how to tell the
pods of its current template from the others.
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
    STATEFULSETS,
    Resource,
)
from deployer.rollout.status import (
    Status,
    daemonset_status,
    deployment_progress,
    deployment_status,
    job_status,
    on_delete,
    statefulset_status,
)

__all__ = [
    "DAEMONSET",
    "DEPLOYMENT",
    "JOB",
    "KINDS",
    "STATEFULSET",
    "Kind",
    "containers_of",
    "controlled_by",
    "images",
    "kind_named",
    "template_of",
    "uid_of",
]


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


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference is the object with ``uid``."""
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def _status_progress(status: Callable[[Mapping[str, Any]], Status]) -> Callable[..., str]:
    return lambda obj: status(obj).message


@dataclass(frozen=True)
class Kind:
    """One workload kind."""

    name: str  # as in manifests: Deployment
    resource: Resource
    history: Resource  # where ``kubectl rollout undo`` finds the previous template
    judge_status: Callable[[Mapping[str, Any]], Status]
    progress: Callable[[Mapping[str, Any]], str]
    api_version: str = "apps/v1"  # as in manifests

    @property
    def lower(self) -> str:
        return self.name.lower()

    def status(self, obj: Mapping[str, Any]) -> Status:
        """kubectl's judgement; OnDelete (kubectl errors) is reported, not waited for."""
        if self.name != "Deployment" and on_delete(obj):
            return Status(
                "complete",
                "updateStrategy OnDelete: pods change only when deleted; not waited for",
            )
        return self.judge_status(obj)

    def owns_pod(self, obj: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
        """Whether ``pod`` belongs to workload ``obj`` (Deployments own through a ReplicaSet)."""
        if self.name != "Deployment":
            return controlled_by(pod, uid_of(obj))
        prefix = f"{(obj.get('metadata') or {}).get('name', '')}-"
        return any(
            ref.get("controller")
            and ref.get("kind") == "ReplicaSet"
            and str(ref.get("name", "")).startswith(prefix)
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
        )

    def new_pods(
        self, obj: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """The pods of ``obj`` that run its current template's images."""
        wanted = images(template_of(obj))
        found = []
        for pod in pods:
            if not self.owns_pod(obj, pod):
                continue
            running = {
                str(c.get("name")): str(c.get("image", ""))
                for c in containers_of({"spec": pod.get("spec") or {}})
            }
            if all(running.get(name) == image for name, image in wanted.items()):
                found.append(pod)
        return found


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
KINDS: dict[str, Kind] = {k.lower: k for k in (DEPLOYMENT, STATEFULSET, DAEMONSET)}
# A migration Job: run to completion before the workloads, never undone (not in KINDS).
JOB = Kind("Job", JOBS, JOBS, job_status, _status_progress(job_status), "batch/v1")


def kind_named(api_version: str, kind: str) -> Kind | None:
    """The :class:`Kind` of a manifest, if it is a workload we verify (in :data:`KINDS`)."""
    found = KINDS.get(kind.lower())
    return found if found is not None and found.api_version == api_version else None
