"""The roll-out stage in order: check, apply (migrations first), watch, roll back, report.

:func:`run` is the whole stage and reads like the README's "what happens": each
step is a function of its own module taking the :class:`Context` and the
:class:`RunState`. Problems found before anything changed raise; once something
changed, every outcome (a failure, an API error, a cancel) is a result.
"""

from __future__ import annotations

import dataclasses

from deployer.errors import Cancelled, ClusterError
from deployer.rollout.change import change
from deployer.rollout.check import Plan, check, load
from deployer.rollout.context import Context
from deployer.rollout.dry_run import show_plan
from deployer.rollout.extras import report_url
from deployer.rollout.result import RolloutResult, report_failures, result_of
from deployer.rollout.rollback import after_failure, roll_back
from deployer.rollout.state import RunState
from deployer.rollout.watch import wait_for

__all__ = ["preflight", "run"]


def preflight(ctx: Context) -> Plan:
    """Only the checks, before the build: raise for anything that would stop the rollout."""
    manifests = load(ctx, warn=True)
    with ctx.io.group("Checking the cluster before the build"):
        return check(ctx, manifests, announce=False)


def run(ctx: Context) -> RolloutResult:
    """The whole stage; returns a result, or raises for a problem before any change."""
    state = RunState()
    try:
        return _forward(ctx, state)
    except Cancelled:
        return _cancelled(ctx, state)
    except ClusterError as e:
        if not state.changed:
            raise
        return _broken(ctx, state, e)


def _forward(ctx: Context, state: RunState) -> RolloutResult:
    manifests = load(ctx, warn=not ctx.checked)
    with ctx.io.group("Checking the cluster"):
        plan = check(ctx, manifests)
    state.workloads, state.manifests = plan.workloads, plan.applied
    if ctx.config.dry_run:
        return show_plan(ctx, plan, state)
    if ctx.cancel.is_set():
        raise Cancelled("cancelled")
    if change(ctx, state):
        wait_for(ctx, state.open(), ctx.budget.forward)
    after_failure(ctx, state)
    result = result_of(state, ctx.image)
    if result.status != "succeeded":
        return result
    items = state.manifests.items if state.manifests else []
    return dataclasses.replace(result, url=report_url(ctx.kube, ctx.io, items, state.workloads))


def _cancelled(ctx: Context, state: RunState) -> RolloutResult:
    ctx.cancel.set()
    for w in state.workloads:
        w.cancel()
    ctx.io.warning("Cancelled; " + "; ".join(f"{w.display}: {w.reason}" for w in state.workloads))
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
            roll_back(ctx, state, failed)
        except ClusterError as again:
            ctx.io.error(f"Rollback stopped: {again.message}", title="Rollback failed")
    return result_of(state, ctx.image)
