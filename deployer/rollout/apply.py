"""The ``manifests`` input against the cluster: read, dry-run and apply each document.

All or nothing without a release store: before applying, each object is read,
so a failed run can put back what it found or delete what it created
(:mod:`~deployer.rollout.restore`). A Job that exists already is marked to be
replaced (:mod:`~deployer.rollout.migrate` deletes it, then runs the new one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.actions import ActionsIO
from deployer.cluster import Kube, Resource, Response, discover
from deployer.config import INPUTS
from deployer.errors import ClusterError, ConfigError, InputProblem
from deployer.manifests import Manifest

__all__ = ["FIELD_MANAGER", "FIRST_KINDS", "Applied", "ManifestSet", "delete", "read"]

FIELD_MANAGER = "deployer"
# Applied before everything else: what the other documents live in or are made of.
FIRST_KINDS = ("Namespace", "CustomResourceDefinition")


@dataclass
class Applied:
    """One manifest document and what the cluster held before the run."""

    manifest: Manifest
    resource: Resource | None  # None while its kind is served only after a CRD in the set
    namespace: str | None
    prior: dict[str, Any] | None = None  # None: absent (the run creates it)
    readable: bool = True  # False: could not read it, so it cannot be restored
    done: bool = False  # sent by this run (it may have changed the object)
    after: dict[str, Any] | None = None  # the object as our apply left it (its answer)
    restored: bool = False  # the rollback put it back (or tried to)
    replace: bool = False  # a Job of the same name exists: delete it, then create
    planned: dict[str, Any] | None = None  # the server's dry-run result of the apply

    @property
    def label(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.manifest.kind} {self.manifest.name}{where}"

    @property
    def is_job(self) -> bool:
        return self.manifest.kind == "Job" and self.manifest.api_version == "batch/v1"


def _replicas_owned_elsewhere(live: Mapping[str, Any]) -> bool:
    """Whether another manager (an HPA, through the scale subresource) owns spec.replicas."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {}).get("f:replicas")
        if (
            fields is not None
            and entry.get("manager") != FIELD_MANAGER
            and entry.get("subresource") == "scale"
        ):
            return True
    return False


class ManifestSet:
    """The run's manifests: checked, applied in order, and restorable."""

    def __init__(self, kube: Kube, io: ActionsIO, namespace: str, manifests: list[Manifest]):
        self.kube = kube
        self.io = io
        self.namespace = namespace
        self.items: list[Applied] = []
        self._discovered: dict[str, list[Any]] = {}
        namespaces = {m.name for m in manifests if m.kind == "Namespace"}
        kinds = {
            str(((m.doc.get("spec") or {}).get("names") or {}).get("kind", ""))
            for m in manifests
            if m.kind == "CustomResourceDefinition"
        }
        self._created_namespaces = namespaces
        self._created_kinds = kinds
        for m in manifests:
            try:
                resource: Resource | None = discover(kube, m.api_version, m.kind, self._discovered)
            except ClusterError:
                if m.kind not in kinds:
                    raise
                resource = None
            ns = m.namespace(namespace) if resource is None or resource.namespaced else None
            if ns is not None:
                m.doc["metadata"]["namespace"] = ns
            self.items.append(Applied(m, resource, ns))

    # -- check -----------------------------------------------------------------------

    def check(self) -> None:
        """Read what each object is now, and dry-run its apply (ConfigError if refused)."""
        problems: list[InputProblem] = []
        for item in self.items:
            if item.resource is None:
                continue  # its CRD is applied first in the same run
            if item.namespace in self._created_namespaces:
                exists = self.kube.request(
                    "GET",
                    Resource("", "v1", "namespaces", namespaced=False),
                    verb="get",
                    name=item.namespace,
                    expect=frozenset({403, 404}),
                )
                if isinstance(exists, Response):
                    continue  # its Namespace is applied first in the same run
            found = self.kube.request(
                "GET",
                item.resource,
                verb="get",
                namespace=item.namespace,
                name=item.manifest.name,
                expect=frozenset({403, 404}),
            )
            if isinstance(found, Response):
                item.prior, item.readable = None, found.status == 404
            else:
                item.prior = dict(found)
                if _replicas_owned_elsewhere(found):
                    spec = item.manifest.doc.get("spec") or {}
                    if spec.pop("replicas", None) is not None:
                        self.io.info(
                            f"{item.label}: spec.replicas left out of the apply: an autoscaler "
                            "owns it"
                        )
            answer = self._apply(item, dry_run=True)
            item.planned = None if isinstance(answer, Response) else dict(answer)
            # A Job runs on every run that applies it: one of the same name (Complete or
            # Failed from an earlier run, or with another template) is replaced.
            item.replace = item.is_job and item.prior is not None
            if isinstance(answer, Response):
                message = str(answer.body.get("message", answer.status))
                if item.replace and "immutable" in message:
                    continue
                problems.append(
                    InputProblem(
                        item.manifest.origin,
                        f"{item.manifest.source} ({item.manifest.kind} {item.manifest.name}) was "
                        f"refused by the API server: {message}",
                        INPUTS[item.manifest.origin][1],
                    )
                )
        if problems:
            raise ConfigError(problems)

    def _apply(self, item: Applied, *, dry_run: bool) -> Any:
        if item.resource is None:
            item.resource = discover(self.kube, item.manifest.api_version, item.manifest.kind, {})
        query: list[tuple[str, Any]] = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self.kube.request(
            "PATCH",
            item.resource,
            verb="patch",
            namespace=item.namespace,
            name=item.manifest.name,
            query=query,
            body=item.manifest.doc,
            content_type="application/apply-patch+yaml",
            expect=frozenset({400, 422}),
        )

    # -- change ----------------------------------------------------------------------

    def apply(self, item: Applied) -> dict[str, Any]:
        """Apply one document for real; it counts as changed from the moment it is sent."""
        item.done = True  # an answer lost on the way must not make the restore skip it
        answer = self._apply(item, dry_run=False)
        if isinstance(answer, Response):
            raise ClusterError(
                f"Applying {item.manifest.source} ({item.label}) was refused by the API "
                f"server: {answer.body.get('message', answer.status)}"
            )
        item.after = dict(answer)
        self.io.info(f"Applied {item.label} ({item.manifest.source})")
        return item.after


def read(kube: Kube, item: Applied) -> dict[str, Any] | None:
    """One GET of ``item``'s object as it is now; None when it does not exist."""
    assert item.resource is not None
    answer = kube.request(
        "GET",
        item.resource,
        verb="get",
        namespace=item.namespace,
        name=item.manifest.name,
        expect=frozenset({404}),
    )
    return None if isinstance(answer, Response) else dict(answer)


def delete(kube: Kube, item: Applied, *, propagation: str, uid: str = "") -> Any:
    """One DELETE of ``item``'s object; 404 and 409 (``uid`` precondition) are answers."""
    assert item.resource is not None
    body: dict[str, Any] = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": propagation,
    }
    if uid:
        body["preconditions"] = {"uid": uid}
    return kube.request(
        "DELETE",
        item.resource,
        verb="delete",
        namespace=item.namespace,
        name=item.manifest.name,
        body=body,
        expect=frozenset({404, 409}),
    )
