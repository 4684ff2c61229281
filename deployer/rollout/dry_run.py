"""The ``dry-run`` step: say what the run would change, change nothing.

It works on the checked :class:`~deployer.rollout.check.Plan` alone (each workload
as found and the containers to update; each manifest document with what it would
replace), so any module that computes more from a plan (a diff against the live
objects) takes the same ``Plan`` and adds to the summary.
"""

from __future__ import annotations

from deployer.manifests import cluster_scoped_note
from deployer.rollout.check import Plan
from deployer.rollout.context import Context
from deployer.rollout.result import RolloutResult, result_of
from deployer.rollout.state import RunState

__all__ = ["plan_lines", "show_plan"]


def plan_lines(plan: Plan, image: str) -> list[str]:
    """One line per container to update and per manifest document to apply."""
    lines = []
    for w in plan.workloads:
        current = w.images_of(w.before).split(", ") if w.before else []
        for index, container in enumerate(w.containers):
            was = (current[index] if index < len(current) else "") or "(created by the manifests)"
            lines.append(f"{w.display}: container {container}: {was} -> {image}")
    for item in plan.applied.items if plan.applied else ():
        verb = "replace" if item.replace else "apply"
        scope = " (cluster-scoped)" if item.manifest.cluster_scoped else ""
        lines.append(f"{verb} {item.label}{scope} from {item.manifest.source}")
    return lines


def show_plan(ctx: Context, plan: Plan, state: RunState) -> RolloutResult:
    """Print the plan to the log and return the ``planned`` result."""
    # The log only: the job summary shows the plan from the result (report.py), with
    # untrusted names in code spans.
    ctx.io.info("Dry run: nothing is changed. The plan:")
    for line in plan_lines(plan, ctx.image):
        ctx.io.info(f"  {line}")
    note = cluster_scoped_note(plan.manifests)
    if note:
        ctx.io.append_summary(note.lstrip("\n") + "\n")
    for w in state.workloads:
        w.plan()
    return result_of(state, ctx.image, status="planned")
