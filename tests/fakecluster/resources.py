"""The API resources the fake cluster serves, as discovery describes them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BUILTIN", "Registry", "ResourceType"]

_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One resource: where it is served, its kind, and the rules the apiserver applies."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    # Whether metadata.generation is kept (bumped when the spec changes).
    generation: bool = False
    # Whether an annotation change bumps generation too (Deployments: they are copied
    # to ReplicaSets).
    annotations_bump: bool = False
    verbs: tuple[str, ...] = _ALL
    short_names: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` (as the apiserver's messages name it)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def discovery(self) -> list[dict[str, object]]:
        entry: dict[str, object] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        found = [entry]
        for sub in self.subresources:
            verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
            kind = "Pod" if sub == "log" else ("Scale" if sub == "scale" else self.kind)
            found.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
        return found


def _t(group: str, plural: str, kind: str, **kw: object) -> ResourceType:
    version = "v1"
    return ResourceType(group, version, plural, kind, **kw)  # type: ignore[arg-type]


BUILTIN: tuple[ResourceType, ...] = (
    _t("", "namespaces", "Namespace", namespaced=False, subresources=("status",)),
    _t("", "nodes", "Node", namespaced=False, subresources=("status",)),
    _t("", "pods", "Pod", subresources=("status", "log")),
    _t("", "events", "Event"),
    _t("", "configmaps", "ConfigMap", short_names=("cm",)),
    _t("", "secrets", "Secret"),
    _t("", "services", "Service", subresources=("status",), short_names=("svc",)),
    _t("", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _t("", "resourcequotas", "ResourceQuota", subresources=("status",), short_names=("quota",)),
    _t("", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=("status",)),
    _t(
        "apps",
        "deployments",
        "Deployment",
        subresources=("status", "scale"),
        generation=True,
        annotations_bump=True,
        short_names=("deploy",),
    ),
    _t(
        "apps",
        "replicasets",
        "ReplicaSet",
        subresources=("status", "scale"),
        generation=True,
        short_names=("rs",),
    ),
    _t(
        "apps",
        "statefulsets",
        "StatefulSet",
        subresources=("status", "scale"),
        generation=True,
        short_names=("sts",),
    ),
    _t(
        "apps",
        "daemonsets",
        "DaemonSet",
        subresources=("status",),
        generation=True,
        short_names=("ds",),
    ),
    _t("apps", "controllerrevisions", "ControllerRevision"),
    _t("batch", "jobs", "Job", subresources=("status",), generation=True),
    _t("batch", "cronjobs", "CronJob", subresources=("status",), generation=True),
    _t("coordination.k8s.io", "leases", "Lease"),
    _t("rbac.authorization.k8s.io", "roles", "Role"),
    _t("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _t(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        namespaced=False,
        verbs=("create",),
    ),
    _t(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        subresources=("status",),
        generation=True,
        short_names=("crd",),
    ),
)


class Registry:
    """The resources served now (CRDs add theirs once Established)."""

    def __init__(self) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        for t in BUILTIN:
            self.add(t)

    def add(self, t: ResourceType) -> None:
        self.types[(t.group, t.version, t.plural)] = t

    def remove(self, group: str, version: str, plural: str) -> None:
        self.types.pop((group, version, plural), None)

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for t in self.types.values():
            if t.api_version == api_version and t.kind == kind:
                return t
        return None

    def of_kind(self, kind: str) -> ResourceType:
        """The resource of a built-in kind (for the fake's own helpers)."""
        for t in self.types.values():
            if t.kind == kind:
                return t
        raise KeyError(kind)

    def group_versions(self) -> dict[str, list[ResourceType]]:
        found: dict[str, list[ResourceType]] = {}
        for t in self.types.values():
            found.setdefault(t.api_version, []).append(t)
        return found
