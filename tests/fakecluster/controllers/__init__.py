"""The controllers of the fake cluster: small rules per kind, run as virtual time passes.

:class:`Controllers` listens to every committed write and queues the keys that a
change concerns (a pod's owner, a ReplicaSet's Deployment, ...). The queue is
drained at the instant of the change, but only once the clients wait (the
clock's timers run when virtual time moves), so a client never sees a
controller's reaction inside its own request. A sync may ask to be run again
later (``requeue``): the progress deadline, ``minReadySeconds``, a retry after
``FailedCreate`` with the client-go rate limiter's 5 ms * 2^n back-off.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.fakecluster.meta import controller_of, meta
from tests.fakecluster.streams import Change

if TYPE_CHECKING:
    from tests.fakecluster.clock import Timer
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["Controllers"]

Key = tuple[str, str]  # (namespace, name)
_OWNED = {
    "ReplicaSet": "replicaset",
    "StatefulSet": "statefulset",
    "DaemonSet": "daemonset",
    "Job": "job",
    "Deployment": "deployment",
}
_MAX_SYNCS = 20_000


class Controllers:
    """The work queue of every controller, and who reacts to which change."""

    def __init__(self, cluster: FakeCluster) -> None:
        from tests.fakecluster.controllers import (
            daemonset,
            deployment,
            gc,
            job,
            namespace,
            pods,
            replicaset,
            statefulset,
        )

        self.cluster = cluster
        self.handlers: dict[str, Callable[[FakeCluster, Key], None]] = {
            "deployment": deployment.sync,
            "replicaset": replicaset.sync,
            "statefulset": statefulset.sync,
            "daemonset": daemonset.sync,
            "job": job.sync,
            "scheduler": pods.schedule,
            "kubelet": pods.kubelet,
            "gc": gc.sync,
            "namespace": namespace.sync,
        }
        self.disabled: set[str] = set()
        self.queue: collections.OrderedDict[tuple[str, Key], None] = collections.OrderedDict()
        self.failures: dict[tuple[str, Key], int] = {}
        self._drain: Timer | None = None
        self._later: dict[tuple[str, Key], Timer] = {}
        self.syncs = 0
        cluster.store.listeners.append(self.on_change)

    # -- queueing --------------------------------------------------------------------------

    def enqueue(self, name: str, key: Key) -> None:
        self.queue[(name, key)] = None
        if self._drain is None:
            self._drain = self.cluster.clock.call_later(0.0, self.drain, name="controllers")

    def requeue(self, name: str, key: Key, after: float) -> None:
        """Sync ``key`` again ``after`` virtual seconds from now (the earliest ask wins)."""
        item = (name, key)
        due = self.cluster.clock.elapsed + after
        current = self._later.get(item)
        if current is not None and not current.cancelled and current.due <= due:
            return
        if current is not None:
            current.cancel()
        self._later[item] = self.cluster.clock.call_later(
            after, lambda: self._due(item), name=f"{name} {key[0]}/{key[1]}"
        )

    def _due(self, item: tuple[str, Key]) -> None:
        self._later.pop(item, None)
        self.enqueue(*item)

    def backoff(self, name: str, key: Key) -> None:
        """Retry after a failure: client-go's per-item 5 ms * 2^n, at most 1000 s."""
        n = self.failures.get((name, key), 0)
        self.failures[(name, key)] = n + 1
        self.requeue(name, key, min(1000.0, 0.005 * 2**n))

    def forget(self, name: str, key: Key) -> None:
        self.failures.pop((name, key), None)

    def drain(self) -> None:
        self._drain = None
        for _ in range(_MAX_SYNCS):
            if not self.queue:
                return
            (name, key), _ = self.queue.popitem(last=False)
            if name in self.disabled:
                continue
            self.syncs += 1
            self.handlers[name](self.cluster, key)
        raise RuntimeError("the fake controllers keep changing objects (a loop between them?)")

    # -- routing ------------------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        obj, kind = change.obj, change.t.kind
        m = meta(obj)
        key = (m.get("namespace", ""), m.get("name", ""))
        if kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
            self.enqueue(_OWNED[kind], key)
        owner = controller_of(obj)
        if owner is not None and owner.get("kind") in _OWNED:
            self.enqueue(_OWNED[str(owner["kind"])], (key[0], str(owner.get("name", ""))))
        if kind == "Pod":
            self.enqueue("kubelet", key)
            if not (obj.get("spec") or {}).get("nodeName"):
                self.enqueue("scheduler", key)
        elif kind == "Node":
            for pod in self.cluster.store.list(self.cluster.registry.of_kind("Pod")):
                if not (pod.get("spec") or {}).get("nodeName"):
                    pm = pod["metadata"]
                    self.enqueue("scheduler", (pm["namespace"], pm["name"]))
            for ds in self.cluster.store.list(self.cluster.registry.of_kind("DaemonSet")):
                dm = ds["metadata"]
                self.enqueue("daemonset", (dm["namespace"], dm["name"]))
        elif kind == "Namespace":
            self.enqueue("namespace", ("", key[1]))
        if change.type == "DELETED" or m.get("deletionTimestamp"):
            self.enqueue("gc", (change.t.plural, m.get("uid", "")))
            for ref in m.get("ownerReferences") or []:  # an owner may wait for it (Foreground)
                self.enqueue("gc", ("", str(ref.get("uid", ""))))
