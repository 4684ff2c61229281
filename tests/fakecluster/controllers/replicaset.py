"""The ReplicaSet controller: pods from the template, status, and ReplicaFailure.

Creates missing pods in slow-start batches (1, 2, 4, ...; the first failure
skips the rest), deletes surplus pods (unscheduled, pending, not ready and newest
first), records SuccessfulCreate/FailedCreate/SuccessfulDelete events, and writes
status: replicas (active pods: not terminal, not terminating), readyReplicas,
availableReplicas (Ready for ``minReadySeconds``) and the ReplicaFailure
condition on the ReplicaSet itself — set with the first error's message and left
as is while errors go on, removed at the first sync without one (replica_set_utils).
A failed create is retried with the controller's rate-limited back-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers.events import record
from tests.fakecluster.errors import ApiError
from tests.fakecluster.meta import condition, deep, meta, owned_by, owner_ref, parse_time

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["active", "available", "pod_from_template", "sync"]

Obj = dict[str, Any]
MANAGER = "kube-controller-manager"


def active(pod: Mapping[str, Any]) -> bool:
    """FilterActivePods: not Succeeded/Failed and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not meta(pod).get("deletionTimestamp")


def ready(pod: Mapping[str, Any]) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def available(pod: Mapping[str, Any], min_ready: int, now: float) -> bool:
    """Ready for at least ``min_ready`` seconds."""
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return False
    if min_ready <= 0:
        return True
    since = parse_time(str(cond.get("lastTransitionTime")))
    return since + min_ready <= now


def pod_from_template(owner: Mapping[str, Any], template: Mapping[str, Any], name: str = "") -> Obj:
    """GetPodFromTemplate: labels, annotations and finalizers of the template; the owner ref."""
    tm = template.get("metadata") or {}
    m: Obj = {
        "namespace": meta(owner)["namespace"],
        "labels": deep(tm.get("labels") or {}),
        "ownerReferences": [owner_ref(owner)],
    }
    if tm.get("annotations"):
        m["annotations"] = deep(tm["annotations"])
    if tm.get("finalizers"):
        m["finalizers"] = list(tm["finalizers"])
    if name:
        m["name"] = name
    else:
        m["generateName"] = f"{meta(owner)['name']}-"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": m,
        "spec": deep(template.get("spec") or {}),
    }


def _deletion_rank(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """Pods to delete first sort first (controller.ActivePods, simplified)."""
    status = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(str(status.get("phase")), 0)
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        phase_rank,
        1 if ready(pod) else 0,
        -restarts,
        # newer first
        tuple(-ord(ch) for ch in str(meta(pod).get("creationTimestamp", ""))),
    )


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    store = cluster.store
    rs_t, pod_t = cluster.registry.of_kind("ReplicaSet"), cluster.registry.of_kind("Pod")
    rs = store.get(rs_t, key[0], key[1])
    if rs is None or meta(rs).get("deletionTimestamp"):
        return
    rs = deep(rs)
    uid = meta(rs)["uid"]
    pods = [p for p in store.list(pod_t, key[0]) if owned_by(p, uid) and active(p)]
    wanted = int(rs["spec"].get("replicas") or 0)
    error = ""
    if len(pods) < wanted:
        error = _create(cluster, rs, wanted - len(pods))
    elif len(pods) > wanted:
        for pod in sorted(pods, key=_deletion_rank)[: len(pods) - wanted]:
            pm = meta(pod)
            store.delete(pod_t, pm["namespace"], pm["name"])
            record(
                cluster,
                rs,
                "Normal",
                "SuccessfulDelete",
                f"Deleted pod: {pm['name']}",
                "replicaset-controller",
            )
    if error:
        cluster.controllers.backoff("replicaset", key)
    else:
        cluster.controllers.forget("replicaset", key)
    owned = [p for p in store.list(pod_t, key[0]) if owned_by(p, uid)]
    _write_status(cluster, rs, owned, error)


def _create(cluster: FakeCluster, rs: Obj, missing: int) -> str:
    """Create ``missing`` pods in slow-start batches; the error text of the first failure."""
    store, pod_t = cluster.store, cluster.registry.of_kind("Pod")
    batch, made = 1, 0
    while made < missing:
        size = min(batch, missing - made)
        for _ in range(size):
            body = pod_from_template(rs, rs["spec"]["template"])
            try:
                pod = store.create(
                    pod_t,
                    body,
                    manager=MANAGER,
                    user="system:serviceaccount:kube-system:replicaset-controller",
                )
            except ApiError as e:
                record(
                    cluster,
                    rs,
                    "Warning",
                    "FailedCreate",
                    f"Error creating: {e.message}",
                    "replicaset-controller",
                )
                return e.message
            record(
                cluster,
                rs,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                "replicaset-controller",
            )
        made += size
        batch *= 2
    return ""


def _terminating(pod: Mapping[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return bool(meta(pod).get("deletionTimestamp")) and phase not in ("Succeeded", "Failed")


def _write_status(cluster: FakeCluster, rs: Obj, owned: list[Obj], error: str) -> None:
    store = cluster.store
    pods = [p for p in owned if active(p)]
    now = cluster.clock.time()
    min_ready = int(rs["spec"].get("minReadySeconds") or 0)
    labels = (rs["spec"]["template"].get("metadata") or {}).get("labels") or {}
    status = deep(rs.get("status") or {})
    status["replicas"] = len(pods)
    status["fullyLabeledReplicas"] = sum(
        1 for p in pods if all((meta(p).get("labels") or {}).get(k) == v for k, v in labels.items())
    )
    status["readyReplicas"] = sum(1 for p in pods if ready(p))
    status["availableReplicas"] = sum(1 for p in pods if available(p, min_ready, now))
    status["observedGeneration"] = meta(rs).get("generation", 1)
    status["terminatingReplicas"] = sum(1 for p in owned if _terminating(p))
    for field in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if status[field] == 0 and field != "replicas":
            del status[field]
    conditions = [c for c in status.get("conditions") or []]
    failure = condition(rs, "ReplicaFailure")
    if error and failure is None:
        wanted = int(rs["spec"].get("replicas") or 0)
        reason = "FailedCreate" if len(pods) < wanted else "FailedDelete"
        conditions.append(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "lastTransitionTime": store.now(),
                "reason": reason,
                "message": error,
            }
        )
    elif not error and failure is not None:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)
    if min_ready > 0:
        waiting = [
            parse_time(str((condition(p, "Ready") or {}).get("lastTransitionTime")))
            + min_ready
            - now
            for p in pods
            if ready(p) and not available(p, min_ready, now)
        ]
        if waiting:
            cluster.controllers.requeue(
                "replicaset",
                (meta(rs)["namespace"], meta(rs)["name"]),
                max(0.0, min(waiting)) + 0.001,
            )
    current = store.get(
        cluster.registry.of_kind("ReplicaSet"), meta(rs)["namespace"], meta(rs)["name"]
    )
    if current is None or current.get("status") == status:
        return
    body = deep(current)
    body["status"] = status
    store.update(
        cluster.registry.of_kind("ReplicaSet"), body, manager=MANAGER, subresource="status"
    )
