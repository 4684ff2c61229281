"""Put back the objects the manifests changed, as the run found them, never over others' edits.

What the run found is put back before the workloads are undone (pods the undo
re-creates read their ConfigMaps and Secrets when they start); what it created is
deleted after (the failed revision may still refer to it until then):

- an object the run created is deleted (``uid`` precondition: never one someone
  made again); one that finalizers hold is reported ``deleting``, not deleted;
- any other object is put back with a ``resourceVersion`` precondition, and only
  if nobody changed it after our apply: a change by someone else is a conflict,
  named, and their version stays;
- a workload document gets back the fields other than its pod template that the
  run changed (replicas, strategy, minReadySeconds, labels, …), each only if it is
  still what the run set; the template is the undo's (:mod:`~deployer.rollout.rollback`);
- a Job is left: a migration cannot be un-run, and one still running is left to finish.

Returns one line per object for the log and the summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployer.cluster import Kube, Response
from deployer.errors import AccessDenied, ClusterError
from deployer.rollout.apply import Applied, ManifestSet, delete, read
from deployer.rollout.kinds import kind_named

__all__ = ["restore"]

_SERVER_FIELDS = ("managedFields", "generation", "creationTimestamp", "uid", "selfLink")
_TRIES = 3  # a 409 when only the status moved: read again and retry
_NOT_RESTORED = ("template", "selector")  # the undo's, and immutable
_MERGE_PATCH = "application/merge-patch+json"


def restore(kube: Kube, manifests: ManifestSet, *, created: bool) -> list[str]:
    """Put back the applied objects the run found (``created``: delete those it made).

    Newest document first; one line each (an empty line: nothing to say). The
    caller restores what the run found before the undo, and deletes what it made
    after (nothing refers to those then: a generated ConfigMap's new name).
    """
    lines = []
    for item in reversed(manifests.items):
        made = item.prior is None and item.readable and not item.is_job
        if not item.done or item.restored or made != created:
            continue
        item.restored = True  # tried once: a second pass (a cancel mid-rollback) skips it
        try:
            line = _restore(kube, item)
        except (ClusterError, AccessDenied) as e:
            line = f"{item.label}: not restored: {e.message}"
        if line:
            lines.append(line)
    return lines


def _restore(kube: Kube, item: Applied) -> str:
    if item.is_job:
        return f"{item.label}: left as is (a migration is never undone, nor stopped half-way)"
    if not item.readable:
        return f"{item.label}: not restored: the credentials may not read it"
    if item.prior is None:
        return _delete_created(kube, item)
    if kind_named(item.manifest.api_version, item.manifest.kind) is not None:
        return _restore_fields(kube, item)
    return _put_back(kube, item)


def _delete_created(kube: Kube, item: Applied) -> str:
    uid = str(((item.after or {}).get("metadata") or {}).get("uid") or "")
    answer = delete(kube, item, propagation="Background", uid=uid)
    if isinstance(answer, Response):
        if answer.status == 404:
            return f"{item.label}: already gone (created by this run)"
        return f"{item.label}: not deleted: it was made again by someone else since this run"
    meta = answer.get("metadata") or {}
    if answer.get("kind") != "Status" and meta.get("deletionTimestamp"):
        held = [
            *(meta.get("finalizers") or []),
            *((answer.get("spec") or {}).get("finalizers") or []),
        ]
        why = f"held by finalizers {', '.join(map(str, held))}" if held else "terminating"
        return f"{item.label}: deleting ({why}; created by this run)"
    return f"{item.label}: deleted (created by this run)"


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a user edits: everything but status and the server's metadata."""
    meta = obj.get("metadata") or {}
    body = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    body["labels"] = meta.get("labels") or {}
    body["annotations"] = meta.get("annotations") or {}
    return body


def _put_back(kube: Kube, item: Applied) -> str:
    assert item.resource is not None and item.prior is not None
    for _ in range(_TRIES):
        live = read(kube, item)
        body = {k: v for k, v in item.prior.items() if k != "status"}
        meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
        if live is None:
            meta.pop("resourceVersion", None)
            body["metadata"] = meta
            kube.request("POST", item.resource, verb="create", namespace=item.namespace, body=body)
            return f"{item.label}: created again as it was (it was deleted during the run)"
        if item.after is not None and _content(live) != _content(item.after):
            return _conflict(item, live)
        meta["resourceVersion"] = live["metadata"]["resourceVersion"]
        body["metadata"] = meta
        answer = kube.request(
            "PUT",
            item.resource,
            verb="update",
            namespace=item.namespace,
            name=item.manifest.name,
            body=body,
            expect=frozenset({409}),
        )
        if not isinstance(answer, Response):
            return f"{item.label}: restored to what it was before the run"
    return f"{item.label}: not restored: it kept changing ({_TRIES} conflicts)"


def _conflict(item: Applied, live: Mapping[str, Any]) -> str:
    ours = ((item.after or {}).get("metadata") or {}).get("resourceVersion")
    now = (live.get("metadata") or {}).get("resourceVersion")
    return (
        f"{item.label}: not restored: conflict, changed by someone else after this run "
        f"applied it (resourceVersion {ours} -> {now}); their version stays"
    )


def _at(obj: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _turn_into(ours: Any, prior: Any) -> Any:
    """The JSON merge patch that turns ``ours`` into ``prior`` (None: remove)."""
    if not (isinstance(ours, Mapping) and isinstance(prior, Mapping)):
        return prior
    patch = {k: None for k in ours if k not in prior}
    for key, value in prior.items():
        if ours.get(key) != value:
            patch[key] = _turn_into(ours.get(key), value)
    return patch


def _field_paths(item: Applied) -> list[tuple[str, ...]]:
    spec = item.manifest.doc.get("spec") or {}
    paths = [("spec", key) for key in spec if key not in _NOT_RESTORED]
    return [*paths, ("metadata", "labels")]


def _fields_patch(
    item: Applied, live: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(merge patch, fields it restores, fields someone else changed since our apply)."""
    patch: dict[str, Any] = {}
    restored, conflicts = [], []
    for path in _field_paths(item):
        ours, before = _at(item.after, path), _at(item.prior, path)
        if ours == before:
            continue
        name = ".".join(path)
        if _at(live, path) != ours:
            conflicts.append(name)
            continue
        patch.setdefault(path[0], {})[path[1]] = _turn_into(ours, before)
        restored.append(name)
    return patch, restored, conflicts


def _restore_fields(kube: Kube, item: Applied) -> str:
    """A workload document: the fields the run changed, each only if still ours."""
    assert item.resource is not None
    for _ in range(_TRIES):
        live = read(kube, item)
        if live is None or item.after is None:
            return ""  # gone: the undo says so; answer lost: nothing to compare with
        patch, restored, conflicts = _fields_patch(item, live)
        if patch:
            patch.setdefault("metadata", {})["resourceVersion"] = live["metadata"][
                "resourceVersion"
            ]
            answer = kube.request(
                "PATCH",
                item.resource,
                verb="patch",
                namespace=item.namespace,
                name=item.manifest.name,
                body=patch,
                content_type=_MERGE_PATCH,
                expect=frozenset({409}),
            )
            if isinstance(answer, Response):  # its status moved in between: again
                continue
        lines = [f"{', '.join(restored)} restored"] if restored else []
        if conflicts:
            lines.append(f"{', '.join(conflicts)} changed by someone else since: theirs stays")
        return f"{item.label}: {'; '.join(lines)}" if lines else ""
    return f"{item.label}: fields not restored: it kept changing ({_TRIES} conflicts)"
