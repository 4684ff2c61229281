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
from deployer.rollout.kinds import kind_named
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


def _image_patch(ctx: Context, live: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "resourceVersion": live["metadata"]["resourceVersion"],
            "annotations": change_annotations(ctx),
        },
        "spec": {"template": template},
    }


def patch_image(ctx: Context, state: RunState, w: Workload) -> None:
    """Point ``w``'s containers at the image (resourceVersion-guarded, a conflict re-reads)."""
    for _ in range(_CONFLICT_TRIES):
        live = w.live
        assert live is not None
        # each container's image (several with ``images``), the config hash, the pull secret
        template = template_patch(w, live, ctx.image)
        if template is None:
            break
        answer = ctx.kube.request(
            "PATCH",
            w.kind.resource,
            verb="patch",
            namespace=w.namespace,
            name=w.name,
            body=_image_patch(ctx, live, template),
            content_type="application/strategic-merge-patch+json",
            expect=frozenset({409}),
        )
        if isinstance(answer, Response):  # changed since we read it: patch the fresh one
            w.live = read_object(ctx.kube, w.kind.resource, w.namespace, w.name)
            if w.live is None:
                raise ClusterError(f"{w.kind.name} {w.namespace}/{w.name} was deleted")
            continue
        w.live = dict(answer)
        state.changed = True
        break
    else:
        raise ClusterError(
            f"{w.kind.name} {w.namespace}/{w.name} kept changing; gave up after "
            f"{_CONFLICT_TRIES} tries"
        )
    assert w.live is not None
    w.applied(w.live)
    if w.changed:
        generation = (w.live.get("metadata") or {}).get("generation")
        ctx.io.info(f"{w.display}: updated, generation {generation}")
    else:
        ctx.io.info(f"{w.display}: already running {w.new_images(ctx.image)}")
