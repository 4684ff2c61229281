"""Step 2, migrations: a Job in ``manifests`` runs to completion before any workload changes.

The Job is applied (replaced when its template changed, as a Job's template is
immutable) and waited for; its pods are judged like a workload's new pods. A
failed Job stops the run: nothing after it is changed.
"""

from __future__ import annotations

from deployer.cluster import JOBS, PODS
from deployer.errors import Cancelled
from deployer.rollout.apply import Applied
from deployer.rollout.context import Context
from deployer.rollout.diagnose import Diagnosis, diagnose_pod
from deployer.rollout.kinds import JOB, containers_of, template_of
from deployer.rollout.state import RunState, Workload
from deployer.rollout.status import job_status, pod_problem

__all__ = ["run_job"]

_JOB_POLL = 1.0
_DIAGNOSIS_SECONDS = 10.0


def _job_workload(ctx: Context, item: Applied) -> Workload:
    """The Job as a workload: its containers that run one of the run's images, each its own."""
    template = template_of(item.manifest.doc)
    found = {
        str(c.get("name")): ctx.images.target(str(c.get("image", "")))
        for c in containers_of(template)
    }
    images = {c: image for c, image in found.items() if image}
    ns = item.namespace or ""
    job = Workload(JOB, ns, item.manifest.name, tuple(images), item.prior, None, True)
    job.images = images
    return job


def run_job(ctx: Context, state: RunState, item: Applied) -> bool:
    """Apply one migration Job and wait for it; False when it failed (the run stops)."""
    assert state.manifests is not None
    job = _job_workload(ctx, item)
    state.jobs.append(job)
    with ctx.io.group(f"Job {job.name}"):
        state.manifests.apply(item)
        state.changed = True
        why, diagnosis = _wait_job(ctx, item)
    if not why:
        job.succeed()
        return True
    job.migration_failed(why, diagnosis)
    for w in state.workloads:
        w.not_changed(job.name)
    return False


def _job_failed(
    ctx: Context, ns: str, name: str, reason: str, pod: str, container: str
) -> tuple[str, Diagnosis]:
    kube = ctx.kube.with_deadline(ctx.now() + _DIAGNOSIS_SECONDS)
    why = f"Job {name} failed: {reason}"
    return why, diagnose_pod(kube, ns, why, pod, container, owners=(("Job", name),))


def _wait_job(ctx: Context, item: Applied) -> tuple[str, Diagnosis | None]:
    """Wait for a Job to complete; returns "" or the failure, with its diagnosis."""
    name, ns = item.manifest.name, item.namespace or ctx.namespace
    seen: dict[tuple[str, str, str], float] = {}
    message = ""
    while True:
        job = ctx.kube.request("GET", JOBS, verb="get", namespace=ns, name=name)
        status = job_status(job)
        if status.state == "complete":
            ctx.io.info(f"Job {name}: completed")
            return "", None
        query = [("labelSelector", f"job-name={name}")]
        listing = ctx.kube.request("GET", PODS, verb="list", namespace=ns, query=query)
        pods = listing.get("items") or []
        now = ctx.now()
        current = {}
        for pod in pods:
            found = pod_problem(pod, ctx.policy)
            if found is not None:
                current[found.key] = found
                first = seen.setdefault(found.key, now)
                if found.grace is not None and now - first >= found.grace:
                    return _job_failed(ctx, ns, name, found.line(), found.pod, found.container)
        seen = {k: v for k, v in seen.items() if k in current}
        last = pods[-1]["metadata"]["name"] if pods else ""
        if status.state == "failed":
            return _job_failed(ctx, ns, name, status.message, last, "")
        if status.message != message:
            message = status.message
            ctx.io.info(f"Job {name}: {message}")
        if now >= ctx.kube.deadline:
            return _job_failed(ctx, ns, name, f"not complete in time: {message}", last, "")
        if ctx.clock.wait(ctx.cancel, _JOB_POLL):
            raise Cancelled("cancelled")
