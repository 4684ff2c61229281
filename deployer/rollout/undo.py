"""Undo per kind, as ``kubectl rollout undo`` does, made safe for a deploy tool.

Planning is pure (:func:`plan_undo`): pick the revision to go back to and build
the patch. kubectl picks the second-highest revision; we pick, in order,

1. the owned revision whose template is the one the run found (the pre-run
   state, whatever was restarted or rolled in between),
2. else the highest owned revision that differs from the current template and
   does not run the image we deployed (a ``kubectl rollout restart`` during our
   rollout makes a revision with our image: going back to it undoes nothing),
3. else the template as the run found it (``revisionHistoryLimit: 0`` leaves no
   old ReplicaSet once a rollout completed; all-or-nothing still holds).

An Argo Rollout is first aborted (``kubectl argo rollouts abort``: the canary's
weight goes to zero at once) when an update is in flight, then its template is put
back with a JSON patch (a custom resource takes no strategic merge), its own
``rollout.argoproj.io/*`` annotations kept; the controller then skips the steps
("Rollback to stable ReplicaSets"). A ``workloadRef`` Rollout's template is undone
in its Deployment.

:func:`undo` does the requests: it reads the workload, refuses a paused
Deployment like kubectl, and patches with the resourceVersion it read, so a
change in between is a conflict (retried on the fresh object), never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from deployer.cluster import Resource, Response, label_selector
from deployer.errors import ClusterError
from deployer.rollout.kinds import (
    DEPLOYMENT,
    ROLLOUT,
    Kind,
    controlled_by,
    images,
    resource_version,
    template_of,
    uid_of,
)
from deployer.rollout.status import template_without_hash

__all__ = ["REVISION", "Api", "UndoPlan", "abort", "plan_undo", "revision_of", "undo"]

REVISION = "deployment.kubernetes.io/revision"
ARGO_REVISION = "rollout.argoproj.io/revision"
_ARGO_ANNOTATIONS = "rollout.argoproj.io/"  # the controller's own: never put back
# Annotations `kubectl rollout undo` keeps from the Deployment instead of the ReplicaSet.
_UNDO_KEEP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
_CONFLICT_TRIES = 4


class Api(Protocol):
    """What the undo needs of :class:`deployer.cluster.Kube` (a fake in unit tests)."""

    def request(
        self,
        method: str,
        resource: Resource,
        *,
        verb: str,
        namespace: str | None = None,
        name: str | None = None,
        sub: str = "",
        query: Sequence[tuple[str, Any]] | None = None,
        body: object = None,
        content_type: str | None = None,
        expect: frozenset[int] = frozenset(),
    ) -> Any: ...


def revision_of(obj: Mapping[str, Any] | None) -> int | None:
    """A ReplicaSet's/Deployment's/Rollout's revision annotation, or a ControllerRevision's."""
    if obj is None:
        return None
    value = obj.get("revision") if "data" in obj else None  # a ControllerRevision
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if value is None:
        value = annotations.get(REVISION, annotations.get(ARGO_REVISION))
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class UndoPlan:
    """The patch that restores an earlier template, and where it came from."""

    source: str  # "revision 3" or "the template as the run found it"
    revision: int | None
    body: Any
    content_type: str


def _target(
    live: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]],
    before: Mapping[str, Any] | None,
    image: str | Mapping[str, str],
    containers: tuple[str, ...],
) -> Mapping[str, Any] | None:
    uid = uid_of(live)
    owned = sorted(
        (h for h in history if revision_of(h) is not None and controlled_by(h, uid)),
        key=lambda h: revision_of(h) or 0,
        reverse=True,
    )
    current = template_without_hash(template_of(live))
    earlier = [h for h in owned if template_without_hash(template_of(h)) != current]
    if before is not None:
        found = template_without_hash(template_of(before))
        for h in earlier:
            if template_without_hash(template_of(h)) == found:
                return h
    ours = {c: image if isinstance(image, str) else image.get(c) for c in containers}
    for h in earlier:
        running = images(template_of(h))
        if not any(running.get(c) == ours[c] for c in containers):
            return h
    return None


def _deployment_patch(
    live: Mapping[str, Any], template: Mapping[str, Any], annotations_from: Mapping[str, Any]
) -> list[dict[str, Any]]:
    own = (live.get("metadata") or {}).get("annotations") or {}
    annotations = {k: v for k, v in own.items() if k in _UNDO_KEEP}
    for key, value in ((annotations_from.get("metadata") or {}).get("annotations") or {}).items():
        if key not in _UNDO_KEEP:
            annotations[key] = value
    return [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version(live)},
        {"op": "replace", "path": "/spec/template", "value": template_without_hash(template)},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]


def _custom_patch(
    live: Mapping[str, Any], template: Mapping[str, Any], before: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """A Rollout's undo: the template, and the annotations as the run found them."""
    own = (live.get("metadata") or {}).get("annotations") or {}
    annotations = {k: v for k, v in own.items() if k.startswith(_ARGO_ANNOTATIONS)}
    found = ((before or live).get("metadata") or {}).get("annotations") or {}
    annotations.update({k: v for k, v in found.items() if not k.startswith(_ARGO_ANNOTATIONS)})
    return [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version(live)},
        {"op": "replace", "path": "/spec/template", "value": template_without_hash(template)},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]


