"""Step 5, roll back: put the cluster back as the run found it.

Every workload the run changed is undone like ``kubectl rollout undo``
(:mod:`~deployer.rollout.undo`) and watched until the undo completes; every other
object the manifests changed is put back (:mod:`~deployer.rollout.restore`).
With ``rollback-on-failure: false`` nothing is undone and each failure says how.
"""

from __future__ import annotations

from deployer.errors import ClusterError
from deployer.rollout.check import read_object
from deployer.rollout.context import Context
from deployer.rollout.restore import restore
from deployer.rollout.result import report_failures
from deployer.rollout.state import RunState, Workload
from deployer.rollout.undo import undo
from deployer.rollout.verdicts import superseded
from deployer.rollout.watch import wait_for

__all__ = ["after_failure", "roll_back"]


def after_failure(ctx: Context, state: RunState) -> None:
    """When anything failed: tell why, then roll back (or say how to, when that is off)."""
    failed = state.failed()
    if not failed:
        return
    report_failures(ctx.io, failed)
    if ctx.config.rollback_on_failure:
        roll_back(ctx, state, failed)
    else:
        for w in state.workloads:
            w.left_as_is()


def _undo(ctx: Context, w: Workload) -> bool:
    """Patch ``w`` back; False when there is nothing to undo."""
    if w.before is None:
        return False
    live = read_object(ctx.kube, w.kind.resource, w.namespace, w.name)
    if live is None:
        raise ClusterError(f"{w.kind.name} {w.namespace}/{w.name} no longer exists")
    if superseded(ctx, w, live):  # changed by someone else after ours failed
        w.superseded_before_undo()
        return False
    target = w.target_images(ctx.image)
    plan, now = undo(ctx.kube, w.kind, w.namespace, w.name, w.before, target, w.containers)
    w.live = now
    if plan is None:
        w.not_undone("no rollout history found: nothing to roll back to")
        return False
    ctx.io.info(f"{w.display}: rolling back to {plan.source}")
    w.start_undo(w.undo_reason)
    return True


def _undo_all(ctx: Context, state: RunState, failed: list[Workload]) -> list[Workload]:
    """Start the undo of every changed workload; returns those now rolling back."""
    culprits = ", ".join(w.name for w in failed if w.culprit)
    undoing: list[Workload] = []
    for w in state.workloads:
        if not w.changed or w.superseded:
            if w.superseded:
                w.nothing_to_roll_back()
            continue
        w.prepare_undo(culprits)
        try:
            if _undo(ctx, w):
                undoing.append(w)
        except ClusterError as e:
            w.not_undone(f"rollback failed: {e.message}")
    return undoing


def _restore_manifests(ctx: Context, state: RunState) -> None:
    if state.manifests is None:
        return
    handled = {(w.kind.name, w.namespace, w.name) for w in state.workloads}
    state.restored = restore(
        state.manifests,
        lambda i: (
            (i.manifest.kind, i.namespace, i.manifest.name) in handled and i.prior is not None
        ),
    )
    for line in state.restored:
        ctx.io.info(line)


def roll_back(ctx: Context, state: RunState, failed: list[Workload]) -> None:
    """Undo every changed workload and wait for it, then restore the other objects."""
    with ctx.io.group("Rolling back"):
        undoing = _undo_all(ctx, state, failed)
        if undoing:
            wait_for(ctx, undoing, ctx.budget.undo_until, undoing=True)
        for w in undoing:
            if w.failed:
                ctx.io.error(f"{w.label}: {w.reason}", title=f"Rollback of {w.name} failed")
        _restore_manifests(ctx, state)
