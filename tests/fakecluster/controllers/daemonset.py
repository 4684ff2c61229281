"""The DaemonSet controller (pkg/controller/daemon): one pod per eligible node.

A node is eligible when it matches the template's ``nodeSelector`` and its taints are
tolerated. Pods are pinned with a required node affinity on ``metadata.name`` (the
scheduler binds them) and labelled ``controller-revision-hash`` (the revision's hash)
and ``pod-template-generation``. RollingUpdate replaces old pods node by node, at most
``maxUnavailable`` unavailable at a time (old pods that are not available go first, free);
with ``maxSurge`` the new pod starts before the old one goes. Status:
desiredNumberScheduled, currentNumberScheduled, numberReady, numberAvailable,
numberUnavailable, updatedNumberScheduled, numberMisscheduled, observedGeneration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers import history
from tests.fakecluster.controllers.events import record
from tests.fakecluster.controllers.pods import _tolerates
from tests.fakecluster.controllers.replicaset import active, available, pod_from_template, ready
from tests.fakecluster.errors import ApiError
from tests.fakecluster.meta import deep, int_or_percent, meta, owned_by

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]

Obj = dict[str, Any]
HASH = "controller-revision-hash"
MANAGER = "kube-controller-manager"
# Tolerations the DaemonSet controller adds to its pods.
_TOLERATIONS = [
    {"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": e}
    for k, e in (
        ("not-ready", "NoExecute"),
        ("unreachable", "NoExecute"),
        ("disk-pressure", "NoSchedule"),
        ("memory-pressure", "NoSchedule"),
        ("pid-pressure", "NoSchedule"),
        ("unschedulable", "NoSchedule"),
    )
]


def _node_of(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    terms = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""


def _eligible(ds: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    template = ds["spec"]["template"]
    selector = (template.get("spec") or {}).get("nodeSelector") or {}
    labels = meta(node).get("labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    probe = {
        "spec": {
            "tolerations": [*((template.get("spec") or {}).get("tolerations") or []), *_TOLERATIONS]
        }
    }
    return all(_tolerates(probe, t) for t in (node.get("spec") or {}).get("taints") or [])


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    store = cluster.store
    ds_t, pod_t = cluster.registry.of_kind("DaemonSet"), cluster.registry.of_kind("Pod")
    ds = store.get(ds_t, *key)
    if ds is None or meta(ds).get("deletionTimestamp"):
        return
    ds = deep(ds)
    revision = history.current_revision(cluster, ds, HASH)
    digest = str((meta(revision).get("labels") or {}).get(HASH))
    nodes = {meta(n)["name"]: n for n in store.list(cluster.registry.of_kind("Node"))}
    eligible = sorted(n for n, node in nodes.items() if _eligible(ds, node))
    uid = meta(ds)["uid"]
    pods = [p for p in store.list(pod_t, key[0]) if owned_by(p, uid)]
    by_node: dict[str, list[Obj]] = {}
    for pod in pods:
        by_node.setdefault(_node_of(pod), []).append(pod)
    now = cluster.clock.time()
    min_ready = int(ds["spec"].get("minReadySeconds") or 0)

    def new(pod: Mapping[str, Any]) -> bool:
        return (meta(pod).get("labels") or {}).get(HASH) == digest

    for node in eligible:
        live = [p for p in by_node.get(node, []) if active(p)]
        if not live and not [p for p in by_node.get(node, []) if meta(p).get("deletionTimestamp")]:
            _create(cluster, ds, revision, digest, node)
    for node, items in by_node.items():
        if node not in eligible:
            for pod in items:
                if not meta(pod).get("deletionTimestamp"):
                    store.delete(pod_t, key[0], meta(pod)["name"])
    strategy = ds["spec"].get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        most = int_or_percent(rolling.get("maxUnavailable", 1), len(eligible), True)
        surge = int_or_percent(rolling.get("maxSurge", 0), len(eligible), True)
        unavailable = sum(
            1
            for node in eligible
            if not any(active(p) and available(p, min_ready, now) for p in by_node.get(node, []))
        )
        budget = max(0, most - unavailable)
        for node in eligible:
            live = [p for p in by_node.get(node, []) if active(p)]
            old = [p for p in live if not new(p)]
            if not old:
                continue
            if surge and not any(new(p) for p in by_node.get(node, [])):
                _create(cluster, ds, revision, digest, node)
                continue
            if surge and not any(new(p) and available(p, min_ready, now) for p in live):
                continue
            stale_unavailable = [p for p in old if not available(p, min_ready, now)]
            if stale_unavailable or surge:
                victims = old
            elif budget > 0:
                budget -= 1
                victims = old
            else:
                continue
            for pod in victims:
                store.delete(pod_t, key[0], meta(pod)["name"])
    _write_status(cluster, ds, eligible, digest, min_ready)


def _create(cluster: FakeCluster, ds: Obj, revision: Obj, digest: str, node: str) -> None:
    template = deep(dict(((revision.get("data") or {}).get("spec") or {}).get("template") or {}))
    template.pop("$patch", None)
    pod = pod_from_template(ds, template)
    pod["metadata"]["labels"][HASH] = digest
    pod["metadata"]["labels"]["pod-template-generation"] = str(meta(ds).get("generation", 1))
    spec = pod["spec"]
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            }
        }
    }
    spec["tolerations"] = [*(spec.get("tolerations") or []), *_TOLERATIONS]
    name = meta(ds)["name"]
    try:
        created = cluster.store.create(
            cluster.registry.of_kind("Pod"),
            pod,
            manager=MANAGER,
            user="system:serviceaccount:kube-system:daemon-set-controller",
        )
    except ApiError as e:
        record(
            cluster,
            ds,
            "Warning",
            "FailedCreate",
            f"Error creating: {e.message}",
            "daemonset-controller",
        )
        cluster.controllers.backoff("daemonset", (meta(ds)["namespace"], name))
        return
    record(
        cluster,
        ds,
        "Normal",
        "SuccessfulCreate",
        f"Created pod: {meta(created)['name']}",
        "daemonset-controller",
    )


def _write_status(
    cluster: FakeCluster, ds: Obj, eligible: list[str], digest: str, min_ready: int
) -> None:
    store = cluster.store
    uid = meta(ds)["uid"]
    pods = [
        p
        for p in store.list(cluster.registry.of_kind("Pod"), meta(ds)["namespace"])
        if owned_by(p, uid) and active(p)
    ]
    now = cluster.clock.time()
    on: dict[str, list[Obj]] = {}
    for pod in pods:
        on.setdefault(_node_of(pod), []).append(pod)
    scheduled = [n for n in eligible if on.get(n)]
    status = deep(ds.get("status") or {})
    status.update(
        {
            "observedGeneration": meta(ds).get("generation", 1),
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": len([n for n in on if n not in eligible and n]),
            "numberReady": sum(1 for n in scheduled if any(ready(p) for p in on[n])),
            "numberAvailable": sum(
                1 for n in scheduled if any(available(p, min_ready, now) for p in on[n])
            ),
            "updatedNumberScheduled": sum(
                1
                for n in scheduled
                if any((meta(p).get("labels") or {}).get(HASH) == digest for p in on[n])
            ),
        }
    )
    status["numberUnavailable"] = len(eligible) - status["numberAvailable"]
    for field in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
        if status[field] == 0:
            del status[field]
    t = cluster.registry.of_kind("DaemonSet")
    live = store.get(t, meta(ds)["namespace"], meta(ds)["name"])
    if live is None or live.get("status") == status:
        return
    body = deep(live)
    body["status"] = status
    updated = store.update(t, body, manager=MANAGER, subresource="status")
    used = {digest} | {str((meta(p).get("labels") or {}).get(HASH)) for p in pods}
    keep = {
        meta(r)["name"]
        for r in history.revisions(cluster, updated)
        if (meta(r).get("labels") or {}).get(HASH) in used
    }
    history.truncate(cluster, updated, keep)
    if min_ready:
        cluster.controllers.requeue(
            "daemonset", (meta(ds)["namespace"], meta(ds)["name"]), min_ready
        )