def plan_undo(
    kind: Kind,
    live: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]],
    before: Mapping[str, Any] | None,
    image: str | Mapping[str, str],
    containers: tuple[str, ...],
) -> UndoPlan | None:
    """The undo of ``live`` (see the module docstring); None when there is nothing to undo."""
    target = _target(live, history, before, image, containers)
    current = template_without_hash(template_of(live))
    if target is not None:
        template, source, revision = template_of(target), "", revision_of(target)
        source = f"revision {revision}"
    elif before is not None and template_without_hash(template_of(before)) != current:
        template, source, revision = template_of(before), "the template as the run found it", None
    else:
        return None
    if kind.custom:
        # The template exactly as the run found it: a ReplicaSet's copy carries the API
        # server's pod defaults, which a Rollout's own template does not have, and a
        # different template is a new revision for the controller, with all its steps.
        if before is not None and template_without_hash(template_of(before)) != current:
            template = template_of(before)
        body: Any = _custom_patch(live, template, before)
        return UndoPlan(source, revision, body, "application/json-patch+json")
    if kind is DEPLOYMENT:
        body = _deployment_patch(live, template, target if target is not None else before or {})
        return UndoPlan(source, revision, body, "application/json-patch+json")
    # kubectl applies the ControllerRevision's data as a strategic merge patch.
    replace = {**template_without_hash(template), "$patch": "replace"}
    body = {"metadata": {"resourceVersion": resource_version(live)}, "spec": {"template": replace}}
    return UndoPlan(source, revision, body, "application/strategic-merge-patch+json")


def abort(api: Api, namespace: str, name: str) -> bool:
    """``kubectl argo rollouts abort`` when an update is in flight; whether it was sent.

    Best effort: a Rollout that is gone, or credentials without ``patch`` on
    ``rollouts/status``, leave the template restore to do the rollback alone.
    """
    live = api.request(
        "GET", ROLLOUT.resource, verb="get", namespace=namespace, name=name, expect=frozenset({404})
    )
    status = {} if isinstance(live, Response) else live.get("status") or {}
    if not status or status.get("abort") or status.get("stableRS") == status.get("currentPodHash"):
        return False
    answer = api.request(
        "PATCH",
        ROLLOUT.resource,
        verb="patch",
        namespace=namespace,
        name=name,
        sub="status",
        body={"status": {"abort": True}},
        content_type="application/merge-patch+json",
        expect=frozenset({403, 404}),
    )
    return not isinstance(answer, Response)


def undo(
    api: Api,
    kind: Kind,
    namespace: str,
    name: str,
    before: Mapping[str, Any] | None,
    image: str | Mapping[str, str],
    containers: tuple[str, ...],
) -> tuple[UndoPlan | None, dict[str, Any]]:
    """Patch the workload back; returns the plan (None: nothing to undo) and the live object.

    An Argo Rollout is aborted first (see the module docstring). Raises
    :class:`ClusterError` when the workload is gone, paused, or keeps changing.
    """
    if kind is not ROLLOUT:
        return _undo_template(api, kind, namespace, name, before, image, containers)
    abort(api, namespace, name)
    live = _read(api, kind, namespace, name)
    ref = (live.get("spec") or {}).get("workloadRef")
    if not ref:
        return _undo_template(api, kind, namespace, name, before, image, containers)
    # Its template lives in the Deployment: undo that one, keep judging the Rollout.
    found = {"spec": {"template": template_of(before)}} if before is not None else None
    ref_name = str(ref.get("name", ""))
    plan, _ = _undo_template(api, DEPLOYMENT, namespace, ref_name, found, image, containers)
    return plan, _read(api, kind, namespace, name)


def _read(api: Api, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
    live = api.request(
        "GET", kind.resource, verb="get", namespace=namespace, name=name, expect=frozenset({404})
    )
    if isinstance(live, Response):
        raise ClusterError(f"{kind.name} {namespace}/{name} no longer exists")
    return dict(live)


def _undo_template(
    api: Api,
    kind: Kind,
    namespace: str,
    name: str,
    before: Mapping[str, Any] | None,
    image: str | Mapping[str, str],
    containers: tuple[str, ...],
) -> tuple[UndoPlan | None, dict[str, Any]]:
    """The undo of one object that holds its pod template (kubectl's, made safe)."""
    what = f"{kind.name} {namespace}/{name}"
    for _ in range(_CONFLICT_TRIES):
        live = api.request(
            "GET",
            kind.resource,
            verb="get",
            namespace=namespace,
            name=name,
            expect=frozenset({404}),
        )
        if isinstance(live, Response):
            raise ClusterError(f"{what} no longer exists")
        if kind is not ROLLOUT and (live.get("spec") or {}).get("paused"):
            raise ClusterError(
                f"{what} is paused; kubectl refuses to roll back a paused Deployment: resume "
                f"it, then kubectl rollout undo deployment/{name} -n {namespace}"
            )
        selector = label_selector((live.get("spec") or {}).get("selector") or {})
        listing = api.request(
            "GET",
            kind.history,
            verb="list",
            namespace=namespace,
            query=[("labelSelector", selector)],
        )
        plan = plan_undo(kind, live, listing.get("items") or [], before, image, containers)
        if plan is None:
            return None, dict(live)
        answer = api.request(
            "PATCH",
            kind.resource,
            verb="patch",
            namespace=namespace,
            name=name,
            body=plan.body,
            content_type=plan.content_type,
            expect=frozenset({409}),
        )
        if isinstance(answer, Response):  # changed since we read it: plan again
            continue
        return plan, dict(answer)
    raise ClusterError(f"{what} kept changing; gave up the rollback after {_CONFLICT_TRIES} tries")
