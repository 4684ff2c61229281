"""Step 5, roll back: put the cluster back as the run found it, config first.

In order, on the rollback's own budget (the reserve the forward waits left):

1. every other object the manifests changed is put back (:mod:`~deployer.rollout.restore`):
   ConfigMaps, Secrets, Services, … and the non-template fields of workload
   documents — *before* the undo, because pods the undo re-creates read their
   ConfigMaps and Secrets when they start;
2. every workload the run changed is undone like ``kubectl rollout undo``
   (:mod:`~deployer.rollout.undo`);
3. the undo is watched until complete (a StatefulSet's stuck pods deleted:
   :mod:`~deployer.rollout.force`) — except after a cancel, which only issues
   the requests (the runner kills the container seconds later);
4. what the run created is deleted (nothing refers to it any more).

With ``rollback-on-failure: false`` nothing is undone and each failure says how.
"""

from __future__ import annotations

from deployer.errors import ClusterError
from deployer.rollout.check import read_object
from deployer.rollout.context import Context
from deployer.rollout.force import force_stuck_pods
from deployer.rollout.kinds import STATEFULSET, template_of
from deployer.rollout.restore import restore
from deployer.rollout.result import report_failures
from deployer.rollout.state import RunState, Workload
from deployer.rollout.undo import undo
from deployer.rollout.verdicts import superseded
from deployer.rollout.watch import wait_for

__all__ = ["after_failure", "cancel_back", "put_back", "roll_back"]


def after_failure(ctx: Context, state: RunState) -> None:
    """When anything failed: tell why, then roll back (or say how to, when that is off)."""
    failed = state.failed()
    if not failed:
        return
    report_failures(ctx.io, failed)
    if ctx.config.rollback_on_failure:
        roll_back(ctx.for_rollback(), state, failed)
    else:
        for w in state.workloads:
            w.left_as_is()


def _undo(ctx: Context, w: Workload) -> str:
    """Patch ``w`` back; returns where it goes back to, "" when there is nothing to undo."""
    if w.before is None:
        return ""
    live = read_object(ctx.kube, w.kind.resource, w.namespace, w.name)
    if live is None:
        raise ClusterError(f"{w.kind.name} {w.namespace}/{w.name} no longer exists")
    if w.holder is not None:  # a workloadRef Rollout: its template is in the Deployment
        holder = read_object(ctx.kube, w.holder.kind.resource, w.namespace, w.holder.name)
        w.holder.template = dict(template_of(holder)) if holder is not None else {}
    if superseded(ctx, w, live):  # changed by someone else after ours failed
        w.superseded_before_undo()
        return ""
    target = w.target_images(ctx.image)
    plan, now = undo(ctx.kube, w.kind, w.namespace, w.name, w.before, target, w.containers)
    w.live = now
    if plan is None:
        w.not_undone("no rollout history found: nothing to roll back to")
        return ""
    ctx.io.info(f"{w.display}: rolling back to {plan.source}")
    return plan.source


def _undo_all(ctx: Context, state: RunState, culprits: str) -> list[Workload]:
    """Issue the undo of every changed workload not undone yet; returns those undone now."""
    undone: list[Workload] = []
    for w in state.workloads:
        if w.undo_source:
            continue
        if not w.changed or w.superseded:
            if w.superseded:
                w.nothing_to_roll_back()
            continue
        w.prepare_undo(culprits)
        try:
            source = _undo(ctx, w)
        except ClusterError as e:
            w.not_undone(f"rollback failed: {e.message}")
            continue
        if source:
            w.undo_issued(source)
            undone.append(w)
    return undone


def _restore(ctx: Context, state: RunState, *, created: bool) -> None:
    if state.manifests is not None:
        lines = restore(ctx.kube, state.manifests, created=created)
        state.restored += lines
        for line in lines:
            ctx.io.info(line)


def put_back(ctx: Context, state: RunState, culprits: str = "") -> list[Workload]:
    """Steps 1 and 2: restore what the run found, then issue the undos (not waited for)."""
    _restore(ctx, state, created=False)
    return _undo_all(ctx, state, culprits)


def roll_back(ctx: Context, state: RunState, failed: list[Workload]) -> None:
    """Put everything back and wait until the workloads run what the run found."""
    culprits = ", ".join(w.name for w in failed if w.culprit)
    with ctx.io.group("Rolling back"):
        undoing = put_back(ctx, state, culprits)
        for w in undoing:
            w.start_undo()
        if undoing:
            wait_for(ctx, undoing, ctx.budget.undo_until, undoing=True)
        for w in undoing:
            if w.failed:
                ctx.io.error(f"{w.label}: {w.reason}", title=f"Rollback of {w.name} failed")
        _restore(ctx, state, created=True)


def cancel_back(ctx: Context, state: RunState) -> None:
    """After a cancel: issue every restore and undo at once, without waiting for them."""
    with ctx.io.group("Cancelled: putting back what the run changed"):
        for w in put_back(ctx, state):
            if w.kind is STATEFULSET:  # a pod stuck on the new revision would block it
                try:
                    force_stuck_pods(ctx, w)
                except ClusterError as e:
                    ctx.io.warning(f"{w.display}: stuck pods not deleted: {e.message}")
        _restore(ctx, state, created=True)
        for w in state.workloads:
            if w.undo_source and not w.failed:
                w.cancel_undone()
