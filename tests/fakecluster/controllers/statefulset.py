"""The StatefulSet controller (pkg/controller/statefulset), OrderedReady and Parallel.

Pods ``<set>-<ordinal>`` labelled ``controller-revision-hash`` (the revision's name),
``statefulset.kubernetes.io/pod-name`` and ``apps.kubernetes.io/pod-index``. Each sync:

1. creates missing pods in ordinal order (a new pod gets the update revision, or the
   current one below the partition), recreates failed ones; with OrderedReady it stops
   at the first pod that is not Running and Ready — including a pod stuck on a broken
   revision after an undo, which is why that undo never completes until someone
   deletes the pod (kubernetes/kubernetes#67250, the docs' "forced rollback");
2. deletes pods past ``replicas``, highest ordinal first;
3. RollingUpdate: deletes the highest-ordinal pod (down to the partition) that is not at
   the update revision, one at a time, waiting for each to be healthy again.

Status: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
currentRevision, updateRevision (the current one catches up when every pod is updated
and ready), observedGeneration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers import history
from tests.fakecluster.controllers.events import record
from tests.fakecluster.controllers.replicaset import available, pod_from_template, ready
from tests.fakecluster.errors import ApiError
from tests.fakecluster.meta import deep, meta, owned_by

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]

Obj = dict[str, Any]
HASH = "controller-revision-hash"
MANAGER = "kube-controller-manager"


def _ordinal(pod: Mapping[str, Any], name: str) -> int:
    suffix = meta(pod)["name"][len(name) + 1 :]
    return int(suffix) if suffix.isdigit() else -1


def _running_ready(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and ready(pod)


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def _template_of(revision: Mapping[str, Any]) -> Obj:
    template = deep(dict(((revision.get("data") or {}).get("spec") or {}).get("template") or {}))
    template.pop("$patch", None)
    return template


class _Sync:
    def __init__(self, cluster: FakeCluster, sts: Obj) -> None:
        self.cluster, self.sts = cluster, sts
        self.store = cluster.store
        self.pod_t = cluster.registry.of_kind("Pod")
        self.name, self.ns = meta(sts)["name"], meta(sts)["namespace"]
        spec = sts["spec"]
        self.replicas = int(spec.get("replicas", 1))
        self.strategy = spec.get("updateStrategy") or {}
        self.partition = int((self.strategy.get("rollingUpdate") or {}).get("partition") or 0)
        self.monotonic = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        self.update = history.current_revision(cluster, sts, "controller.kubernetes.io/hash")
        current_name = (sts.get("status") or {}).get("currentRevision")
        found = next(
            (r for r in history.revisions(cluster, sts) if meta(r)["name"] == current_name), None
        )
        self.current = found or self.update

    def pods(self) -> dict[int, Obj]:
        uid = meta(self.sts)["uid"]
        found = {}
        for pod in self.store.list(self.pod_t, self.ns):
            if owned_by(pod, uid) and _ordinal(pod, self.name) >= 0:
                found[_ordinal(pod, self.name)] = pod
        return found

    def create(self, ordinal: int) -> bool:
        below = (
            self.strategy.get("type", "RollingUpdate") == "RollingUpdate"
            and ordinal < self.partition
        )
        revision = self.current if below else self.update
        name = f"{self.name}-{ordinal}"
        pod = pod_from_template(self.sts, _template_of(revision), name)
        labels = pod["metadata"]["labels"]
        labels[HASH] = meta(revision)["name"]
        labels["statefulset.kubernetes.io/pod-name"] = name
        labels["apps.kubernetes.io/pod-index"] = str(ordinal)
        pod["spec"]["hostname"] = name
        if self.sts["spec"].get("serviceName"):
            pod["spec"]["subdomain"] = self.sts["spec"]["serviceName"]
        try:
            self.store.create(
                self.pod_t,
                pod,
                manager=MANAGER,
                user="system:serviceaccount:kube-system:statefulset-controller",
            )
        except ApiError as e:
            record(
                self.cluster,
                self.sts,
                "Warning",
                "FailedCreate",
                f"create Pod {name} in StatefulSet {self.name} failed error: {e.message}",
                "statefulset-controller",
            )
            self.cluster.controllers.backoff("statefulset", (self.ns, self.name))
            return False
        record(
            self.cluster,
            self.sts,
            "Normal",
            "SuccessfulCreate",
            f"create Pod {name} in StatefulSet {self.name} successful",
            "statefulset-controller",
        )
        return True

    def delete(self, pod: Obj) -> None:
        name = meta(pod)["name"]
        self.store.delete(self.pod_t, self.ns, name)
        record(
            self.cluster,
            self.sts,
            "Normal",
            "SuccessfulDelete",
            f"delete Pod {name} in StatefulSet {self.name} successful",
            "statefulset-controller",
        )

    def run(self) -> None:
        pods = self.pods()
        for ordinal in range(self.replicas):
            pod = pods.get(ordinal)
            if pod is None:
                if not self.create(ordinal) or self.monotonic:
                    return
                continue
            if (pod.get("status") or {}).get("phase") in (
                "Failed",
                "Succeeded",
            ) and not _terminating(pod):
                self.delete(pod)
                if self.monotonic:
                    return
                continue
            if self.monotonic and (_terminating(pod) or not _running_ready(pod)):
                return  # OrderedReady: no progress past a pod that is not Running and Ready
        for ordinal in sorted((o for o in pods if o >= self.replicas), reverse=True):
            pod = pods[ordinal]
            if not _terminating(pod):
                self.delete(pod)
            if self.monotonic:
                return
        if self.strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        for ordinal in range(self.replicas - 1, self.partition - 1, -1):
            pod = pods.get(ordinal)
            if pod is None:
                return
            if (meta(pod).get("labels") or {}).get(HASH) != meta(self.update)[
                "name"
            ] and not _terminating(pod):
                self.delete(pod)
                return
            if _terminating(pod) or not _running_ready(pod):
                return

    def write_status(self) -> None:
        pods = [p for p in self.pods().values()]
        now = self.cluster.clock.time()
        min_ready = int(self.sts["spec"].get("minReadySeconds") or 0)
        update, current = meta(self.update)["name"], meta(self.current)["name"]
        status = deep(self.sts.get("status") or {})
        status.update(
            {
                "observedGeneration": meta(self.sts).get("generation", 1),
                "replicas": len(pods),
                "readyReplicas": sum(1 for p in pods if _running_ready(p)),
                "availableReplicas": sum(1 for p in pods if available(p, min_ready, now)),
                "currentReplicas": sum(
                    1 for p in pods if (meta(p).get("labels") or {}).get(HASH) == current
                ),
                "updatedReplicas": sum(
                    1 for p in pods if (meta(p).get("labels") or {}).get(HASH) == update
                ),
                "currentRevision": current,
                "updateRevision": update,
                "collisionCount": int(status.get("collisionCount") or 0),
            }
        )
        if (
            self.strategy.get("type", "RollingUpdate") == "RollingUpdate"
            and status["updatedReplicas"] == status["replicas"] == self.replicas
            and status["readyReplicas"] == self.replicas
        ):
            status["currentRevision"] = update
            status["currentReplicas"] = status["updatedReplicas"]
        for field in ("readyReplicas", "availableReplicas", "currentReplicas", "updatedReplicas"):
            if status[field] == 0:
                del status[field]
        t = self.cluster.registry.of_kind("StatefulSet")
        live = self.store.get(t, self.ns, self.name)
        if live is None or live.get("status") == status:
            return
        body = deep(live)
        body["status"] = status
        self.sts = self.store.update(t, body, manager=MANAGER, subresource="status")
        used = {status["currentRevision"], status["updateRevision"]}
        used |= {str((meta(p).get("labels") or {}).get(HASH)) for p in pods}
        history.truncate(self.cluster, self.sts, used)


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    sts = cluster.store.get(cluster.registry.of_kind("StatefulSet"), *key)
    if sts is None or meta(sts).get("deletionTimestamp"):
        return
    s = _Sync(cluster, deep(sts))
    s.run()
    s.write_status()
    min_ready = int(s.sts["spec"].get("minReadySeconds") or 0)
    if min_ready:
        cluster.controllers.requeue("statefulset", key, min_ready)
