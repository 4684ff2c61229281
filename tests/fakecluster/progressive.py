"""Argo Rollouts and Flagger in the fake cluster: their resources, controllers and builders.

``install(cluster)`` serves ``rollouts``/``analysisruns``/``analysistemplates``
(argoproj.io/v1alpha1) and ``canaries`` (flagger.app/v1beta1) as CRDs would (no
strategic merge patch, ``status`` subresource, generation on spec changes) and runs
the small controllers of :mod:`tests.fakecluster.controllers.argo` and
:mod:`~tests.fakecluster.controllers.flagger` as the others run: on every change
that concerns them, once the clients wait.
"""

from __future__ import annotations

from typing import Any

from tests.fakecluster.cluster import FakeCluster
from tests.fakecluster.controllers import argo, flagger
from tests.fakecluster.meta import controller_of, meta
from tests.fakecluster.resources import ResourceType
from tests.fakecluster.streams import Change

__all__ = ["analysis_template", "canary", "install", "rollout"]

Obj = dict[str, Any]
TYPES = (
    ResourceType(
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "Rollout",
        subresources=("status", "scale"),
        generation=True,
        short_names=("ro",),
    ),
    ResourceType(
        "argoproj.io", "v1alpha1", "analysisruns", "AnalysisRun", subresources=("status",)
    ),
    ResourceType("argoproj.io", "v1alpha1", "analysistemplates", "AnalysisTemplate"),
    ResourceType(
        "flagger.app", "v1beta1", "canaries", "Canary", subresources=("status",), generation=True
    ),
)


def _route(cluster: FakeCluster, change: Change) -> None:
    """Who of the two controllers a change concerns (as their informers would see it)."""
    obj, kind = change.obj, change.t.kind
    ns, name = meta(obj).get("namespace", ""), meta(obj).get("name", "")
    queue = cluster.controllers
    owner = controller_of(obj) or {}
    if kind == "Rollout":
        queue.enqueue("argo-rollout", (ns, name))
    elif owner.get("kind") == "Rollout":
        queue.enqueue("argo-rollout", (ns, str(owner.get("name", ""))))
    elif kind == "Job" and owner.get("kind") == "AnalysisRun":
        run_t = cluster.registry.of_kind("AnalysisRun")
        run = cluster.store.get(run_t, ns, str(owner.get("name", "")))
        ro = controller_of(run or {}) or {}
        queue.enqueue("argo-rollout", (ns, str(ro.get("name", ""))))
    elif kind == "Canary":
        queue.enqueue("flagger", (ns, name))
    elif kind == "Deployment":
        for ro in cluster.store.list(cluster.registry.of_kind("Rollout"), ns):
            if ((ro.get("spec") or {}).get("workloadRef") or {}).get("name") == name:
                queue.enqueue("argo-rollout", (ns, meta(ro)["name"]))
        for c in cluster.store.list(cluster.registry.of_kind("Canary"), ns):
            if ((c.get("spec") or {}).get("targetRef") or {}).get("name") == name:
                queue.enqueue("flagger", (ns, meta(c)["name"]))


def install(cluster: FakeCluster) -> FakeCluster:
    """Serve the CRDs of Argo Rollouts and Flagger and run their (small) controllers."""
    for t in TYPES:
        cluster.registry.add(t)
    cluster.controllers.handlers["argo-rollout"] = argo.sync
    cluster.controllers.handlers["flagger"] = flagger.sync
    cluster.store.listeners.append(lambda change: _route(cluster, change))
    return cluster


def rollout(
    name: str,
    image: str,
    steps: list[Obj],
    *,
    replicas: int = 4,
    workload_ref: str = "",
) -> Obj:
    """A canary Rollout (no traffic routing); ``workload_ref`` names a Deployment instead
    of a template of its own."""
    labels = {"app": name}
    spec: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": labels},
        "strategy": {"canary": {"steps": steps}},
    }
    if workload_ref:
        spec["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload_ref}
    else:
        spec["template"] = {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": image}]},
        }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def analysis_template(name: str, image: str) -> Obj:
    """A ``job`` metric whose Job's pod succeeds or fails by ``image`` (``fail…``)."""
    pod = {"restartPolicy": "Never", "containers": [{"name": "check", "image": image}]}
    job = {"spec": {"backoffLimit": 0, "template": {"spec": pod}}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": [{"name": "check", "provider": {"job": job}}]},
    }


def canary(name: str, target: str, check: str = "/pass", interval: str = "10s") -> Obj:
    """A Canary with one webhook check (a URL ending in ``/fail`` fails it)."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "service": {"port": 80},
            "analysis": {
                "interval": interval,
                "threshold": 1,
                "iterations": 1,
                "webhooks": [{"name": "check", "url": f"http://checks.example{check}"}],
            },
        },
    }
