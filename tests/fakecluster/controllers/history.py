"""ControllerRevisions: the history of StatefulSets and DaemonSets (pkg/controller/history)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.meta import deep, meta, owned_by, owner_ref, short_hash

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["current_revision", "revisions", "template_patch", "truncate"]

Obj = dict[str, Any]
MANAGER = "kube-controller-manager"


def template_patch(obj: Mapping[str, Any]) -> Obj:
    """What a revision stores: the pod template as a strategic-merge "replace" patch."""
    template = deep(dict((obj.get("spec") or {}).get("template") or {}))
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def revisions(cluster: FakeCluster, owner: Mapping[str, Any]) -> list[Obj]:
    t = cluster.registry.of_kind("ControllerRevision")
    uid = meta(owner)["uid"]
    found = [r for r in cluster.store.list(t, meta(owner)["namespace"]) if owned_by(r, uid)]
    return sorted(found, key=lambda r: (int(r.get("revision") or 0), meta(r)["name"]))


def current_revision(cluster: FakeCluster, owner: Obj, hash_label: str) -> Obj:
    """The revision of ``owner``'s template: an equal one (its number raised to the top), or new."""
    store, t = cluster.store, cluster.registry.of_kind("ControllerRevision")
    history = revisions(cluster, owner)
    data = template_patch(owner)
    top = max((int(r.get("revision") or 0) for r in history), default=0)
    for rev in history:
        if rev.get("data") == data:
            if int(rev.get("revision") or 0) < top:
                body = deep(rev)
                body["revision"] = top + 1
                return store.update(t, body, manager=MANAGER)
            return rev
    collisions = int((owner.get("status") or {}).get("collisionCount") or 0)
    digest = short_hash([data, collisions], 10)
    labels = dict(
        ((owner.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    )
    labels[hash_label] = digest
    body = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{meta(owner)['name']}-{digest}",
            "namespace": meta(owner)["namespace"],
            "labels": labels,
            "ownerReferences": [owner_ref(owner)],
        },
        "data": data,
        "revision": top + 1,
    }
    return store.create(t, body, manager=MANAGER)


def truncate(cluster: FakeCluster, owner: Mapping[str, Any], keep: set[str]) -> None:
    """Delete revisions beyond ``revisionHistoryLimit`` that no pod and no status uses."""
    limit = int((owner.get("spec") or {}).get("revisionHistoryLimit", 10))
    old = [r for r in revisions(cluster, owner) if meta(r)["name"] not in keep]
    t = cluster.registry.of_kind("ControllerRevision")
    for rev in old[: max(0, len(old) - limit)]:
        cluster.store.delete(t, meta(rev)["namespace"], meta(rev)["name"])
