"""Builders for the objects tests seed the fake cluster with, and a readiness check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["configmap", "daemonset", "deployment", "job", "quota", "rolled_out", "statefulset"]

Obj = dict[str, Any]


def _workload(kind: str, name: str, image: str, namespace: str, spec: Mapping[str, Any]) -> Obj:
    body: Obj = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }
    pod_spec = dict(spec.get("pod") or {})
    body["spec"]["template"]["spec"].update(pod_spec)
    body["spec"].update({k: v for k, v in spec.items() if k != "pod"})
    return body


def deployment(
    name: str, image: str, *, namespace: str = "default", replicas: int = 2, **spec: Any
) -> Obj:
    """A Deployment of one container ``app`` (``pod={...}`` adds pod spec fields)."""
    return _workload("Deployment", name, image, namespace, {"replicas": replicas, **spec})


def statefulset(
    name: str, image: str, *, namespace: str = "default", replicas: int = 2, **spec: Any
) -> Obj:
    return _workload(
        "StatefulSet", name, image, namespace, {"replicas": replicas, "serviceName": name, **spec}
    )


def daemonset(name: str, image: str, *, namespace: str = "default", **spec: Any) -> Obj:
    return _workload("DaemonSet", name, image, namespace, spec)


def job(
    name: str, image: str, *, namespace: str = "default", restart: str = "Never", **spec: Any
) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": restart,
                    "containers": [{"name": "migrate", "image": image}],
                }
            },
            **spec,
        },
    }


def configmap(name: str, data: Mapping[str, str], *, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def quota(name: str, hard: Mapping[str, str], *, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hard": dict(hard)},
    }


def rolled_out(cluster: FakeCluster, kind: str, name: str, namespace: str = "default") -> bool:
    """Whether ``kubectl rollout status`` would say done (Deployments, StatefulSets, DaemonSets)."""
    from deployer.rollout.kinds import KINDS

    obj = cluster.get(kind, name, namespace)
    return obj is not None and KINDS[kind.lower()].status(obj).state == "complete"
