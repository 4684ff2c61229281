"""Whether the credentials may do what the rollout needs, asked before anything changes.

Each right is a ``SelfSubjectAccessReview`` (open to every user): the API server
answers for exactly the verb, resource, namespace and name, so a missing right is
an error naming it instead of a 403 in the middle of a rollout.
"""

from __future__ import annotations

from deployer.actions import ActionsIO
from deployer.cluster import CANARIES, PODS, ROLLOUTS, SSAR, Kube, Resource, Response
from deployer.errors import AccessDenied
from deployer.rollout.kinds import ROLLOUT, STATEFULSET
from deployer.rollout.state import Workload

__all__ = ["check_access", "may"]


def may(
    kube: Kube, verb: str, resource: Resource, namespace: str, name: str = "", sub: str = ""
) -> bool | None:
    """Ask the API server (SelfSubjectAccessReview); None when it cannot say."""
    attributes = {"namespace": namespace, "verb": verb, "group": resource.group}
    attributes["resource"] = resource.plural
    if name:
        attributes["name"] = name
    if sub:
        attributes["subresource"] = sub
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    answer = kube.request("POST", SSAR, verb="create", body=body, expect=frozenset({403, 404}))
    if isinstance(answer, Response):
        return None
    return bool((answer.get("status") or {}).get("allowed"))


def _needed(workloads: list[Workload]) -> list[tuple[str, Resource, str, str]]:
    needed: list[tuple[str, Resource, str, str]] = []
    for ns, kind in dict.fromkeys((w.namespace, w.kind) for w in workloads):
        needed += [
            ("watch", kind.resource, ns, ""),
            ("list", kind.resource, ns, ""),  # a watch that expired is resumed by a list
            ("watch", kind.history, ns, ""),  # which pods are of the new revision
            ("list", kind.history, ns, ""),
        ]
    for ns in dict.fromkeys(w.namespace for w in workloads):
        needed += [("watch", PODS, ns, ""), ("list", PODS, ns, "")]
    for ns in dict.fromkeys(w.namespace for w in workloads if w.canary is not None):
        needed += [("watch", CANARIES, ns, ""), ("list", CANARIES, ns, "")]
    for w in workloads:
        if not w.from_manifest:  # a workloadRef Rollout's template is in its Deployment
            kind, name = (w.holder.kind, w.holder.name) if w.holder else (w.kind, w.name)
            needed.append(("patch", kind.resource, w.namespace, name))
    return needed


def check_access(kube: Kube, io: ActionsIO, workloads: list[Workload], rollback: bool) -> None:
    """Raise :class:`AccessDenied` for a right the deploy needs; warn for a useful one."""
    for verb, resource, ns, name in dict.fromkeys(_needed(workloads)):
        if may(kube, verb, resource, ns, name) is False:
            what = f"{verb} {resource.display}" + (f" {name}" if name else "")
            raise AccessDenied(
                f"The credentials may not {what} in namespace {ns} "
                "(denied by the API server's access review); the deploy needs it"
            )
    for w in workloads if rollback else ():
        if (
            w.kind is ROLLOUT
            and may(kube, "patch", ROLLOUTS, w.namespace, w.name, "status") is False
        ):
            io.warning(
                f"The credentials may not patch rollouts/status {w.name} in namespace "
                f"{w.namespace}: a rollback cannot abort the canary at once (kubectl argo "
                "rollouts abort); it only puts the template back",
                title="Rollback without abort",
            )
    stateful = dict.fromkeys(w.namespace for w in workloads if w.kind is STATEFULSET)
    for ns in stateful if rollback else ():
        if may(kube, "delete", PODS, ns) is False:  # not required: a warning
            io.warning(
                f"The credentials may not delete pods in namespace {ns}: a StatefulSet "
                "rollback that a pod stuck on the failed revision blocks cannot be forced "
                "(kubernetes/kubernetes#67250) and waits until the timeout",
                title="Rollback may stall",
            )
