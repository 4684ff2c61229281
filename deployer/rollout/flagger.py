"""Flagger around the generic steps: which Canary judges a workload, and its verdicts.

When Flagger is installed (its ``canaries.flagger.app`` served), every Deployment or
DaemonSet the run changes is looked up as a Canary's ``targetRef`` (in the cluster
and in ``manifests``). Such a workload is patched as usual, but judged by its
Canary (:mod:`~deployer.rollout.flagger_status`): promoted is succeeded, Failed is a
failure whose reason is Flagger's own (its Warning events since our change). The
undo puts the target's template back (``kubectl rollout undo``), and is verified
when Flagger sees the primary's template again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from deployer.cluster import CANARIES, discover
from deployer.errors import AccessDenied, ClusterError
from deployer.manifests import Manifest
from deployer.rollout.context import Context
from deployer.rollout.diagnose import Diagnosis, object_events
from deployer.rollout.events import Item
from deployer.rollout.flagger_status import (
    Canary,
    canary_progress,
    canary_status,
    canary_undo_status,
)
from deployer.rollout.probe import changed_at
from deployer.rollout.state import Phase, Workload

__all__ = ["API_VERSION", "attach_canaries", "fold_canaries", "judge_canary", "time_out_canary"]

API_VERSION = "flagger.app/v1beta1"
_TARGETS = ("Deployment", "DaemonSet")
# Flagger's own closing words carry no reason; the reason is in the events before them.
_GENERIC = ("Canary failed!",)


def _target(doc: Mapping[str, Any]) -> tuple[str, str]:
    ref = (doc.get("spec") or {}).get("targetRef") or {}
    return str(ref.get("kind", "")), str(ref.get("name", ""))


def _served(ctx: Context) -> bool:
    try:
        discover(ctx.kube, API_VERSION, "Canary", {})
    except ClusterError:
        return False
    return True


def _listed(ctx: Context, namespace: str, names: str) -> list[dict[str, Any]]:
    try:
        listing = ctx.kube.request("GET", CANARIES, verb="list", namespace=namespace)
    except AccessDenied as e:
        raise AccessDenied(
            f"Flagger is installed, and the credentials may not list canaries.flagger.app in "
            f"namespace {namespace}: the deploy must know whether a Canary judges {names} "
            "(add get, list and watch on canaries.flagger.app to the Role, see docs/cluster.md)",
            details=e.details,
        ) from None
    return [dict(c) for c in listing.get("items") or []]


def attach_canaries(
    ctx: Context,
    workloads: list[Workload],
    manifests: list[Manifest],
    say: Callable[[str], None] | None = None,
) -> None:
    """Give each workload that a Flagger Canary targets its :class:`Canary`."""
    targets = [w for w in workloads if w.kind.name in _TARGETS]
    if not targets or not _served(ctx):
        return
    for ns in dict.fromkeys(w.namespace for w in targets):
        here = [w for w in targets if w.namespace == ns]
        found = {_target(c): c for c in _listed(ctx, ns, ", ".join(w.display for w in here))}
        for m in manifests:  # a Canary the manifests create with its Deployment
            if m.kind == "Canary" and m.api_version == API_VERSION and m.namespace(ns) == ns:
                found.setdefault(_target(m.doc), {"metadata": {"name": m.name}})
        for w in here:
            canary = found.get((w.kind.name, w.name))
            if canary is None:
                continue
            name = str((canary.get("metadata") or {}).get("name", ""))
            before = canary if "status" in canary or "spec" in canary else None
            w.canary = Canary(name, before, before)
            if say is not None:
                say(f"{w.display}: judged by Flagger's canary {name}")


def fold_canaries(item: Item, workloads: list[Workload]) -> list[Workload]:
    """A canaries watch item into the workloads its Canaries judge; returns those touched."""
    _, _, ns = item.key.partition("/")
    mine = [w for w in workloads if w.canary is not None and w.namespace == ns and w.open]
    what = item.what
    if isinstance(what, ClusterError):
        for w in mine:
            w.fail(what.message)
        return []
    named = {str(o["metadata"]["name"]): o for o in what.objects}
    touched = []
    for w in mine:
        assert w.canary is not None
        obj = named.get(w.canary.name)
        if obj is not None and what.type == "DELETED":
            w.fail(f"Canary {ns}/{w.canary.name} was deleted during the rollout")
        elif obj is not None:
            w.canary.live = dict(obj)
            touched.append(w)
    return touched


def _diagnosis(ctx: Context, w: Workload, reason: str) -> tuple[str, Diagnosis]:
    """Flagger's Warning events on the Canary since our change: the reason is in them."""
    assert w.canary is not None
    kube = ctx.diagnosis_kube()
    notes: list[str] = []
    try:
        events = object_events(kube, w.namespace, "Canary", w.canary.name, changed_at(w))
    except ClusterError as e:
        events, notes = [], [f"(events not available: {e.message})"]
    telling = [e.split(": ", 2)[-1] for e in events if not any(g in e for g in _GENERIC)]
    if telling:
        reason += f" ({'; '.join(dict.fromkeys(telling[-2:]))})"
    return reason, Diagnosis(reason, tuple(events), (), tuple(notes))


def judge_canary(ctx: Context, w: Workload, undoing: bool) -> None:
    """Judge ``w`` by its Canary (while undoing: until Flagger sees the restored template)."""
    canary = w.canary
    assert canary is not None
    status = canary_undo_status(canary) if undoing else canary_status(canary, w.changed)
    progress = f"canary {canary.name}: {canary_progress(canary)}" if status.observed else ""
    if progress and progress != w.progress:
        w.progress = progress
        ctx.io.info(f"{w.display}: {progress}")
    if status.state == "complete":
        w.succeed()
        done = "rolled back" if undoing else "rolled out"
        ctx.io.info(f"{w.display}: {done} in {ctx.spent():.1f} s: {status.message}")
    elif status.state == "failed":
        w.fail(*_diagnosis(ctx, w, status.message))


def time_out_canary(ctx: Context, w: Workload) -> None:
    """The deadline came first: fail ``w`` saying where its Canary stood."""
    canary = w.canary
    assert canary is not None
    if w.phase is Phase.ROLLING_BACK:
        status = canary_undo_status(canary)
    else:
        status = canary_status(canary, w.changed)
    w.fail(*_diagnosis(ctx, w, f"not complete after {ctx.spent():.0f} s: {status.message}"))
