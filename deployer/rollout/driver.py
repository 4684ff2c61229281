"""The roll-out stage in order: check, apply (migrations first), watch, roll back, report.

:func:`run` is the whole stage and reads like the README's "what happens": each
step is a function of its own module taking the :class:`Context` and the
:class:`RunState`. Problems found before anything changed raise; once something
changed, every outcome (a failure, an API error, a cancel) is a result.
"""

from __future__ import annotations

import dataclasses

from deployer.errors import Cancelled, ClusterError
from deployer.manifests import Manifest
from deployer.rollout.change import change
from deployer.rollout.check import Plan, check, load
from deployer.rollout.context import RELEASE_AFTER_CANCEL, Context
from deployer.rollout.dry_run import show_plan
from deployer.rollout.extras import report_url
from deployer.rollout.lease import Lease
from deployer.rollout.result import RolloutResult, report_failures, result_of
from deployer.rollout.rollback import after_failure, cancel_back, roll_back
from deployer.rollout.state import Outcome, RunState
from deployer.rollout.watch import wait_for

__all__ = ["preflight", "run"]


def preflight(ctx: Context) -> Plan:
    """Only the checks, before the build: raise for anything that would stop the rollout."""
    manifests = load(ctx, warn=True)
    with ctx.io.group("Checking the cluster before the build"):
        return check(ctx, manifests, announce=False)


def _namespaces(ctx: Context, manifests: list[Manifest]) -> list[str]:
    named = {str(m.doc["metadata"].get("namespace") or "") for m in manifests}
    return sorted({ctx.namespace, *named} - {""})


def run(ctx: Context) -> RolloutResult:
    """The whole stage; returns a result, or raises for a problem before any change."""
    state = RunState()
    manifests = load(ctx, warn=not ctx.checked)
    lease = None if ctx.config.dry_run else Lease(ctx, _namespaces(ctx, manifests))
    after: Context | None = None  # once cancelled: the one budget of the whole cancel
    try:
        try:
            if lease is not None:  # one run at a time per namespace; its timeout starts now
                lease.acquire(until=ctx.now() + ctx.config.timeout)
                state.notes += lease.notes
                ctx = ctx.restarted()
            return _forward(ctx, state, manifests, lease)
        except ClusterError as e:
            if not state.changed:
                raise
            return _broken(ctx, state, e)
    except Cancelled:  # also one during the rollback after an error
        after = ctx.for_cancel()
        return _cancelled(after, state)
    finally:
        if lease is not None and after is not None:
            kube = after.kube.with_deadline(after.now() + RELEASE_AFTER_CANCEL)
            lease.release(kube, within=RELEASE_AFTER_CANCEL)
        elif lease is not None:  # a client with its own deadline: the run's may have passed
            lease.release(ctx.for_cancel().kube)


def _changes(ctx: Context, state: RunState) -> list[str]:
    """What the run is about to change, in words, for a run that may take over."""
    found = [f"{w.display} ({w.previous_image or 'new'} -> {ctx.image})" for w in state.workloads]
    items = state.manifests.items if state.manifests else []
    shown = {(w.kind.name, w.namespace, w.name) for w in state.workloads}
    found += [
        i.label for i in items if (i.manifest.kind, i.namespace, i.manifest.name) not in shown
    ]
    return found


def _forward(
    ctx: Context, state: RunState, manifests: list[Manifest], lease: Lease | None
) -> RolloutResult:
    with ctx.io.group("Checking the cluster"):
        plan = check(ctx, manifests)
    state.workloads, state.manifests = plan.workloads, plan.applied
    if ctx.config.dry_run:
        return show_plan(ctx, plan, state)
    if ctx.cancel.is_set():
        raise Cancelled("cancelled")
    if lease is not None:
        lease.record(_changes(ctx, state))
    if change(ctx, state):
        wait_for(ctx, state.open(), ctx.budget.forward)
    after_failure(ctx, state)
    result = result_of(state, ctx.image)
    if result.status != "succeeded":
        return result
    items = state.manifests.items if state.manifests else []
    return dataclasses.replace(result, url=report_url(ctx.kube, ctx.io, items, state.workloads))


def _cancelled(ctx: Context, state: RunState) -> RolloutResult:
    """SIGINT/SIGTERM: put back what the run changed at once (not verified), then report.

    ``ctx`` is :meth:`Context.for_cancel`'s: its requests end within ``CANCEL_SECONDS``.
    """
    ctx.cancel.set()
    if state.changed and ctx.config.rollback_on_failure:
        try:
            cancel_back(ctx, state)
        except ClusterError as e:
            ctx.io.error(f"Putting back stopped: {e.message}", title="Rollback failed")
    for job in state.jobs:
        if job.open:  # the migration the cancel caught: the run's own, left to finish
            job.cancel_migration()
    for w in state.workloads:
        if not w.undo_source:
            w.cancel()
    caught = [j for j in state.jobs if j.outcome is Outcome.CANCELLED]
    told = [*caught, *state.workloads]
    ctx.io.warning("Cancelled; " + "; ".join(f"{w.display}: {w.reason}" for w in told))
    return result_of(state, ctx.image, status="cancelled")


def _broken(ctx: Context, state: RunState, error: ClusterError) -> RolloutResult:
    """An API error once something changed is an outcome: report it and undo."""
    for w in state.workloads:
        if w.open:
            w.not_verified(error.message)
    failed = [w for w in state.workloads if w.failed]
    report_failures(ctx.io, failed)
    if ctx.config.rollback_on_failure:
        try:
            roll_back(ctx.for_rollback(), state, failed)
        except ClusterError as again:
            ctx.io.error(f"Rollback stopped: {again.message}", title="Rollback failed")
    return result_of(state, ctx.image)
