"""The scheduler and the kubelet of the fake cluster: where pods go and what becomes of them.

The scheduler binds a pending pod to the least-loaded Ready node that matches its
``nodeSelector``, tolerates the node's taints and has room (pod count, cpu and
memory requests); else it marks the pod ``PodScheduled=False/Unschedulable`` with
the scheduler's message and a FailedScheduling event, and tries again when nodes
change. A container image whose last path segment starts with ``unschedulable``
fits only nodes labelled ``fake.deployer.dev/pool=extra`` (what the autoscaler
hook adds).

The kubelet decides each container's fate by the last path segment of its image,
as the KWOK stages of the test cluster do (``docs/development.md``), with more
fates (:data:`FATES`). Times follow the real kubelet: image pull back-off and
crash-loop back-off 10 s doubling to 300 s (``cluster.backoff``), the first
restart at once. A pod being deleted stops after ``min(grace, stop seconds)``
(``cluster.stop_seconds``, or the pod's annotation ``fake.deployer.dev/stop-seconds``)
and is then deleted for good (grace 0, as the kubelet confirms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers.events import record
from tests.fakecluster.meta import (
    condition,
    controller_of,
    deep,
    meta,
    parse_quantity,
)

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["FATES", "fate_of", "kubelet", "schedule"]

Obj = dict[str, Any]
STOP_ANNOTATION = "fake.deployer.dev/stop-seconds"
EXTRA_POOL = ("fake.deployer.dev/pool", "extra")
# Fates by the image's last path segment prefix, strongest first (as KWOK's stages).
FATES = (
    "fail-pull",
    "registry-unavailable",
    "inspect-error",
    "invalid-image",
    "config-error",
    "crash-loop",
    "oom",
    "fail",
    "never-ready",
    "complete",
)


def fate_of(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    for fate in FATES:
        if last.startswith(fate):
            return fate
    if image != image.lower():
        return "invalid-image"
    return "ready"


def _key(pod: Mapping[str, Any]) -> tuple[str, str]:
    m = meta(pod)
    return (m.get("namespace", ""), m.get("name", ""))


# -- the scheduler ------------------------------------------------------------------------------


def _requests(pod: Mapping[str, Any]) -> dict[str, float]:
    total = {"cpu": 0.0, "memory": 0.0}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for name in total:
            total[name] += parse_quantity(
                ((c.get("resources") or {}).get("requests") or {}).get(name)
            )
    return total


def _tolerates(pod: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in (pod.get("spec") or {}).get("tolerations") or []:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (
            not tol.get("key") or tol.get("key") == taint.get("key")
        ):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value") == taint.get("value"):
            return True
    return False


def _affinity(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """requiredDuringSchedulingIgnoredDuringExecution: any term matches (fields and labels)."""
    required = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = meta(node).get("labels") or {}
    fields = {"metadata.name": meta(node)["name"]}

    def matches(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
        key, op, wanted = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            return values.get(str(key)) in wanted
        if op == "NotIn":
            return values.get(str(key)) not in wanted
        if op == "Exists":
            return key in values
        if op == "DoesNotExist":
            return key not in values
        return False

    return any(
        all(matches(e, labels) for e in term.get("matchExpressions") or [])
        and all(matches(e, fields) for e in term.get("matchFields") or [])
        for term in terms
    )


def _why_not(cluster: FakeCluster, pod: Obj, node: Obj, pods_on: dict[str, list[Obj]]) -> str:
    labels = meta(node).get("labels") or {}
    selector = dict((pod.get("spec") or {}).get("nodeSelector") or {})
    images = [c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or []]
    if any(str(i).rsplit("/", 1)[-1].startswith("unschedulable") for i in images):
        selector[EXTRA_POOL[0]] = EXTRA_POOL[1]
    if any(labels.get(k) != v for k, v in selector.items()) or not _affinity(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    if (node.get("spec") or {}).get("unschedulable"):
        return "node(s) were unschedulable"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if not _tolerates(pod, taint):
            return "node(s) had untolerated taint(s)"
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    here = pods_on.get(meta(node)["name"], [])
    if len(here) + 1 > parse_quantity(allocatable.get("pods", 110)):
        return "Too many pods"
    wanted = _requests(pod)
    for name in ("cpu", "memory"):
        used = sum(_requests(p)[name] for p in here)
        if wanted[name] and used + wanted[name] > parse_quantity(allocatable.get(name, 0)):
            return f"Insufficient {name}"
    return ""


def schedule(cluster: FakeCluster, key: tuple[str, str]) -> None:
    """Bind one pending pod, or say why it cannot be."""
    store = cluster.store
    pod_t, node_t = cluster.registry.of_kind("Pod"), cluster.registry.of_kind("Node")
    pod = store.get(pod_t, *key)
    if pod is None or (pod.get("spec") or {}).get("nodeName") or meta(pod).get("deletionTimestamp"):
        return
    if (pod.get("spec") or {}).get("schedulerName", "default-scheduler") != "default-scheduler":
        return
    nodes = [
        n
        for n in store.list(node_t)
        if (condition(n, "Ready") or {}).get("status", "True") == "True"
    ]
    pods_on: dict[str, list[Obj]] = {}
    for p in store.list(pod_t):
        node = (p.get("spec") or {}).get("nodeName")
        if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            pods_on.setdefault(node, []).append(p)
    reasons: dict[str, int] = {}
    fits = []
    for node in nodes:
        why = _why_not(cluster, pod, node, pods_on)
        if why:
            reasons[why] = reasons.get(why, 0) + 1
        else:
            fits.append(node)
    if not fits:
        _unschedulable(cluster, pod, len(nodes), reasons)
        return
    node = min(fits, key=lambda n: (len(pods_on.get(meta(n)["name"], [])), meta(n)["name"]))
    _bind(cluster, pod, meta(node)["name"])


def _unschedulable(cluster: FakeCluster, pod: Obj, total: int, reasons: dict[str, int]) -> None:
    detail = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
    message = (
        f"0/{total} nodes are available: {detail}. no new claims to deallocate, preemption: "
        f"0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
        if total
        else "no nodes available to schedule pods"
    )
    current = condition(pod, "PodScheduled")
    if (
        current is not None
        and current.get("message") == message
        and current.get("status") == "False"
    ):
        return
    body = deep(pod)
    now = cluster.store.now()
    conditions = [
        c for c in body["status"].get("conditions") or [] if c.get("type") != "PodScheduled"
    ]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
            "reason": "Unschedulable",
            "message": message,
        }
    )
    body["status"]["conditions"] = conditions
    updated = cluster.store.update(
        cluster.registry.of_kind("Pod"), body, manager="kube-scheduler", subresource="status"
    )
    record(cluster, updated, "Warning", "FailedScheduling", message, "default-scheduler")
    cluster.autoscaler.unschedulable(updated)


def _bind(cluster: FakeCluster, pod: Obj, node: str) -> None:
    store, pod_t = cluster.store, cluster.registry.of_kind("Pod")
    body = deep(pod)
    body["spec"]["nodeName"] = node
    # The binding subresource sets nodeName and PodScheduled=True in one write.
    now = store.now()
    conditions = [
        c for c in body["status"].get("conditions") or [] if c.get("type") != "PodScheduled"
    ]
    conditions.append(
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
    )
    status = body.pop("status")
    status["conditions"] = conditions
    current = store.require(pod_t, *_key(pod))
    raw = store._merge_update(pod_t, current, body, "")
    raw["spec"]["nodeName"] = node
    raw["status"] = status
    bound = store._commit(pod_t, "MODIFIED", raw, deep(current))
    store._own(meta(bound)["uid"], "kube-scheduler", "Update", "v1", "", {("f:spec", "f:nodeName")})
    m = meta(bound)
    record(
        cluster,
        bound,
        "Normal",
        "Scheduled",
        f"Successfully assigned {m['namespace']}/{m['name']} to {node}",
        "default-scheduler",
    )


# -- the kubelet --------------------------------------------------------------------------------


@dataclass
class _Container:
    name: str
    image: str
    fate: str
    init: bool
    restarts: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last: Obj | None = None
    ready: bool = False
    started: bool = False
    backoff: float = 0.0
    container_id: str = ""


@dataclass
class _Run:
    uid: str
    key: tuple[str, str]
    containers: list[_Container]
    restart_policy: str
    job: bool
    started: float
    ip: str
    stopping: bool = False
    phase: str = "Pending"
    ready_since: str = ""
    timers: list[Any] = field(default_factory=list)


def kubelet(cluster: FakeCluster, key: tuple[str, str]) -> None:
    """React to a pod change: start a newly bound pod, stop a pod being deleted."""
    pod = cluster.store.get(cluster.registry.of_kind("Pod"), *key)
    if pod is None:
        return
    uid = meta(pod)["uid"]
    run = cluster.kubelet_runs.get(uid)
    node = (pod.get("spec") or {}).get("nodeName")
    if meta(pod).get("deletionTimestamp"):
        _stop(cluster, pod, run)
        return
    if node and run is None:
        _start(cluster, pod)


def _start(cluster: FakeCluster, pod: Obj) -> None:
    spec = pod.get("spec") or {}
    owner = controller_of(pod) or {}
    cluster.pod_ips += 1
    run = _Run(
        uid=meta(pod)["uid"],
        key=_key(pod),
        containers=[
            _Container(
                str(c["name"]), str(c.get("image", "")), fate_of(str(c.get("image", ""))), init
            )
            for init, items in (
                (True, spec.get("initContainers") or []),
                (False, spec.get("containers") or []),
            )
            for c in items
        ],
        restart_policy=str(spec.get("restartPolicy", "Always")),
        job=owner.get("kind") == "Job",
        started=cluster.clock.time(),
        ip=f"10.244.{cluster.pod_ips // 250}.{cluster.pod_ips % 250 + 2}",
    )
    for c in run.containers:
        c.container_id = f"containerd://{run.uid.replace('-', '')[:12]}{c.name}"
        if c.init:
            c.state = {"waiting": {"reason": "PodInitializing"}}
    cluster.kubelet_runs[run.uid] = run
    _write(cluster, run)
    _later(cluster, run, cluster.ready_delay, lambda: _begin(cluster, run))


def _later(cluster: FakeCluster, run: _Run, delay: float, fn: Any) -> None:
    def guarded() -> None:
        if not run.stopping and cluster.kubelet_runs.get(run.uid) is run:
            fn()

    run.timers.append(cluster.clock.call_later(delay, guarded, name=f"kubelet {run.key[1]}"))


def _pod(cluster: FakeCluster, run: _Run) -> Obj | None:
    return cluster.store.get(cluster.registry.of_kind("Pod"), *run.key)


def _begin(cluster: FakeCluster, run: _Run) -> None:
    """The containers get their fates: init containers first, in order."""
    pending_init = [c for c in run.containers if c.init and "terminated" not in c.state]
    if pending_init:
        first = pending_init[0]
        if first.fate == "ready":
            first.state = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": cluster.store.now(),
                    "finishedAt": cluster.store.now(),
                }
            }
            first.started = False
            _begin(cluster, run)
            return
        _run_fate(cluster, run, first)
        return
    for c in run.containers:
        if not c.init:
            _run_fate(cluster, run, c)
    _write(cluster, run)


def _config_problem(cluster: FakeCluster, run: _Run, c: _Container) -> str:
    """What the kubelet says when env refers to a ConfigMap/Secret (key) that is missing."""
    pod = _pod(cluster, run)
    if pod is None:
        return ""
    spec: Obj = next(
        (
            x
            for x in [
                *(pod["spec"].get("initContainers") or []),
                *(pod["spec"].get("containers") or []),
            ]
            if x.get("name") == c.name
        ),
        {},
    )
    ns = run.key[0]
    refs: list[tuple[str, str, str | None, bool]] = []
    for env in spec.get("env") or []:
        source = env.get("valueFrom") or {}
        for field_, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = source.get(field_)
            if ref:
                refs.append(
                    (kind, str(ref.get("name")), str(ref.get("key")), bool(ref.get("optional")))
                )
    for env in spec.get("envFrom") or []:
        for field_, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = env.get(field_)
            if ref:
                refs.append((kind, str(ref.get("name")), None, bool(ref.get("optional"))))
    for kind, name, key, optional in refs:
        found = cluster.store.get(cluster.registry.of_kind(kind), ns, name)
        if found is None:
            if not optional:
                return f'{kind.lower()} "{name}" not found'
            continue
        keys = {**(found.get("data") or {}), **(found.get("binaryData") or {})}
        if key is not None and key not in keys and not optional:
            return f"couldn't find key {key} in {kind} {ns}/{name}"
    return ""


def _run_fate(cluster: FakeCluster, run: _Run, c: _Container) -> None:
    now = cluster.store.now()
    problem = _config_problem(cluster, run, c) or (
        'configmap "fake-missing" not found' if c.fate == "config-error" else ""
    )
    if problem:
        c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": problem}}
        _event(cluster, run, c, "Warning", "Failed", f"Error: {problem}")
        _write(cluster, run)
        _later(cluster, run, 10.0, lambda: _retry_config(cluster, run, c))
        return
    if c.fate in ("fail-pull", "registry-unavailable"):
        _pull_failed(cluster, run, c)
        return
    if c.fate == "inspect-error":
        message = f'Failed to inspect image "{c.image}": rpc error: code = Unknown desc = failed to get image info: content digest not found'
        c.state = {"waiting": {"reason": "ImageInspectError", "message": message}}
        _event(cluster, run, c, "Warning", "InspectFailed", message)
        _write(cluster, run)
        return
    if c.fate == "invalid-image":
        message = f'Failed to apply default image tag "{c.image}": couldn\'t parse image name "{c.image}": invalid reference format'
        c.state = {"waiting": {"reason": "InvalidImageName", "message": message}}
        _event(cluster, run, c, "Warning", "InspectFailed", message)
        _write(cluster, run)
        return
    _event(
        cluster,
        run,
        c,
        "Normal",
        "Pulled",
        f'Container image "{c.image}" already present on machine',
    )
    _event(cluster, run, c, "Normal", "Created", f"Created container: {c.name}")
    _event(cluster, run, c, "Normal", "Started", f"Started container {c.name}")
    c.state = {"running": {"startedAt": now}}
    c.started = True
    crashing = c.fate in ("crash-loop", "oom", "fail") or (c.fate == "complete" and not run.job)
    c.ready = c.fate in ("ready", "complete") and not (c.init)
    if c.fate == "never-ready":
        c.ready = False
        _unhealthy(cluster, run, c)
    _write(cluster, run)
    if crashing or (run.job and c.fate in ("ready", "complete")):
        _later(cluster, run, cluster.crash_after, lambda: _exit(cluster, run, c))
    elif c.init and c.fate == "never-ready":
        pass


def _retry_config(cluster: FakeCluster, run: _Run, c: _Container) -> None:
    if "waiting" in c.state and c.state["waiting"].get("reason") == "CreateContainerConfigError":
        _run_fate(cluster, run, c)


def _unhealthy(cluster: FakeCluster, run: _Run, c: _Container) -> None:
    _event(
        cluster,
        run,
        c,
        "Warning",
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    )
    _later(cluster, run, 10.0, lambda: _unhealthy(cluster, run, c))


def _pull_failed(cluster: FakeCluster, run: _Run, c: _Container) -> None:
    """One failed pull: ErrImagePull (or RegistryUnavailable), then ImagePullBackOff."""
    if c.fate == "registry-unavailable":
        reason = "RegistryUnavailable"
        message = f"image pull failed for {c.image} because the registry is unavailable: dial tcp 10.0.0.9:443: connect: connection refused"
        detail = message
    else:
        reason = "ErrImagePull"
        detail = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{c.image}": '
            f'failed to resolve reference "{c.image}": {c.image}: not found'
        )
        message = detail
    c.state = {"waiting": {"reason": reason, "message": message}}
    _event(cluster, run, c, "Normal", "Pulling", f'Pulling image "{c.image}"')
    _event(cluster, run, c, "Warning", "Failed", f'Failed to pull image "{c.image}": {detail}')
    _event(cluster, run, c, "Warning", "Failed", f"Error: {reason}")
    _write(cluster, run)
    c.backoff = min(cluster.backoff[1], c.backoff * 2 if c.backoff else cluster.backoff[0])

    def back_off() -> None:
        c.state = {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{c.image}"',
            }
        }
        _event(cluster, run, c, "Normal", "BackOff", f'Back-off pulling image "{c.image}"')
        _event(cluster, run, c, "Warning", "Failed", "Error: ImagePullBackOff")
        _write(cluster, run)
        _later(cluster, run, c.backoff, lambda: _pull_failed(cluster, run, c))

    _later(cluster, run, 1.0, back_off)


def _exit(cluster: FakeCluster, run: _Run, c: _Container) -> None:
    """The container ends: Completed, Error, or OOMKilled; restarts as restartPolicy says."""
    now = cluster.store.now()
    succeeded = c.fate in ("ready", "complete")
    reason = "Completed" if succeeded else ("OOMKilled" if c.fate == "oom" else "Error")
    code = 0 if succeeded else (137 if c.fate == "oom" else 1)
    started = (c.state.get("running") or {}).get("startedAt", now)
    terminated = {
        "exitCode": code,
        "reason": reason,
        "startedAt": started,
        "finishedAt": now,
        "containerID": c.container_id,
    }
    c.ready = False
    restart = run.restart_policy == "Always" or (
        run.restart_policy == "OnFailure" and not succeeded
    )
    if not restart:
        c.state = {"terminated": terminated}
        c.started = False
        _write(cluster, run)
        return
    c.last = {"terminated": terminated}
    if c.restarts == 0:
        c.restarts = 1
        c.state = {"running": {"startedAt": now}}
        _write(cluster, run)
        _later(cluster, run, cluster.crash_after, lambda: _exit(cluster, run, c))
        return
    c.backoff = min(cluster.backoff[1], c.backoff * 2 if c.backoff else cluster.backoff[0])
    pod_ref = f"{run.key[1]}_{run.key[0]}({run.uid})"
    c.state = {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {int(c.backoff)}s restarting failed container={c.name} pod={pod_ref}",
        }
    }
    c.started = False
    _event(
        cluster,
        run,
        c,
        "Warning",
        "BackOff",
        f"Back-off restarting failed container {c.name} in pod {pod_ref}",
    )
    _write(cluster, run)

    def again() -> None:
        c.restarts += 1
        c.state = {"running": {"startedAt": cluster.store.now()}}
        c.started = True
        _write(cluster, run)
        _later(cluster, run, cluster.crash_after, lambda: _exit(cluster, run, c))

    _later(cluster, run, c.backoff, again)


def _event(
    cluster: FakeCluster, run: _Run, c: _Container, type_: str, reason: str, message: str
) -> None:
    pod = _pod(cluster, run)
    if pod is None:
        return
    kind = "initContainers" if c.init else "containers"
    record(
        cluster,
        pod,
        type_,
        reason,
        message,
        "kubelet",
        host=str(pod["spec"].get("nodeName", "")),
        field_path=f"spec.{kind}{{{c.name}}}",
    )


def _phase(run: _Run) -> str:
    mains = [c for c in run.containers if not c.init]
    if run.restart_policy != "Always" and mains and all("terminated" in c.state for c in mains):
        failed = any(c.state["terminated"].get("exitCode") for c in mains)
        return "Failed" if failed else "Succeeded"
    if any(c.started or c.last or "terminated" in c.state for c in mains):
        return "Running"
    return "Pending"


def _status(cluster: FakeCluster, run: _Run, pod: Obj) -> Obj:
    now = cluster.store.now()
    old = pod.get("status") or {}
    phase = _phase(run)
    mains = [c for c in run.containers if not c.init]
    inits = [c for c in run.containers if c.init]
    ready = phase == "Running" and all(c.ready for c in mains)
    done = phase in ("Succeeded", "Failed")
    unready = [c.name for c in mains if not c.ready]
    initialized = all(
        "terminated" in c.state and not c.state["terminated"].get("exitCode") for c in inits
    )

    def cond(kind: str, ok: bool, reason: str = "", message: str = "") -> Obj:
        previous = next((x for x in old.get("conditions") or [] if x.get("type") == kind), None)
        status = "True" if ok else "False"
        found: Obj = {"type": kind, "status": status, "lastProbeTime": None}
        found["lastTransitionTime"] = (
            previous.get("lastTransitionTime")
            if previous and previous.get("status") == status
            else now
        )
        if reason:
            found["reason"] = reason
        if message:
            found["message"] = message
        return found

    why = "PodCompleted" if done else "ContainersNotReady"
    text = "" if done else f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        cond(
            "PodReadyToStartContainers",
            phase != "Pending" or any(c.started for c in run.containers) or True,
        ),
        cond(
            "Initialized",
            initialized,
            "" if initialized else "ContainersNotInitialized",
            ""
            if initialized
            else f"containers with incomplete status: [{' '.join(c.name for c in inits if 'terminated' not in c.state)}]",
        ),
        cond("Ready", ready, "" if ready else why, "" if ready else text),
        cond("ContainersReady", ready, "" if ready else why, "" if ready else text),
    ]
    scheduled = next(
        (x for x in old.get("conditions") or [] if x.get("type") == "PodScheduled"), None
    )
    if scheduled:
        conditions.append(scheduled)

    def statuses(items: list[_Container]) -> list[Obj]:
        found = []
        for c in items:
            item: Obj = {
                "name": c.name,
                "image": c.image,
                "imageID": ""
                if "waiting" in c.state
                and c.state["waiting"].get("reason") not in ("CrashLoopBackOff",)
                else f"{c.image.split('@')[0]}@sha256:{'0' * 64}",
                "ready": c.ready,
                "restartCount": c.restarts,
                "started": c.started,
                "state": deep(c.state),
            }
            if c.started or c.last or "terminated" in c.state:
                item["containerID"] = c.container_id
            if c.last:
                item["lastState"] = deep(c.last)
            else:
                item["lastState"] = {}
            found.append(item)
        return found

    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": "10.0.0.1",
        "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": run.ip,
        "podIPs": [{"ip": run.ip}],
        "startTime": old.get("startTime") or now,
        "containerStatuses": statuses(mains),
        "qosClass": old.get("qosClass", "BestEffort"),
    }
    if inits:
        status["initContainerStatuses"] = statuses(inits)
    return status


def _write(cluster: FakeCluster, run: _Run) -> None:
    pod = _pod(cluster, run)
    if pod is None or meta(pod)["uid"] != run.uid:
        return
    status = _status(cluster, run, pod)
    if status == pod.get("status"):
        return
    body = deep(pod)
    body["status"] = status
    cluster.store.update(
        cluster.registry.of_kind("Pod"), body, manager="kubelet", subresource="status"
    )


def _stop(cluster: FakeCluster, pod: Obj, run: _Run | None) -> None:
    """A pod being deleted: stop it, then confirm the deletion (grace 0)."""
    m = meta(pod)
    if run is not None and run.stopping:
        return
    grace = float(m.get("deletionGracePeriodSeconds") or 0)
    if int(m.get("deletionGracePeriodSeconds") or 0) == 0 and not m.get("finalizers"):
        return  # already going
    stop = float((m.get("annotations") or {}).get(STOP_ANNOTATION, cluster.stop_seconds))
    delay = min(grace, stop)
    if run is not None:
        run.stopping = True
        for timer in run.timers:
            timer.cancel()
    elif not (pod.get("spec") or {}).get("nodeName"):
        delay = 0.0
    uid = m["uid"]
    key = _key(pod)

    def confirm() -> None:
        current = cluster.store.get(cluster.registry.of_kind("Pod"), *key)
        cluster.kubelet_runs.pop(uid, None)
        if current is None or meta(current)["uid"] != uid:
            return
        if int(meta(current).get("deletionGracePeriodSeconds") or 0) == 0:
            return
        cluster.store.delete(cluster.registry.of_kind("Pod"), key[0], key[1], grace=0)

    cluster.clock.call_later(delay, confirm, name=f"kubelet stop {key[1]}")
