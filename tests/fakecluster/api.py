"""The fake apiserver's HTTP surface: the :class:`deployer.cluster.Transport` seam.

:class:`FakeTransport` answers ``send`` and ``open_stream`` the way kube-apiserver
answers the same request: discovery (``/api/v1``, ``/apis/<group>/<version>``),
get/list/watch/create/update/patch/delete/deletecollection with label and field
selectors, the status and scale subresources, ``pods/log`` (``tailLines``,
``limitBytes``, ``previous``, ``container``), ``SelfSubjectAccessReview``, the
patch types (JSON merge, strategic merge, JSON patch, server-side apply with
``fieldManager``/``force``), ``dryRun=All``, ``propagationPolicy`` and
``gracePeriodSeconds``. Errors are ``Status`` bodies with the apiserver's codes,
reasons and messages. Every request is recorded in ``cluster.requests``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import urllib3
import yaml

from tests.fakecluster.errors import ApiError, bad_request, conflict
from tests.fakecluster.meta import deep
from tests.fakecluster.patch import (
    PatchError,
    apply_merge,
    field_paths,
    json_patch,
    merge_patch,
    remove_path,
    strategic_merge,
)
from tests.fakecluster.resources import ResourceType
from tests.fakecluster.schema import check_namespace
from tests.fakecluster.selectors import SelectorError, field_matcher, label_matcher
from tests.fakecluster.streams import FakeStream, Watcher

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["FakeTransport", "Request"]

Obj = dict[str, Any]
DEFAULT_MANAGER = "OpenAPI-Generator"  # what the apiserver names the python client's writes


@dataclass
class Request:
    """One request the transport received (for tests to assert on)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: Any
    content_type: str | None
    at: float  # virtual seconds since the clock was made (when it arrived)
    status: int = 0  # the answer's status; 0: no answer (refused, timed out)

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)


@dataclass
class _Target:
    t: ResourceType
    namespace: str | None
    name: str
    sub: str


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _error(e: ApiError) -> tuple[int, bytes]:
    return e.code, _json(e.status())


