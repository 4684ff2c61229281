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
from deployer.rollout.extras import template_patch
from deployer.rollout.kinds import Kind, kind_named, resource_version, template_of
from deployer.rollout.migrate import run_job
from deployer.rollout.state import Phase, RunState, Workload

__all__ = ["change", "patch_image"]

_CONFLICT_TRIES = 4


def _workload_of(state: RunState, item: Applied) -> Workload | None:
    """The workload ``item`` is the document of: itself, or the Deployment holding the
    template of a ``workloadRef`` Rollout (applied with the workloads, after the Jobs)."""
    kind = kind_named(item.manifest.api_version, item.manifest.kind)
    for w in state.workloads:
        if w.namespace != item.namespace:
            continue
        if w.kind is kind and w.name == item.manifest.name:
            return w
        if w.holder is not None and (w.holder.kind, w.holder.name) == (kind, item.manifest.name):
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
            if w is not None and w.holder is not None and w.kind.name != item.manifest.kind:
                w.holder_applied(obj)  # the template of a workloadRef Rollout
            elif w is not None:
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


def _image_patch(ctx: Context, live: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "resourceVersion": live["metadata"]["resourceVersion"],
            "annotations": change_annotations(ctx),
        },
        "spec": {"template": template},
    }


def _annotation_ops(path: str, have: Any, wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch ops that set ``wanted`` keys in the annotations map at ``path``."""
    if not wanted:
        return []
    if have is None:
        return [{"op": "add", "path": path, "value": dict(wanted)}]
    return [
        {"op": "add", "path": f"{path}/" + k.replace("~", "~0").replace("/", "~1"), "value": v}
        for k, v in wanted.items()
    ]


def _json_image_patch(
    ctx: Context, live: dict[str, Any], template: dict[str, Any]
) -> list[dict[str, Any]]:
    """The image patch as a JSON patch: a custom resource (an Argo Rollout) takes no
    strategic merge. ``template`` is the strategic fragment :func:`template_patch` made."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version(live)}
    ]
    now = template_of(live)
    pod, wanted = now.get("spec") or {}, template.get("spec") or {}
    for field in ("initContainers", "containers"):
        images = {str(c["name"]): c["image"] for c in wanted.get(field) or []}
        for index, c in enumerate(pod.get(field) or []):
            if c.get("name") in images:
                path = f"/spec/template/spec/{field}/{index}/image"
                ops.append({"op": "replace", "path": path, "value": images[str(c["name"])]})
    secrets = list(pod.get("imagePullSecrets") or [])
    extra = [s for s in wanted.get("imagePullSecrets") or [] if s not in secrets]
    if extra:
        path = "/spec/template/spec/imagePullSecrets"
        ops.append({"op": "add", "path": path, "value": secrets + extra})
    have = (now.get("metadata") or {}).get("annotations")
    wanted_annotations = (template.get("metadata") or {}).get("annotations") or {}
    if now.get("metadata") is None and wanted_annotations:
        ops.append({"op": "add", "path": "/spec/template/metadata", "value": {}})
    ops += _annotation_ops("/spec/template/metadata/annotations", have, wanted_annotations)
    have = (live.get("metadata") or {}).get("annotations")
    return ops + _annotation_ops("/metadata/annotations", have, change_annotations(ctx))


def _send_patch(
    ctx: Context, w: Workload, kind: Kind, name: str, live: dict[str, Any], template: Any
) -> Any:
    if kind.custom:
        body: Any = _json_image_patch(ctx, live, template)
        content_type = "application/json-patch+json"
    else:
        body = _image_patch(ctx, live, template)
        content_type = "application/strategic-merge-patch+json"
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
        # each container's image (several with ``images``), the config hash, the pull secret
        template = template_patch(w, live, ctx.image)
        if template is None:
            break
        answer = _send_patch(ctx, w, kind, name, live, template)
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
        w.holder.template = dict(template_of(live))
        w.live = read_object(ctx.kube, w.kind.resource, w.namespace, w.name) or w.live
    if w.changed:
        via = f" (its template in {kind.lower}/{name})" if w.holder else ""
        ctx.io.info(f"{w.display}: updated{via}, generation {generation}")
    else:
        ctx.io.info(f"{w.display}: already running {w.new_images(ctx.image)}")
