"""Who may do what: everything (an admin) unless a test restricts it like a Role."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Authorizer", "Rule", "role_rules"]

ADMIN = "kubernetes-admin"


@dataclass(frozen=True)
class Rule:
    """One PolicyRule of a Role (``*`` matches anything)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()
    namespace: str | None = None  # None: any namespace (a ClusterRole's binding)

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        if "*" not in self.resources and resource not in self.resources:
            return False
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        return not self.resource_names or name in self.resource_names


def role_rules(
    source: str | Path | Iterable[Mapping[str, Any]], namespace: str | None = None
) -> list[Rule]:
    """The rules of a Role: a YAML file (its first Role) or a list of rule dicts."""
    if isinstance(source, str | Path):
        docs = list(yaml.safe_load_all(Path(source).read_text()))
        role = next(d for d in docs if d and d.get("kind") in ("Role", "ClusterRole"))
        items: Iterable[Mapping[str, Any]] = role.get("rules") or []
    else:
        items = source
    return [
        Rule(
            tuple(r.get("apiGroups") or ()),
            tuple(r.get("resources") or ()),
            tuple(r.get("verbs") or ()),
            tuple(r.get("resourceNames") or ()),
            namespace,
        )
        for r in items
    ]


class Authorizer:
    """RBAC's answer for one user: allowed unless denied, or only what rules allow."""

    def __init__(self) -> None:
        self.user = ADMIN
        self.rules: list[Rule] | None = None  # None: everything is allowed
        self.denied: list[Rule] = []

    def restrict(self, rules: Iterable[Rule], user: str) -> None:
        self.rules = list(rules)
        self.user = user

    def deny(self, verb: str, resource: str, group: str = "", namespace: str | None = None) -> None:
        self.denied.append(Rule((group,), (resource,), (verb,), (), namespace))

    def allowed(self, verb: str, group: str, resource: str, namespace: str, name: str = "") -> bool:
        if any(r.allows(verb, group, resource, namespace, name) for r in self.denied):
            return False
        if self.rules is None:
            return True
        return any(r.allows(verb, group, resource, namespace, name) for r in self.rules)

    def refusal(self, verb: str, group: str, resource: str, namespace: str) -> str:
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        return (
            f'User "{self.user}" cannot {verb} resource "{resource}" in API group "{group}"{where}'
        )
