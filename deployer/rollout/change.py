"""Step 3, apply: the manifests in order, then the image patch of each workload.

Order: Namespaces and CRDs, the other objects that are not workloads, the
migration Jobs (each run to completion, :mod:`~deployer.rollout.migrate`), the
workload documents, then the patch that points every named workload's containers
at ``repo@digest`` with the change annotations. Each change is recorded in the
:class:`~deployer.rollout.state.RunState` the moment it is made, so a failure or a
cancel right after it still puts it back.
"""

from __future__ import annotations

from typing import Any

from deployer.cluster import Response
from deployer.errors import ClusterError
from deployer.rollout.apply import FIRST_KINDS, Applied
from deployer.rollout.check import change_annotations, read_object
from deployer.rollout.context import Context
from deployer.rollout.kinds import Kind, containers_of, kind_named, template_of
from deployer.rollout.migrate import run_job
from deployer.rollout.state import Phase, RunState, Workload

__all__ = ["change", "patch_image"]

_CONFLICT_TRIES = 4


def _workload_of(state: RunState, item: Applied) -> Workload | None:
    kind = kind_named(item.manifest.api_version, item.manifest.kind)
    for w in state.workloads:
        if w.kind is kind and w.name == item.manifest.name and w.namespace == item.namespace:
            return w
    return None


def _ordered(state: RunState) -> tuple[list[Applied], list[Applied], list[Applied]]:
    """(objects first, migration Jobs, workload documents), each in file order."""
    items = state.manifests.items if state.manifests else []
    first = [i for i in items if not i.is_job and _workload_of(state, i) is None]
    first.sort(key=lambda i: i.manifest.kind not in FIRST_KINDS)  # stable: file order
    jobs = [i for i in items if i.is_job]
    rest = [i for i in items if i not in first and i not in jobs]
    return first, jobs, rest


def change(ctx: Context, state: RunState) -> bool:
    """Apply and patch everything; False when a migration Job failed (nothing after it ran).

    A :class:`ClusterError` once something changed is an outcome: the workloads it
    left open fail (``not verified``) and the caller rolls back.
    """
    current: Workload | None = None
    first, jobs, rest = _ordered(state)
    try:
        for item in first:
            assert state.manifests is not None
            state.manifests.apply(item)
            state.changed = True
        for item in jobs:
            if not run_job(ctx, state, item):
                return False
        for item in rest:
            assert state.manifests is not None
            obj = state.manifests.apply(item)
            state.changed = True
            w = _workload_of(state, item)
            if w is not None:
                w.applied(obj)  # known now, so a later failure still undoes it
        for w in state.workloads:
            current = w
            patch_image(ctx, state, w)
            w.start_wait(undoing=False)
    except ClusterError as e:
        if not state.changed:
            raise
        for w in state.workloads:
            if w.open and (w is current or w.phase is Phase.CHECKED):
                w.fail(e.message)
        for w in state.open():  # the ones already changed were not judged: undo them too
            w.not_verified(e.message)
    return True


def _image_patch(ctx: Context, w: Workload, live: dict[str, Any]) -> dict[str, Any]:
    regular = {str(c.get("name")) for c in containers_of(template_of(live), init=False)}
    spec: dict[str, Any] = {}
    containers = [{"name": c, "image": ctx.image} for c in w.containers if c in regular]
    init = [{"name": c, "image": ctx.image} for c in w.containers if c not in regular]
    if containers:
        spec["containers"] = containers
    if init:
        spec["initContainers"] = init
    return {
        "metadata": {
            "resourceVersion": live["metadata"]["resourceVersion"],
            "annotations": change_annotations(ctx),
        },
        "spec": {"template": {"spec": spec}},
    }


def _json_image_patch(ctx: Context, w: Workload, live: dict[str, Any]) -> list[dict[str, Any]]:
    """The image patch as a JSON patch: a custom resource (an Argo Rollout) takes no other."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": _rv(live)}
    ]
    pod = template_of(live).get("spec") or {}
    for field in ("initContainers", "containers"):
        for index, c in enumerate(pod.get(field) or []):
            if c.get("name") in w.containers:
                path = f"/spec/template/spec/{field}/{index}/image"
                ops.append({"op": "replace", "path": path, "value": ctx.image})
    if (live.get("metadata") or {}).get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in change_annotations(ctx).items():
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": path, "value": value})
    return ops


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _send_patch(ctx: Context, w: Workload, kind: Kind, name: str, live: dict[str, Any]) -> Any:
    if kind.custom:
        body: Any = _json_image_patch(ctx, w, live)
        content_type = "application/json-patch+json"
    else:
        body, content_type = _image_patch(ctx, w, live), "application/strategic-merge-patch+json"
    return ctx.kube.request(
        "PATCH",
        kind.resource,
        verb="patch",
        namespace=w.namespace,
        name=name,
        body=body,
        content_type=content_type,
        expect=frozenset({409}),
    )


def patch_image(ctx: Context, state: RunState, w: Workload) -> None:
    """Point ``w``'s containers at the image (resourceVersion-guarded, a conflict re-reads).

    A ``workloadRef`` Rollout's template is in its Deployment: that is what is patched,
    and the Rollout stays what is watched.
    """
    kind, name = (w.holder.kind, w.holder.name) if w.holder else (w.kind, w.name)
    live = w.live if w.holder is None else read_object(ctx.kube, kind.resource, w.namespace, name)
    for _ in range(_CONFLICT_TRIES):
        if live is None:
            raise ClusterError(f"{kind.name} {w.namespace}/{name} was deleted")
        now = {str(c.get("name")): c.get("image") for c in containers_of(template_of(live))}
        if all(now.get(c) == ctx.image for c in w.containers):
            break
        answer = _send_patch(ctx, w, kind, name, live)
        if isinstance(answer, Response):  # changed since we read it: patch the fresh one
            live = read_object(ctx.kube, kind.resource, w.namespace, name)
            continue
        live = dict(answer)
        state.changed = True
        break
    else:
        raise ClusterError(
            f"{kind.name} {w.namespace}/{name} kept changing; gave up after {_CONFLICT_TRIES} tries"
        )
    w.applied(live)
    generation = (live.get("metadata") or {}).get("generation")
    if w.holder is not None:
        w.holder.generation = int(generation or 0)
        w.live = read_object(ctx.kube, w.kind.resource, w.namespace, w.name) or w.live
    if w.changed:
        via = f" (its template in {kind.lower}/{name})" if w.holder else ""
        ctx.io.info(f"{w.display}: updated{via}, generation {generation}")
    else:
        ctx.io.info(f"{w.display}: already running {ctx.image}")
