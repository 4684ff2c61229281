"""Namespaces: a ``default`` ServiceAccount when one is made; contents deleted when it goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.fakecluster.meta import deep, meta

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    store, registry = cluster.store, cluster.registry
    ns_t = registry.of_kind("Namespace")
    ns = store.get(ns_t, None, key[1])
    if ns is None:
        return
    name = meta(ns)["name"]
    if not meta(ns).get("deletionTimestamp"):
        sa_t = registry.of_kind("ServiceAccount")
        if store.get(sa_t, name, "default") is None:
            store.create(
                sa_t,
                {"metadata": {"name": "default", "namespace": name}},
                manager="kube-controller-manager",
            )
        return
    left = 0
    for t in list(registry.types.values()):
        if not t.namespaced:
            continue
        for obj in store.list(t, name):
            left += 1
            if not meta(obj).get("deletionTimestamp"):
                store.delete(t, name, meta(obj)["name"], propagation="Background", grace=0)
    if left == 0 and (ns.get("spec") or {}).get("finalizers"):
        body = deep(ns)
        body["spec"]["finalizers"] = []
        body["status"] = {"phase": "Terminating"}
        store.update(ns_t, body, manager="kube-controller-manager")
        store.delete(ns_t, None, name)
    elif left:
        cluster.controllers.requeue("namespace", ("", name), 1.0)
