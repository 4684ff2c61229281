"""The garbage collector: dependents of deleted owners, Foreground and Orphan deletion.

- An object whose every ownerReference names an owner that is gone is deleted
  (Background: the owner went first).
- An owner deleted with ``propagationPolicy: Foreground`` carries the
  ``foregroundDeletion`` finalizer: its dependents are deleted (Foreground too),
  and once none with ``blockOwnerDeletion`` is left the finalizer is removed and
  the owner goes.
- ``Orphan`` (the ``orphan`` finalizer): the dependents lose their ownerReference
  to it, then the finalizer is removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakecluster.meta import deep, meta

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster
    from tests.fakecluster.resources import ResourceType

__all__ = ["sync"]

Obj = dict[str, Any]
MANAGER = "kube-controller-manager"


def _all(cluster: FakeCluster) -> list[tuple[ResourceType, Obj]]:
    found = []
    for t in list(cluster.registry.types.values()):
        if t.kind in ("Event", "SelfSubjectAccessReview"):
            continue
        found += [(t, o) for o in cluster.store.list(t)]
    return found


def _find_uid(cluster: FakeCluster, uid: str) -> tuple[ResourceType, Obj] | None:
    for t, obj in _all(cluster):
        if meta(obj).get("uid") == uid:
            return t, obj
    return None


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    """``key`` is (plural, uid) of an object that was deleted or is being deleted."""
    _plural, uid = key
    store = cluster.store
    owner = _find_uid(cluster, uid)
    dependents = [
        (t, o)
        for t, o in _all(cluster)
        if any(ref.get("uid") == uid for ref in meta(o).get("ownerReferences") or [])
    ]
    if owner is None:
        for t, obj in dependents:
            m = meta(obj)
            others = [r for r in m.get("ownerReferences") or [] if r.get("uid") != uid]
            if others and any(_find_uid(cluster, str(r.get("uid"))) for r in others):
                continue
            if not m.get("deletionTimestamp"):
                store.delete(t, m.get("namespace"), m["name"], propagation="Background")
        return
    t, obj = owner
    finalizers = list(meta(obj).get("finalizers") or [])
    if "orphan" in finalizers:
        for dt, dep in dependents:
            body = deep(dep)
            body["metadata"]["ownerReferences"] = [
                r for r in body["metadata"].get("ownerReferences") or [] if r.get("uid") != uid
            ]
            store.update(dt, body, manager=MANAGER)
        _drop_finalizer(cluster, t, obj, "orphan")
        return
    if "foregroundDeletion" in finalizers:
        blocking = []
        for dt, dep in dependents:
            m = meta(dep)
            if not m.get("deletionTimestamp"):
                store.delete(dt, m.get("namespace"), m["name"], propagation="Foreground")
            if store.get(dt, m.get("namespace"), m["name"]) is not None and any(
                r.get("uid") == uid and r.get("blockOwnerDeletion")
                for r in m.get("ownerReferences") or []
            ):
                blocking.append(dep)
        if not blocking:
            _drop_finalizer(cluster, t, obj, "foregroundDeletion")


def _drop_finalizer(cluster: FakeCluster, t: ResourceType, obj: Obj, name: str) -> None:
    current = cluster.store.get(t, meta(obj).get("namespace"), meta(obj)["name"])
    if current is None:
        return
    body = deep(current)
    body["metadata"]["finalizers"] = [
        f for f in body["metadata"].get("finalizers") or [] if f != name
    ]
    cluster.store.update(t, body, manager=MANAGER)
