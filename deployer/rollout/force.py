"""The StatefulSet "forced rollback" of the Kubernetes docs.

With ``podManagementPolicy: OrderedReady`` the controller waits for a pod that is
not Ready before it replaces anything, so a pod stuck on the broken revision
blocks its own replacement (kubernetes/kubernetes#67250; measured on the test
control plane: the undo stalls). After the undo, such pods are deleted once each
so the controller recreates them from the restored template.
"""

from __future__ import annotations

from deployer.cluster import PODS
from deployer.rollout.context import Context
from deployer.rollout.state import Workload
from deployer.rollout.status import condition

__all__ = ["force_stuck_pods"]


def force_stuck_pods(ctx: Context, w: Workload) -> None:
    """Delete, once each, the pods of ``w`` that are stuck on the failed revision."""
    live = w.live or {}
    if (live.get("spec") or {}).get("podManagementPolicy", "OrderedReady") != "OrderedReady":
        return
    current = set(map(id, w.kind.new_pods(live, w.pods.values(), w.history.values())))
    for name, pod in list(w.pods.items()):
        if name in w.deleted_pods or id(pod) in current or not w.kind.owns_pod(live, pod):
            continue
        ready = condition(pod, "Ready") or {}
        if ready.get("status") == "True" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        w.deleted_pods.add(name)
        ctx.io.info(f"{w.display}: deleting pod {name}, stuck on the failed revision")
        ctx.kube.request(
            "DELETE",
            PODS,
            verb="delete",
            namespace=w.namespace,
            name=name,
            expect=frozenset({404}),
        )
