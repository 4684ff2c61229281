"""Step 2, migrations: a Job in ``manifests`` runs to completion before any workload changes.

A Job runs on every run that applies it, like ``helm`` hooks users know:

1. a Job of the same name from an earlier run (Complete, Failed, or another
   template: a Job's template is immutable) is deleted with ``Foreground``
   propagation and waited for until it is gone, so its pods are gone first and
   never overlap the new ones;
2. the new Job is applied and watched from the version its creation returned
   (:func:`~deployer.rollout.watch.wait_for`, the same loop as the workloads): a
   ``ttlSecondsAfterFinished: 0`` Job deleted right after it completed is seen
   complete, not missing;
3. it is judged by its own conditions (``Complete``/``Failed``, so ``backoffLimit``
   counts); its pods fail it early only for what no retry fixes (pull errors, a
   missing ConfigMap); with ``restartPolicy: OnFailure`` a crashing container is
   the Job controller's to count, not ours.

A failed Job stops the run: nothing after it is changed. A Job that succeeded is
not undone by a rollback (a migration cannot be un-run).
"""

from __future__ import annotations

from deployer.cluster import Response
from deployer.errors import Cancelled, ClusterError
from deployer.rollout.apply import Applied, delete, read
from deployer.rollout.context import Context
from deployer.rollout.kinds import JOB, containers_of, template_of
from deployer.rollout.state import RunState, Workload
from deployer.rollout.status import job_status
from deployer.rollout.watch import wait_for

__all__ = ["run_job"]

_GONE_POLL = 0.25


def _job_workload(ctx: Context, item: Applied) -> Workload:
    """The Job as a workload: its containers that run one of the run's images, each its own."""
    template = template_of(item.manifest.doc)
    found = {
        str(c.get("name")): ctx.images.target(str(c.get("image", "")))
        for c in containers_of(template)
    }
    images = {c: image for c, image in found.items() if image}
    ns = item.namespace or ctx.namespace
    job = Workload(JOB, ns, item.manifest.name, tuple(images), item.prior, None, True)
    job.images = images
    return job


def _replace(ctx: Context, item: Applied) -> None:
    """Delete the Job of an earlier run, its pods first (Foreground), and wait until gone."""
    state = job_status(item.prior or {})
    ctx.io.info(f"Job {item.manifest.name}: replacing the one of an earlier run ({state.message})")
    answer = delete(ctx.kube, item, propagation="Foreground")
    if isinstance(answer, Response) and answer.status == 404:
        return
    while True:
        if read(ctx.kube, item) is None:
            return
        if ctx.now() >= ctx.kube.deadline:
            raise ClusterError(
                f"{item.label} of an earlier run was not gone (with its pods) before the "
                "deadline; nothing else was changed"
            )
        if ctx.clock.wait(ctx.cancel, _GONE_POLL):
            raise Cancelled("cancelled")


def run_job(ctx: Context, state: RunState, item: Applied) -> bool:
    """Run one migration Job to its end; False when it failed (the run stops)."""
    assert state.manifests is not None
    job = _job_workload(ctx, item)
    state.jobs.append(job)
    with ctx.io.group(f"Job {job.name}"):
        state.changed = True
        if item.replace:
            _replace(ctx, item)
        created = state.manifests.apply(item)
        job.live = created
        job.watch_from = str((created.get("metadata") or {}).get("resourceVersion") or "")
        wait_for(ctx, [job], ctx.budget.forward)
    if job.open:  # the loop stopped without a verdict: only a cancel does that
        raise Cancelled("cancelled")
    if not job.failed:
        ctx.io.info(f"Job {job.name}: completed")
        return True
    job.migration_failed()
    for w in state.workloads:
        w.not_changed(job.name)
    return False