class FakeTransport:
    """A :class:`deployer.cluster.Transport` whose server is a :class:`FakeCluster`."""

    host = "https://fake-cluster.invalid:6443"

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    # -- the seam ----------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        body: object,
        content_type: str | None,
        timeout: tuple[float, float],
    ) -> tuple[int, bytes]:
        cluster = self.cluster
        params = tuple((str(k), _param(v)) for k, v in query)
        wire = json.loads(json.dumps(body)) if body is not None else None
        cluster.clock.touch()
        with cluster.clock.lock:
            request = Request(method, path, params, wire, content_type, cluster.clock.elapsed)
            cluster.requests.append(request)
        cluster.faults.before_request(path, timeout)
        with cluster.clock.lock:
            answered = cluster.faults.answer(method, path)
            if answered is None:
                try:
                    answered = self._handle(method, path, dict(params), wire, content_type)
                except ApiError as e:
                    answered = _error(e)
            request.status = answered[0]
            return answered

    def open_stream(
        self, path: str, query: Sequence[tuple[str, Any]], timeout: tuple[float, float]
    ) -> FakeStream:
        cluster = self.cluster
        params = tuple((str(k), _param(v)) for k, v in query)
        cluster.clock.touch()
        with cluster.clock.lock:
            request = Request("GET", path, params, None, None, cluster.clock.elapsed)
            cluster.requests.append(request)
        cluster.faults.before_request(path, timeout)
        with cluster.clock.lock:
            stream = self._open(path, dict(params), timeout)
            request.status = stream.status
            return stream

    def _open(self, path: str, args: dict[str, str], timeout: tuple[float, float]) -> FakeStream:
        answered = self.cluster.faults.answer("GET", path)
        if answered is not None:
            return FakeStream(answered[0], answered[1])
        try:
            if args.get("watch") in ("true", "1"):
                return self._watch(path, args, timeout[1])
            status, data = self._handle("GET", path, args, None, None)
        except ApiError as e:
            status, data = _error(e)
        return FakeStream(status, data)

    # -- routing -------------------------------------------------------------------------------

    def _parse(self, path: str) -> tuple[str, str, list[str]]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            return "", parts[1], parts[2:]
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return parts[1], parts[2], parts[3:]
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _target(self, path: str) -> _Target:
        group, version, rest = self._parse(path)
        registry = self.cluster.registry
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rest[0] == "namespaces" and len(rest) >= 3:
            t = registry.find(group, version, rest[2])
            if t is not None and t.namespaced:
                return _Target(t, rest[1], rest[3] if len(rest) > 3 else "", "/".join(rest[4:]))
        t = registry.find(group, version, rest[0])
        if t is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Target(t, None, rest[1] if len(rest) > 1 else "", "/".join(rest[2:]))

    def _handle(
        self, method: str, path: str, args: dict[str, str], body: Any, content_type: str | None
    ) -> tuple[int, bytes]:
        discovered = self._discovery(path)
        if discovered is not None:
            return 200, _json(discovered)
        target = self._target(path)
        t, name, sub = target.t, target.name, target.sub
        verb = _verb(method, name, args)
        resource = f"{t.plural}/{sub}" if sub else t.plural
        if sub and sub not in t.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb not in t.verbs and not sub:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        self.cluster.authorize(verb, t.group, resource, target.namespace or "", name)
        handler = {
            "get": self._get,
            "list": self._list,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }[verb]
        return handler(target, args, body, content_type)

    def _discovery(self, path: str) -> Obj | None:
        parts = [p for p in path.strip("/").split("/") if p]
        registry = self.cluster.registry
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            groups: dict[str, list[str]] = {}
            for served in registry.group_versions():
                if "/" in served:
                    g, v = served.split("/")
                    groups.setdefault(g, []).append(v)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        gv: str | None = None
        if parts[:1] == ["api"] and len(parts) == 2:
            gv = parts[1]
        elif parts[:1] == ["apis"] and len(parts) == 3:
            gv = f"{parts[1]}/{parts[2]}"
        if gv is None:
            return None
        types = registry.group_versions().get(gv)
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": [entry for t in types for entry in t.discovery()],
        }

    # -- verbs -------------------------------------------------------------------------------------

    def _get(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        store = self.cluster.store
        if target.t.kind == "Pod" and target.sub == "log":
            text = self.cluster.pod_log(target.namespace or "", target.name, args)
            return 200, text.encode()
        obj = store.require(target.t, target.namespace, target.name)
        if target.sub == "scale":
            return 200, _json(_scale(target.t, obj))
        return 200, _json(deep(obj))

    def _list(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        t = target.t
        match = self._matcher(t, args)
        items = []
        for obj in self.cluster.store.list(t, target.namespace):
            if match(obj):
                item = deep(obj)
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        return 200, _json(
            {
                "kind": f"{t.kind}List",
                "apiVersion": t.api_version,
                "metadata": {"resourceVersion": str(self.cluster.store.rv)},
                "items": items,
            }
        )

    def _matcher(self, t: ResourceType, args: Mapping[str, str]) -> Any:
        try:
            labels = label_matcher(args.get("labelSelector", ""))
            fields = field_matcher(args.get("fieldSelector", ""), t.kind)
        except SelectorError as e:
            raise bad_request(str(e)) from None
        return lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)

    def _body(self, body: Any, ct: str | None) -> Obj:
        if isinstance(body, str | bytes):
            try:
                body = yaml.safe_load(body)
            except yaml.YAMLError as e:
                raise bad_request(f"the body of the request could not be decoded: {e}") from None
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        return body

    def _create(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        t = target.t
        if t.kind == "SelfSubjectAccessReview":
            return 201, _json(self.cluster.access_review(self._body(body, ct)))
        if target.name and t.kind == "Pod" and target.sub == "":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        obj = self._body(body, ct)
        check_namespace(obj, target.namespace)
        if target.namespace:
            obj.setdefault("metadata", {})["namespace"] = target.namespace
        created = self.cluster.store.create(
            t,
            obj,
            manager=args.get("fieldManager", DEFAULT_MANAGER),
            user=self.cluster.authz.user,
            dry_run=args.get("dryRun") == "All",
        )
        return 201, _json(created)

    def _update(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        obj = self._body(body, ct)
        check_namespace(obj, target.namespace)
        m = obj.setdefault("metadata", {})
        if m.get("name") and m["name"] != target.name:
            raise bad_request("the name of the object does not match the name on the URL")
        m["name"] = target.name
        if target.namespace:
            m["namespace"] = target.namespace
        if target.sub == "scale":
            return 200, _json(self._set_scale(target, obj, args))
        updated = self.cluster.store.update(
            target.t,
            obj,
            manager=args.get("fieldManager", DEFAULT_MANAGER),
            subresource=target.sub,
            user=self.cluster.authz.user,
            dry_run=args.get("dryRun") == "All",
        )
        return 200, _json(updated)

    def _patch(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        store, t = self.cluster.store, target.t
        kind = (ct or "").split(";")[0].strip()
        dry_run = args.get("dryRun") == "All"
        if kind == "application/apply-patch+yaml":
            return self._apply(target, args, body, dry_run)
        live = store.require(t, target.namespace, target.name)
        current = _scale(t, live) if target.sub == "scale" else deep(live)
        try:
            if kind == "application/json-patch+json":
                result = json_patch(current, body)
            elif kind == "application/merge-patch+json":
                result = merge_patch(current, body)
            elif kind == "application/strategic-merge-patch+json":
                if t.group not in (
                    "",
                    "apps",
                    "batch",
                    "coordination.k8s.io",
                    "rbac.authorization.k8s.io",
                    "apiextensions.k8s.io",
                ):
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources",
                    )
                result = strategic_merge(current, body)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml, application/strategic-merge-patch+json",
                )
        except PatchError as e:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {e}",
            ) from None
        if not isinstance(result, dict):
            raise bad_request("the patch does not result in an object")
        rv = (result.get("metadata") or {}).get("resourceVersion")
        if rv is not None and str(rv) != live["metadata"]["resourceVersion"]:
            raise conflict(
                t.group_resource,
                target.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if target.sub == "scale":
            return 200, _json(self._set_scale(target, result, args))
        m = result.setdefault("metadata", {})
        m["name"], m["resourceVersion"] = target.name, live["metadata"]["resourceVersion"]
        if target.namespace:
            m["namespace"] = target.namespace
        updated = store.update(
            t,
            result,
            manager=args.get("fieldManager", DEFAULT_MANAGER),
            subresource=target.sub,
            user=self.cluster.authz.user,
            dry_run=dry_run,
        )
        return 200, _json(updated)

    def _apply(
        self, target: _Target, args: dict[str, str], body: Any, dry_run: bool
    ) -> tuple[int, bytes]:
        """Server-side apply: merge the applied fields, drop those this manager no longer sets."""
        store, t = self.cluster.store, target.t
        manager = args.get("fieldManager")
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch",
            )
        applied = self._body(body, "application/apply-patch+yaml")
        m = applied.get("metadata") or {}
        if applied.get("kind") != t.kind or applied.get("apiVersion") != t.api_version:
            raise bad_request(
                f"the body's kind {applied.get('kind')} in {applied.get('apiVersion')} does not "
                f"match the request's {t.kind} in {t.api_version}"
            )
        if m.get("name") != target.name:
            raise bad_request("the name of the object does not match the name on the URL")
        check_namespace(applied, target.namespace)
        paths = field_paths(applied)
        live = store.get(t, target.namespace, target.name)
        if live is None:
            obj = deep(applied)
            if target.namespace:
                obj["metadata"]["namespace"] = target.namespace
            created = store.create(
                t, obj, manager=manager, user=self.cluster.authz.user, dry_run=dry_run
            )
            if not dry_run:
                store._own(
                    created["metadata"]["uid"],
                    manager,
                    "Apply",
                    t.api_version,
                    "",
                    paths,
                    replace=True,
                )
                for key in [
                    k for k in store.owners.get(created["metadata"]["uid"], {}) if k[1] != "Apply"
                ]:
                    store.owners[created["metadata"]["uid"]].pop(key, None)
                created = deep(store.require(t, target.namespace, target.name))
                created["metadata"]["managedFields"] = store._managed_fields(
                    created["metadata"]["uid"]
                )
            return 201, _json(created)
        owned = store.owned(live["metadata"]["uid"])
        previous = owned.get((manager, "Apply", ""), set())
        force = args.get("force") in ("true", "1")
        if not force:
            self._conflicts(t, target.name, live, applied, owned, manager, paths)
        result = apply_merge(deep(live), {k: v for k, v in applied.items() if k != "status"})
        others = set().union(*(p for k, p in owned.items() if k[0] != manager)) if owned else set()
        for path in sorted(previous - paths - others, key=len, reverse=True):
            remove_path(result, path)
        result["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        if m.get("resourceVersion"):
            result["metadata"]["resourceVersion"] = m["resourceVersion"]
        updated = store.update(
            t,
            result,
            manager=manager,
            user=self.cluster.authz.user,
            dry_run=dry_run,
            applied_paths=paths,
        )
        return 200, _json(updated)

    def _conflicts(
        self,
        t: ResourceType,
        name: str,
        live: Obj,
        applied: Obj,
        owned: Any,
        manager: str,
        paths: Any,
    ) -> None:
        from tests.fakecluster.patch import apply_merge as merged

        would = merged(deep(live), applied)
        found = []
        for (other, _op, _sub), their in owned.items():
            if other == manager:
                continue
            for path in paths & their:
                if _at(would, path) != _at(live, path):
                    found.append((other, path))
        if found:
            lines = "\n".join(
                f'- conflict with "{other}": .{".".join(p[2:] for p in path)}'
                for other, path in found
            )
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(found)} conflict{'s' if len(found) > 1 else ''}: {lines}",
            )

    def _delete(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        options = body if isinstance(body, dict) else {}
        propagation = options.get("propagationPolicy") or args.get("propagationPolicy")
        grace = options.get("gracePeriodSeconds", args.get("gracePeriodSeconds"))
        obj, gone = self.cluster.store.delete(
            target.t,
            target.namespace,
            target.name,
            propagation=propagation,
            grace=int(grace) if grace is not None else None,
            preconditions=options.get("preconditions"),
            user=self.cluster.authz.user,
            dry_run=args.get("dryRun") == "All" or options.get("dryRun") == ["All"],
        )
        if not gone or target.t.kind == "Pod":
            return 200, _json(obj)
        plural, _, group = target.t.group_resource.partition(".")
        details: Obj = {"name": target.name, "kind": plural, "uid": obj["metadata"]["uid"]}
        if group:
            details["group"] = group
        return 200, _json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
        )

    def _delete_collection(
        self, target: _Target, args: dict[str, str], body: Any, ct: str | None
    ) -> tuple[int, bytes]:
        match = self._matcher(target.t, args)
        for obj in list(self.cluster.store.list(target.t, target.namespace)):
            if match(obj):
                self.cluster.store.delete(
                    target.t, obj["metadata"].get("namespace"), obj["metadata"]["name"]
                )
        return self._list(target, args, body, ct)

    def _set_scale(self, target: _Target, scale: Obj, args: dict[str, str]) -> Obj:
        live = deep(self.cluster.store.require(target.t, target.namespace, target.name))
        live["spec"]["replicas"] = int((scale.get("spec") or {}).get("replicas", 0))
        updated = self.cluster.store.update(
            target.t,
            live,
            manager=args.get("fieldManager", DEFAULT_MANAGER),
            subresource="scale",
            user=self.cluster.authz.user,
        )
        return _scale(target.t, updated)

    # -- watch ---------------------------------------------------------------------------------

    def _watch(self, path: str, args: dict[str, str], read_timeout: float) -> FakeStream:
        cluster = self.cluster
        target = self._target(path)
        t = target.t
        resource = t.plural
        if not cluster.authz.allowed("watch", t.group, resource, target.namespace or ""):
            e = ApiError(
                403,
                "Forbidden",
                f"{t.group_resource} is forbidden: "
                + cluster.authz.refusal("watch", t.group, resource, target.namespace or ""),
            )
            return FakeStream(*_error(e))
        try:
            match = self._matcher(t, args)
        except ApiError as e:
            return FakeStream(*_error(e))
        store = cluster.store
        rv_text = args.get("resourceVersion", "")
        watcher = Watcher(
            cluster.clock,
            t,
            target.namespace,
            match,
            bookmarks=args.get("allowWatchBookmarks") in ("true", "1"),
            read_timeout=read_timeout,
            on_close=cluster.watch_closed,
        )
        if rv_text in ("", "0"):
            for obj in store.list(t, target.namespace):
                if match(obj):
                    watcher.push({"type": "ADDED", "object": deep(obj)})
        else:
            rv = int(rv_text)
            if rv < store.compacted:
                gone = ApiError(
                    410, "Expired", f"too old resource version: {rv} ({store.compacted + 1})"
                )
                if cluster.faults.gone_as_status:
                    return FakeStream(*_error(gone))
                watcher.push({"type": "ERROR", "object": gone.status()})
                watcher.ended = True
                return FakeStream(200, b"", watcher)
            for change in store.changes_since(rv):
                watcher.offer(change)
        store.watchers.append(watcher)
        cluster.watch_opened(watcher, int(args.get("timeoutSeconds") or 0))
        return FakeStream(200, b"", watcher)


def _verb(method: str, name: str, args: Mapping[str, str]) -> str:
    if method == "GET":
        return "get" if name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    raise ApiError(405, "MethodNotAllowed", f"method {method} is not allowed")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scale(t: ResourceType, obj: Mapping[str, Any]) -> Obj:
    m = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    text = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"],
            "namespace": m.get("namespace"),
            "uid": m["uid"],
            "resourceVersion": m["resourceVersion"],
            "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": text},
    }


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    node = obj
    for seg in path:
        if seg.startswith("f:") and isinstance(node, Mapping):
            node = node.get(seg[2:])
        elif seg.startswith("k:") and isinstance(node, list):
            wanted = json.loads(seg[2:])
            node = next(
                (
                    i
                    for i in node
                    if isinstance(i, Mapping) and all(i.get(k) == v for k, v in wanted.items())
                ),
                None,
            )
        else:
            return None
    return node


def connection_refused() -> OSError:
    return ConnectionRefusedError(111, "Connection refused")


def read_timeout(timeout: float) -> Exception:
    return urllib3.exceptions.ReadTimeoutError(
        None,  # type: ignore[arg-type]
        "fake-cluster",
        f"Read timed out. (read timeout={timeout})",
    )
