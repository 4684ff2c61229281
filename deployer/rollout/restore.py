"""Put back the objects the manifests changed: each as the run found it, or deleted.

Workloads are not restored here (the undo does that, like ``kubectl rollout undo``),
nor Jobs (a migration that ran cannot be undone). Returns one line per object for
the log and the summary: what was done, or why it was not.
"""

from __future__ import annotations

from collections.abc import Callable

from deployer.cluster import Response
from deployer.errors import AccessDenied, ClusterError
from deployer.rollout.apply import Applied, ManifestSet

__all__ = ["restore"]

_SERVER_FIELDS = ("managedFields", "generation", "creationTimestamp", "uid", "selfLink")


def restore(manifests: ManifestSet, skip: Callable[[Applied], bool]) -> list[str]:
    """Put back every applied object (newest first) but those ``skip`` handles."""
    lines = []
    for item in reversed(manifests.items):
        if not item.done or skip(item):
            continue
        try:
            lines.append(_restore(manifests, item))
        except (ClusterError, AccessDenied) as e:
            lines.append(f"{item.label}: not restored: {e.message}")
    return lines


def _restore(manifests: ManifestSet, item: Applied) -> str:
    assert item.resource is not None
    kube = manifests.kube
    if item.is_job:
        return f"{item.label}: left as is (a Job that ran cannot be undone)"
    if not item.readable:
        return f"{item.label}: not restored: the credentials may not read it"
    if item.prior is None:
        manifests.delete(item, wait=False)
        return f"{item.label}: deleted (created by this run)"
    ns, name = item.namespace, item.manifest.name
    live = kube.request(
        "GET", item.resource, verb="get", namespace=ns, name=name, expect=frozenset({404})
    )
    body = {k: v for k, v in item.prior.items() if k != "status"}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    if isinstance(live, Response):
        meta.pop("resourceVersion", None)
        body["metadata"] = meta
        kube.request("POST", item.resource, verb="create", namespace=item.namespace, body=body)
        return f"{item.label}: created again as it was"
    meta["resourceVersion"] = live["metadata"]["resourceVersion"]
    body["metadata"] = meta
    kube.request("PUT", item.resource, verb="update", namespace=ns, name=name, body=body)
    return f"{item.label}: restored to what it was before the run"
