"""The fake cluster: an apiserver, its controllers, a kubelet and a scheduler, in memory.

Build one per test::

    cluster = FakeCluster()                      # namespace "default", two nodes
    cluster.create(deployment("web", "registry.example/web@sha256:..."))
    cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 30)
    kube = make_kube(cluster, deadline=cluster.clock.monotonic() + 60)

Everything the product sees goes through :class:`~tests.fakecluster.api.FakeTransport`;
the helpers here are for tests (they act as the cluster admin and are not recorded
in :attr:`FakeCluster.requests`).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from deployer.clock import Clock
from deployer.cluster import Kube
from tests.fakecluster.api import FakeTransport, Request
from tests.fakecluster.authz import Authorizer, Rule, role_rules
from tests.fakecluster.clock import FakeClock
from tests.fakecluster.controllers import Controllers
from tests.fakecluster.controllers.events import record
from tests.fakecluster.errors import ApiError, bad_request, forbidden
from tests.fakecluster.faults import Faults
from tests.fakecluster.meta import deep, format_quantity, meta, parse_quantity
from tests.fakecluster.patch import json_patch, merge_patch, strategic_merge
from tests.fakecluster.resources import Registry, ResourceType
from tests.fakecluster.selectors import field_matcher, label_matcher
from tests.fakecluster.store import Admission, Store
from tests.fakecluster.streams import Watcher

__all__ = ["FakeCluster", "make_kube"]

Obj = dict[str, Any]
_POD_FIELDS = ("cpu", "memory")


class Autoscaler:
    """A cluster-autoscaler stand-in: off until a test enables it.

    When on, an Unschedulable pod gets a ``TriggeredScaleUp`` event and, ``delay``
    virtual seconds later, a node that fits it (labels from its ``nodeSelector`` and
    the ``fake.deployer.dev/pool=extra`` pool label).
    """

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.delay: float | None = None
        self.triggered: set[str] = set()
        self.nodes = 0

    def enable(self, delay: float = 60.0) -> None:
        self.delay = delay

    def unschedulable(self, pod: Mapping[str, Any]) -> None:
        uid = meta(pod)["uid"]
        if self.delay is None or uid in self.triggered:
            return
        self.triggered.add(uid)
        nodes = len(self.cluster.store.list(self.cluster.registry.of_kind("Node")))
        record(
            self.cluster,
            pod,
            "Normal",
            "TriggeredScaleUp",
            f"pod triggered scale-up: [{{extra {nodes}->{nodes + 1} (max: 10)}}]",
            "cluster-autoscaler",
        )
        labels = dict((pod.get("spec") or {}).get("nodeSelector") or {})
        self.nodes += 1
        name = f"extra-node-{self.nodes}"
        self.cluster.clock.call_later(
            self.delay,
            lambda: self._add(name, labels),
            name="autoscaler",
        )

    def _add(self, name: str, labels: Mapping[str, str]) -> None:
        self.cluster.add_node(name, labels={**labels, "fake.deployer.dev/pool": "extra"})


class FakeCluster:
    """See the module docstring; the knobs below are the kubelet's and the apiserver's."""

    def __init__(self, *, seed: int = 0, nodes: int = 2, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.registry = Registry()
        self.store = Store(self.clock, self.registry, seed)
        self.authz = Authorizer()
        self.faults = Faults(self)
        self.requests: list[Request] = []
        self.logs: dict[tuple[str, str, str, bool], str] = {}
        self.event_seq = 0
        self.pod_ips = 0
        self.kubelet_runs: dict[str, Any] = {}
        self.job_backoff: dict[str, tuple[int, float]] = {}
        # The kubelet: a pod's containers get their fate this long after it is bound...
        self.ready_delay = 1.0
        # ... a crashing container runs this long before it exits ...
        self.crash_after = 1.0
        # ... back-off of image pulls and crash loops (first, cap) ...
        self.backoff = (10.0, 300.0)
        # ... and a pod being deleted stops after min(its grace, this).
        self.stop_seconds = 1.0
        self.bookmark_interval = 60.0
        self.autoscaler = Autoscaler(self)
        self.controllers = Controllers(self)
        self.store.mutating.append(_service_account)
        self.store.validating.append(_quota)
        self.transport = FakeTransport(self)
        with self.clock.lock:
            for ns in ("default", "kube-system"):
                self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            for n in range(nodes):
                self.add_node(f"kwok-node-{n}")
            self.clock.run_due()

    # -- for the transport ---------------------------------------------------------------

    def authorize(self, verb: str, group: str, resource: str, namespace: str, name: str) -> None:
        if resource == "selfsubjectaccessreviews":
            return
        if self.authz.allowed(verb, group, resource, namespace, name):
            return
        plural = resource.split("/")[0]
        what = f"{plural}.{group}" if group else plural
        raise forbidden(what, name, self.authz.refusal(verb, group, resource, namespace))

    def access_review(self, body: Mapping[str, Any]) -> Obj:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = str(attrs.get("resource", ""))
        if attrs.get("subresource"):
            resource += "/" + str(attrs["subresource"])
        allowed = self.authz.allowed(
            str(attrs.get("verb", "")),
            str(attrs.get("group", "")),
            resource,
            str(attrs.get("namespace", "")),
            str(attrs.get("name", "")),
        )
        status: Obj = {"allowed": allowed}
        if allowed and self.authz.rules is not None:
            status["reason"] = 'RBAC: allowed by RoleBinding "deployer" of Role "deployer"'
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {},
            "spec": deep(dict(body.get("spec") or {})),
            "status": status,
        }

    def watch_opened(self, watcher: Watcher, timeout_seconds: int) -> None:
        seconds = timeout_seconds if timeout_seconds > 0 else 1800
        watcher.timers.append(self.clock.call_later(seconds, watcher.end, name="watch end"))
        if watcher.bookmarks:
            self._schedule_bookmark(watcher)

    def _schedule_bookmark(self, watcher: Watcher) -> None:
        def send() -> None:
            if watcher in self.store.watchers:
                watcher.bookmark(self.store.rv)
                self._schedule_bookmark(watcher)

        watcher.timers.append(self.clock.call_later(self.bookmark_interval, send, name="bookmark"))

    def watch_closed(self, watcher: Watcher) -> None:
        if watcher in self.store.watchers:
            self.store.watchers.remove(watcher)

    def pod_log(self, namespace: str, name: str, args: Mapping[str, str]) -> str:
        pod = self.store.require(self.registry.of_kind("Pod"), namespace, name)
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        every = names + [c["name"] for c in pod["spec"].get("initContainers") or []]
        container = args.get("container") or ""
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names)}]"
                )
            container = names[0]
        if container not in every:
            raise bad_request(f"container {container} is not valid for pod {name}")
        status = pod.get("status") or {}
        statuses = [
            *(status.get("containerStatuses") or []),
            *(status.get("initContainerStatuses") or []),
        ]
        cs: Obj = next((c for c in statuses if c.get("name") == container), {})
        previous = args.get("previous") == "true"
        if previous and not (cs.get("lastState") or {}).get("terminated"):
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if not previous and (not cs or (waiting and not cs.get("containerID"))):
            why = {
                "ImagePullBackOff": "trying and failing to pull image",
                "ErrImagePull": "trying and failing to pull image",
                "RegistryUnavailable": "trying and failing to pull image",
            }.get(str(waiting.get("reason")), str(waiting.get("reason") or "ContainerCreating"))
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {why}')
        text = self.logs.get((namespace, name, container, previous))
        if text is None:
            text = _default_log(cs, previous)
        lines = text.splitlines(keepends=True)
        if args.get("tailLines"):
            lines = lines[-int(args["tailLines"]) :] if int(args["tailLines"]) else []
        out = "".join(lines)
        if args.get("limitBytes"):
            out = out.encode()[: int(args["limitBytes"])].decode("utf-8", "ignore")
        return out

    # -- for tests: objects -------------------------------------------------------------

    def resource(self, kind: str, api_version: str | None = None) -> ResourceType:
        if api_version is not None:
            found = self.registry.by_kind(api_version, kind)
            if found is None:
                raise KeyError(f"{kind} in {api_version}")
            return found
        return self.registry.of_kind(kind)

    def create(self, obj: Mapping[str, Any], namespace: str = "default") -> Obj:
        """Create ``obj`` as the admin (its namespace, else ``namespace``)."""
        with self.clock.lock:
            t = self.resource(str(obj["kind"]), str(obj.get("apiVersion")))
            body = deep(dict(obj))
            if t.namespaced:
                body["metadata"].setdefault("namespace", namespace)
            return self.store.create(
                t, body, manager="kubectl-create", keep_status=t.kind == "Node"
            )

    def get(self, kind: str, name: str, namespace: str = "default") -> Obj | None:
        with self.clock.lock:
            t = self.resource(kind)
            found = self.store.get(t, namespace if t.namespaced else None, name)
            return deep(found) if found is not None else None

    def list(
        self, kind: str, namespace: str | None = "default", selector: str = "", fields: str = ""
    ) -> list[Obj]:
        with self.clock.lock:
            t = self.resource(kind)
            labels, match = label_matcher(selector), field_matcher(fields, t.kind)
            return [
                deep(o)
                for o in self.store.list(t, namespace if t.namespaced else None)
                if labels(meta(o).get("labels") or {}) and match(o)
            ]

    def update(self, obj: Mapping[str, Any], *, subresource: str = "") -> Obj:
        with self.clock.lock:
            t = self.resource(str(obj["kind"]), str(obj.get("apiVersion")))
            return self.store.update(t, obj, manager="kubectl-edit", subresource=subresource)

    def patch(
        self,
        kind: str,
        name: str,
        patch: Any,
        namespace: str = "default",
        *,
        type: str = "strategic",
        subresource: str = "",
        manager: str = "kubectl-patch",
    ) -> Obj:
        """Patch as kubectl does (``type``: strategic, merge or json)."""
        with self.clock.lock:
            t = self.resource(kind)
            live = deep(self.store.require(t, namespace if t.namespaced else None, name))
            result = {"strategic": strategic_merge, "merge": merge_patch, "json": json_patch}[type](
                live, patch
            )
            return self.store.update(t, result, manager=manager, subresource=subresource)

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str = "default",
        *,
        propagation: str | None = None,
        grace: int | None = None,
    ) -> Obj:
        with self.clock.lock:
            t = self.resource(kind)
            return self.store.delete(
                t, namespace if t.namespaced else None, name, propagation=propagation, grace=grace
            )[0]

    def namespace(self, name: str) -> Obj:
        """Make a namespace (and, as time passes, its ``default`` ServiceAccount)."""
        found = self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        with self.clock.lock:
            self.clock.run_due()
        return found

    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        taints: Iterable[Mapping[str, Any]] = (),
        allocatable: Mapping[str, str] | None = None,
    ) -> Obj:
        capacity = dict(allocatable or {"cpu": "32", "memory": "256Gi", "pods": "110"})
        now = self.store.now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                    **(labels or {}),
                },
            },
            "spec": {"taints": [dict(t) for t in taints]} if taints else {},
            "status": {
                "allocatable": capacity,
                "capacity": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "phase": "Running",
            },
        }
        return self.create(node)

    def events(self, namespace: str = "default", name: str | None = None) -> builtins.list[Obj]:
        """Events (optionally of one involved object), oldest first."""
        found = self.list("Event", namespace)
        if name is not None:
            found = [e for e in found if (e.get("involvedObject") or {}).get("name") == name]
        return sorted(found, key=lambda e: (e.get("lastTimestamp") or "", meta(e)["name"]))

    # -- for tests: time and faults -------------------------------------------------------

    def run(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (the controllers and the kubelet work)."""
        self.clock.sleep(seconds)

    def run_until(self, done: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
        return self.clock.run_until(done, timeout, poll)

    def restrict(
        self,
        rules: str | Iterable[Rule] | Iterable[Mapping[str, Any]],
        *,
        user: str = "system:serviceaccount:deployer-test:deployer",
        namespace: str | None = None,
    ) -> None:
        """Allow only what a Role allows (a YAML file with a Role, or its rules)."""
        if isinstance(rules, str):
            found = role_rules(rules, namespace)
        else:
            items = list(rules)
            found = [r for r in items if isinstance(r, Rule)] or role_rules(
                [r for r in items if isinstance(r, Mapping)], namespace
            )
        self.authz.restrict(found, user)

    def deny(self, verb: str, resource: str, group: str = "", namespace: str | None = None) -> None:
        """Refuse one verb on one resource (e.g. ``deny("delete", "pods")``)."""
        self.authz.deny(verb, resource, group, namespace)

    def admit(self, check: Callable[[Admission], None], *, mutating: bool = False) -> None:
        """Add an admission check (a webhook): it raises :class:`ApiError` to refuse."""
        (self.store.mutating if mutating else self.store.validating).append(check)

    def cut_watches(self, kind: str | None = None) -> None:
        """Reset the connections of open watches (of ``kind``, or all)."""
        with self.clock.lock:
            for w in list(self.store.watchers):
                if kind is None or w.t.kind == kind:
                    w.cut()

    def stall_watches(self, kind: str | None = None, stalled: bool = True) -> None:
        with self.clock.lock:
            for w in list(self.store.watchers):
                if kind is None or w.t.kind == kind:
                    w.stall(stalled)

    def expire_watches(self, kind: str | None = None) -> None:
        """Open watches get ERROR 410 Gone and end; the history is compacted."""
        with self.clock.lock:
            self.store.compact()
            for w in list(self.store.watchers):
                if kind is None or w.t.kind == kind:
                    w.expire(self.store.rv)

    def compact(self, rv: int | None = None) -> None:
        with self.clock.lock:
            self.store.compact(rv)

    def outage(self, seconds: float, mode: str = "refused") -> None:
        self.faults.outage(seconds, mode)

    def bookmark(self) -> None:
        """Every open watch that allows bookmarks gets one now."""
        with self.clock.lock:
            for w in list(self.store.watchers):
                w.bookmark(self.store.rv)

    def requests_to(self, method: str | None = None, contains: str = "") -> builtins.list[Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and contains in r.path
        ]


def make_kube(
    cluster: FakeCluster,
    *,
    cancel: threading.Event | None = None,
    deadline: float | None = None,
    backoff: float = 0.25,
) -> Kube:
    """A real :class:`deployer.cluster.Kube` talking to ``cluster``, on its virtual clock."""
    clock: Clock = cluster.clock
    return Kube(cluster.transport, cancel=cancel, deadline=deadline, backoff=backoff, clock=clock)


def _default_log(status: Mapping[str, Any], previous: bool) -> str:
    state = (status.get("lastState") if previous else status.get("state")) or {}
    image = str(status.get("image", ""))
    if "terminated" in state and state["terminated"].get("exitCode"):
        return (
            f"starting {image.rsplit('/', 1)[-1]}\n"
            "connecting to the database at db:5432\n"
            "panic: dial tcp 10.96.0.20:5432: connect: connection refused\n"
        )
    return f"starting {image.rsplit('/', 1)[-1]}\nlistening on :8080\n"


# -- admission ---------------------------------------------------------------------------------


def _service_account(a: Admission) -> None:
    """The ServiceAccount admission plugin: the pod's account must exist."""
    if a.operation != "CREATE" or a.t.kind != "Pod":
        return
    spec = a.obj.setdefault("spec", {})
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = name
    ns = a.obj["metadata"].get("namespace", "")
    store = a.store
    if store.get(store.registry.of_kind("ServiceAccount"), ns, name) is None:
        shown = a.obj["metadata"].get("name") or a.obj["metadata"].get("generateName", "")
        raise forbidden(
            "pods",
            shown,
            f'error looking up service account {ns}/{name}: serviceaccount "{name}" not found',
        )
    if spec.get("automountServiceAccountToken") is False:
        return
    volume = store.generate_name("kube-api-access-")
    spec.setdefault("volumes", []).append(
        {
            "name": volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.namespace",
                                    },
                                    "path": "namespace",
                                }
                            ]
                        }
                    },
                ],
            },
        }
    )
    mount = {
        "name": volume,
        "readOnly": True,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    }
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        c.setdefault("volumeMounts", []).append(dict(mount))


