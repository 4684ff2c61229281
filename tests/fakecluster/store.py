"""The fake apiserver's storage: objects, one resourceVersion counter, history, watchers.

Every write goes through :meth:`Store.create`, :meth:`Store.update` or
:meth:`Store.delete`, which do what the apiserver's generic registry does:
defaults, validation, admission, ``resourceVersion`` preconditions (409),
``generation`` bumped on spec changes only, ``status`` written only through the
status subresource, finalizers and ``deletionTimestamp``, graceful deletion of
pods, and ``propagationPolicy`` (the garbage collector in
:mod:`tests.fakecluster.controllers.gc` does the rest). Each committed write gets
the next global ``resourceVersion`` and goes to the history (watches resume from
it until :meth:`Store.compact` drops it), to the open watches and to the
controllers' listeners.
"""

from __future__ import annotations

import builtins
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakecluster import schema
from tests.fakecluster.clock import FakeClock
from tests.fakecluster.errors import STALE, conflict, forbidden, not_found
from tests.fakecluster.meta import deep, rfc3339
from tests.fakecluster.patch import Path, changed_paths, field_paths, fields_tree
from tests.fakecluster.resources import Registry, ResourceType
from tests.fakecluster.streams import Change, Watcher

__all__ = ["Admission", "Store"]

Obj = dict[str, Any]
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
)


@dataclass
class Admission:
    """What an admission check sees (a test hook may raise :class:`ApiError`)."""

    operation: str  # CREATE | UPDATE | DELETE
    t: ResourceType
    obj: Obj
    old: Obj | None
    user: str
    store: Store


@dataclass
class _Owner:
    """One field manager's entry in ``managedFields``."""

    manager: str
    operation: str
    api_version: str
    time: str
    subresource: str = ""
    paths: set[Path] = field(default_factory=set)


