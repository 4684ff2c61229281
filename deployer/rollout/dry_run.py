"""The ``dry-run`` step: say what the run would change, change nothing.

Each object of the checked :class:`~deployer.rollout.check.Plan` is compared with the
live one by :mod:`deployer.plan` (the API server's dry run of the apply; a named
workload with its new images); the result carries it to the outputs, the summary
and the pull request comment.
"""

from __future__ import annotations

import dataclasses

from deployer.plan import ask_cluster, write_log
from deployer.rollout.apply import FIELD_MANAGER
from deployer.rollout.check import Plan
from deployer.rollout.context import Context
from deployer.rollout.result import RolloutResult, result_of
from deployer.rollout.state import RunState

__all__ = ["show_plan"]


def show_plan(ctx: Context, plan: Plan, state: RunState) -> RolloutResult:
    """Compare every object with the live one (deployer.plan), log it, return ``planned``."""
    ctx.io.info("Dry run: nothing is changed.")
    items = plan.applied.items if plan.applied else []
    found = ask_cluster(ctx.kube, items, plan.workloads, ctx.image, FIELD_MANAGER, ctx.io.mask)
    write_log(ctx.io, found)
    for w in state.workloads:
        w.plan()
    return dataclasses.replace(result_of(state, ctx.image, status="planned"), plan=found)