def _counted(pod: Mapping[str, Any], now: float) -> bool:
    """QuotaV1Pod: terminal pods are free; a terminating one until deletion + grace."""
    from tests.fakecluster.meta import parse_time

    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    m = meta(pod)
    if m.get("deletionTimestamp") and m.get("deletionGracePeriodSeconds") is not None:
        ends = parse_time(str(m["deletionTimestamp"])) + int(m["deletionGracePeriodSeconds"])
        if now > ends:
            return False
    return True


def pod_usage(pod: Mapping[str, Any]) -> dict[str, float]:
    usage = {"pods": 1.0, "count/pods": 1.0}
    for field in _POD_FIELDS:
        requests = sum(
            parse_quantity(((c.get("resources") or {}).get("requests") or {}).get(field))
            for c in (pod.get("spec") or {}).get("containers") or []
        )
        limits = sum(
            parse_quantity(((c.get("resources") or {}).get("limits") or {}).get(field))
            for c in (pod.get("spec") or {}).get("containers") or []
        )
        usage[field] = usage[f"requests.{field}"] = requests
        usage[f"limits.{field}"] = limits
    return usage


def quota_used(store: Store, namespace: str, now: float) -> dict[str, float]:
    used: dict[str, float] = {}
    for pod in store.list(store.registry.of_kind("Pod"), namespace):
        usage = pod_usage(pod)
        if not _counted(pod, now):
            usage = {"count/pods": 1.0}
        for key, value in usage.items():
            used[key] = used.get(key, 0.0) + value
    return used


def _quota(a: Admission) -> None:
    """ResourceQuota admission for pods (validating: the generated name is known)."""
    if a.operation != "CREATE" or a.t.kind != "Pod":
        return
    store = a.store
    ns = a.obj["metadata"].get("namespace", "")
    now = store.clock.time()
    requested = pod_usage(a.obj)
    for quota in store.list(store.registry.of_kind("ResourceQuota"), ns):
        hard = {
            k: parse_quantity(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()
        }
        used = quota_used(store, ns, now)
        exceeded = sorted(
            k
            for k, limit in hard.items()
            if k in requested and used.get(k, 0.0) + requested[k] > limit
        )
        if exceeded:
            raise forbidden(
                "pods",
                a.obj["metadata"].get("name", ""),
                f"exceeded quota: {meta(quota)['name']}, "
                f"requested: {_pretty(requested, exceeded)}, used: {_pretty(used, exceeded)}, "
                f"limited: {_pretty(hard, exceeded)}",
            )


def _pretty(values: Mapping[str, float], keys: list[str]) -> str:
    return ",".join(f"{k}={format_quantity(values.get(k, 0.0), k)}" for k in keys)


__all__ += ["ApiError", "pod_usage", "quota_used"]