class Store:
    """Objects by resource, namespace and name; see the module docstring."""

    def __init__(self, clock: FakeClock, registry: Registry, seed: int = 0) -> None:
        self.clock = clock
        self.lock = clock.lock
        self.registry = registry
        self.rng = random.Random(seed)
        self.rv = 1
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.history: list[Change] = []
        self.history_limit = 10_000
        self.compacted = 0  # a watch from a version at or below this gets 410 Gone
        self.watchers: list[Watcher] = []
        self.listeners: list[Callable[[Change], None]] = []
        # Admission: mutating checks see the object before its generated name is made
        # (so their messages say ``pods "web-5d8f-"``), validating ones after.
        self.mutating: list[Callable[[Admission], None]] = []
        self.validating: list[Callable[[Admission], None]] = []
        self.owners: dict[str, dict[tuple[str, str, str], _Owner]] = {}

    # -- reading ----------------------------------------------------------------------------

    @staticmethod
    def _key(t: ResourceType) -> tuple[str, str]:
        return (t.group, t.plural)

    def now(self) -> str:
        return rfc3339(self.clock.time())

    def get(self, t: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """The stored object itself (callers copy before handing it out)."""
        return self.objects.get(self._key(t), {}).get((namespace or "", name))

    def require(self, t: ResourceType, namespace: str | None, name: str) -> Obj:
        found = self.get(t, namespace, name)
        if found is None:
            raise not_found(t.group_resource, name)
        return found

    def list(self, t: ResourceType, namespace: str | None = None) -> list[Obj]:
        items = self.objects.get(self._key(t), {})
        found = [o for (ns, _), o in items.items() if namespace is None or ns == namespace]
        found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return found

    # -- writing ----------------------------------------------------------------------------

    def _uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def generate_name(self, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        return prefix + "".join(self.rng.choice(alphabet) for _ in range(5))

    def _check_namespace(self, t: ResourceType, obj: Obj, creating: bool) -> None:
        if not t.namespaced:
            return
        ns = obj["metadata"].get("namespace") or ""
        found = self.get(self.registry.of_kind("Namespace"), None, ns)
        if found is None:
            raise not_found("namespaces", ns)
        if creating and found["metadata"].get("deletionTimestamp"):
            raise forbidden(
                t.group_resource,
                obj["metadata"].get("name", ""),
                f"unable to create new content in namespace {ns} because it is being terminated",
            )

    def _admit(
        self,
        operation: str,
        t: ResourceType,
        obj: Obj,
        old: Obj | None,
        user: str,
        *,
        mutating: bool = False,
    ) -> None:
        for check in list(self.mutating if mutating else self.validating):
            check(Admission(operation, t, obj, old, user, self))

    def create(
        self,
        t: ResourceType,
        obj: Mapping[str, Any],
        *,
        manager: str = "unknown",
        user: str = "admin",
        dry_run: bool = False,
        keep_status: bool = False,
    ) -> Obj:
        """POST: a new object (409 AlreadyExists if the name is taken)."""
        new = deep(dict(obj))
        new["apiVersion"], new["kind"] = t.api_version, t.kind
        m = new.setdefault("metadata", {})
        for key in (*_SERVER_META, "resourceVersion"):
            m.pop(key, None)
        if not t.namespaced:
            m.pop("namespace", None)
        self._check_namespace(t, new, creating=True)
        self._admit("CREATE", t, new, None, user, mutating=True)
        if not m.get("name") and m.get("generateName"):
            m["name"] = self.generate_name(str(m["generateName"]))
        if self.get(t, m.get("namespace"), m.get("name", "")) is not None:
            from tests.fakecluster.errors import already_exists

            raise already_exists(t.group_resource, m.get("name", ""))
        m["uid"] = self._uid()
        if t.kind == "Job":
            _job_selector(new)
        if "status" in t.subresources and not keep_status and t.kind not in ("Node", "Namespace"):
            new["status"] = (
                {"phase": "Pending", "qosClass": "BestEffort"} if t.kind == "Pod" else {}
            )
        if t.kind == "Namespace":
            new.setdefault("status", {})["phase"] = "Active"
        schema.default(t, new)
        schema.validate(t, new, None)
        self._admit("CREATE", t, new, None, user)
        m["creationTimestamp"] = self.now()
        if t.generation:
            m["generation"] = 1
        if dry_run:
            return deep(new)
        paths = field_paths({k: v for k, v in new.items() if k != "status"})
        self._own(m["uid"], manager, "Update", t.api_version, "", paths)
        return deep(self._commit(t, "ADDED", new, None))

    def update(
        self,
        t: ResourceType,
        new: Mapping[str, Any],
        *,
        manager: str = "unknown",
        operation: str = "Update",
        subresource: str = "",
        user: str = "admin",
        dry_run: bool = False,
        applied_paths: set[Path] | None = None,
    ) -> Obj:
        """PUT (or the result of a PATCH): 409 when ``metadata.resourceVersion`` is stale."""
        m_new = dict(new.get("metadata") or {})
        name, ns = str(m_new.get("name", "")), m_new.get("namespace") if t.namespaced else None
        old = self.require(t, ns, name)
        wanted_rv = m_new.get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise conflict(t.group_resource, name, STALE)
        result = self._merge_update(t, old, new, subresource)
        if subresource != "status":
            schema.default(t, result)
            schema.validate(t, result, old)
        if _same(result, old):
            return deep(old)
        if subresource != "status":
            self._admit("UPDATE", t, result, old, user, mutating=True)
        self._admit("UPDATE", t, result, old, user)
        if t.generation and subresource != "status" and _spec_changed(t, old, result):
            result["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if dry_run:
            return deep(result)
        uid = old["metadata"]["uid"]
        if applied_paths is not None:
            self._own(
                uid, manager, "Apply", t.api_version, subresource, applied_paths, replace=True
            )
        else:
            changed = (
                changed_paths(old, result)
                if subresource != "status"
                else _status_paths(old, result)
            )
            self._own(uid, manager, operation, t.api_version, subresource, changed)
        m = result["metadata"]
        if (
            m.get("deletionTimestamp")
            and not m.get("finalizers")
            and (int(m.get("deletionGracePeriodSeconds") or 0) == 0)
        ):
            return deep(self._commit(t, "DELETED", result, old))
        return deep(self._commit(t, "MODIFIED", result, old))

    def _merge_update(
        self, t: ResourceType, old: Obj, new: Mapping[str, Any], subresource: str
    ) -> Obj:
        if subresource == "status":
            result = deep(old)
            result["status"] = deep(new.get("status") or {})
            if t.kind == "Deployment":  # its status strategy keeps only spec and labels
                annotations = (new.get("metadata") or {}).get("annotations")
                if annotations:
                    result["metadata"]["annotations"] = deep(annotations)
                else:
                    result["metadata"].pop("annotations", None)
            return result
        result = deep(dict(new))
        result["apiVersion"], result["kind"] = t.api_version, t.kind
        m = result.setdefault("metadata", {})
        for key in _SERVER_META:
            if key in old["metadata"]:
                m[key] = deep(old["metadata"][key])
            else:
                m.pop(key, None)
        m["resourceVersion"] = old["metadata"]["resourceVersion"]
        if "status" in t.subresources:
            if "status" in old:
                result["status"] = deep(old["status"])
            else:
                result.pop("status", None)
        return result

    def delete(
        self,
        t: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        grace: int | None = None,
        preconditions: Mapping[str, Any] | None = None,
        user: str = "admin",
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """DELETE: returns the object and whether it is gone (else pending: graceful/finalizers)."""
        old = self.require(t, namespace, name)
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise conflict(
                t.group_resource,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{old['metadata']['uid']}",
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(
                t.group_resource,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{old['metadata']['resourceVersion']}",
            )
        self._admit("DELETE", t, old, old, user)
        if dry_run:
            return deep(old), False
        policy = propagation or ("Orphan" if t.kind == "Job" else "Background")
        new = deep(old)
        m = new["metadata"]
        if t.kind == "Pod":
            pending = self._graceful(new, old, grace)
            if pending is not None:
                return pending, False
        elif t.kind == "Namespace" and (new.get("spec") or {}).get("finalizers"):
            if m.get("deletionTimestamp"):
                return deep(old), False
            m["deletionTimestamp"] = self.now()
            m["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            return deep(self._commit(t, "MODIFIED", new, old)), False
        elif not m.get("deletionTimestamp"):
            m["deletionGracePeriodSeconds"] = 0
        finalizers = list(m.get("finalizers") or [])
        if policy in ("Foreground", "Orphan") and not m.get("deletionTimestamp"):
            marker = "foregroundDeletion" if policy == "Foreground" else "orphan"
            if marker not in finalizers:
                finalizers.append(marker)
        if finalizers:
            m["finalizers"] = finalizers
            m.setdefault("deletionTimestamp", self.now())
            m.setdefault("deletionGracePeriodSeconds", 0)
            if _same(new, old):
                return deep(old), False
            return deep(self._commit(t, "MODIFIED", new, old)), False
        return deep(self._commit(t, "DELETED", new, old)), True

    def _graceful(self, pod: Obj, old: Obj, grace: int | None) -> Obj | None:
        """A pod's graceful deletion: Terminating until the kubelet confirms (grace 0).

        Returns the pod when it stays (Terminating), None when it goes now.
        """
        m = pod["metadata"]
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            grace = 0
        current = m.get("deletionGracePeriodSeconds")
        if grace > 0 and (current is None or grace < int(current)):
            m["deletionTimestamp"] = rfc3339(self.clock.time() + grace)
            m["deletionGracePeriodSeconds"] = grace
            return deep(self._commit(self.registry.of_kind("Pod"), "MODIFIED", pod, old))
        if grace > 0:
            return deep(old)  # already terminating, with a grace at least as short
        m["deletionGracePeriodSeconds"] = 0
        m.setdefault("deletionTimestamp", self.now())
        return None

    # -- commit, history, watches ---------------------------------------------------------------

    def _commit(self, t: ResourceType, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        m = obj["metadata"]
        m["resourceVersion"] = str(self.rv)
        uid = m.get("uid", "")
        m["managedFields"] = self._managed_fields(uid)
        items = self.objects.setdefault(self._key(t), {})
        key = (m.get("namespace", "") if t.namespaced else "", m["name"])
        if kind == "DELETED":
            items.pop(key, None)
            self.owners.pop(uid, None)
        else:
            items[key] = obj
        change = Change(self.rv, kind, t, deep(obj), deep(old) if old is not None else None)
        self.history.append(change)
        if len(self.history) > self.history_limit:
            dropped = self.history[: len(self.history) - self.history_limit]
            self.compacted = max(self.compacted, dropped[-1].rv)
            del self.history[: len(dropped)]
        for watcher in list(self.watchers):
            watcher.offer(change)
        for listener in list(self.listeners):
            listener(change)
        self.clock.notify()
        return obj

    def compact(self, rv: int | None = None) -> None:
        """Forget history up to ``rv`` (default: all): watches from before it get 410 Gone."""
        upto = self.rv if rv is None else rv
        self.compacted = max(self.compacted, upto)
        self.history = [c for c in self.history if c.rv > self.compacted]

    def changes_since(self, rv: int) -> Iterable[Change]:
        return [c for c in self.history if c.rv > rv]

    # -- managed fields -----------------------------------------------------------------------

    def _own(
        self,
        uid: str,
        manager: str,
        operation: str,
        api_version: str,
        subresource: str,
        paths: set[Path],
        *,
        replace: bool = False,
    ) -> None:
        entries = self.owners.setdefault(uid, {})
        key = (manager, operation, subresource)
        if paths:
            for other_key, other in entries.items():
                if other_key != key:
                    other.paths -= paths
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Owner(manager, operation, api_version, self.now(), subresource)
        if replace:
            entry.paths = set(paths)
        else:
            entry.paths |= paths
        entry.time = self.now()
        for other_key in [k for k, v in entries.items() if not v.paths and k != key]:
            del entries[other_key]

    def owned(self, uid: str) -> dict[tuple[str, str, str], set[Path]]:
        return {k: set(v.paths) for k, v in self.owners.get(uid, {}).items()}

    def _managed_fields(self, uid: str) -> builtins.list[Obj]:
        found = []
        for entry in self.owners.get(uid, {}).values():
            item: Obj = {
                "manager": entry.manager,
                "operation": entry.operation,
                "apiVersion": entry.api_version,
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_tree(entry.paths),
            }
            if entry.subresource:
                item["subresource"] = entry.subresource
            found.append(item)
        return found


def _strip(obj: Mapping[str, Any]) -> Obj:
    copy = deep(dict(obj))
    m = copy.get("metadata") or {}
    m.pop("managedFields", None)
    m.pop("resourceVersion", None)
    return copy


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return _strip(a) == _strip(b)


def _spec_changed(t: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    if t.annotations_bump and (old["metadata"].get("annotations") or {}) != (
        new["metadata"].get("annotations") or {}
    ):
        return True
    ignored = ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in old.items() if k not in ignored} != {
        k: v for k, v in new.items() if k not in ignored
    }


def _status_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[Path]:
    found: set[Path] = set()
    before, after = old.get("status") or {}, new.get("status") or {}
    for key in set(before) | set(after):
        if before.get(key) != after.get(key):
            found.add(("f:status", "f:" + key))
    return found


def _job_selector(job: Obj) -> None:
    """The Job strategy's generated selector and labels (unless ``manualSelector``)."""
    spec = job.setdefault("spec", {})
    if spec.get("manualSelector"):
        return
    m = job["metadata"]
    uid, name = m["uid"], m.get("name", "")
    labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
