"""Turning the pure judge's verdict on one workload into its state, with a diagnosis.

:func:`judge_workload` builds the :class:`~deployer.rollout.judge.Snapshot` from
what the watches saw, asks :func:`~deployer.rollout.judge.judge` at the clock's
``now`` and makes the transition (succeeded, failed with the pod's diagnosis,
paused). A workload whose image someone else replaced since our patch is
superseded. A workload a Flagger Canary judges is handed to :mod:`.flagger`; a
Degraded Argo Rollout is explained by :mod:`.argo` (the AnalysisRun, the step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from deployer.cluster import Kube, label_selector
from deployer.errors import ClusterError
from deployer.rollout import argo
from deployer.rollout.context import Context
from deployer.rollout.diagnose import diagnose_pod
from deployer.rollout.flagger import judge_canary, time_out_canary
from deployer.rollout.force import force_stuck_pods
from deployer.rollout.judge import Snapshot, judge, timed_out
from deployer.rollout.kinds import (
    DEPLOYMENT,
    JOB,
    ROLLOUT,
    STATEFULSET,
    containers_of,
    controlled_by,
    template_of,
    uid_of,
)
from deployer.rollout.state import Workload
from deployer.rollout.status import (
    Policy,
    condition,
    partition_pending,
    template_without_hash,
)
from deployer.rollout.undo import revision_of

__all__ = ["judge_workload", "policy_for", "superseded", "time_out"]

_NEVER = 2**31  # restarts: more than any container makes


def snapshot(w: Workload) -> Snapshot:
    assert w.live is not None
    pods, history = tuple(w.pods.values()), tuple(w.history.values())
    return Snapshot(
        w.kind,
        w.live,
        pods,
        w.baseline,
        w.seen,
        w.scale_up,
        w.create_failure,
        history,
        argo.pending(w),
    )


def policy_for(ctx: Context, w: Workload) -> Policy:
    """The run's policy; a Job whose pods restart in place is left to its backoffLimit."""
    spec = (template_of(w.live).get("spec") or {}) if w.kind is JOB else {}
    if spec.get("restartPolicy") == "OnFailure":
        # The Job controller counts these restarts against backoffLimit and fails the
        # Job itself (Failed=True, BackoffLimitExceeded): its conditions decide.
        return dataclasses.replace(ctx.policy, restarts=_NEVER)
    return ctx.policy


def superseded(ctx: Context, w: Workload, live: Mapping[str, Any]) -> bool:
    """Fail ``w`` when another client replaced our image since our patch.

    A newer rollout supersedes ours: judging it would report their rollout as
    ours, and undoing it would roll back over their change. Both are wrong.
    """
    template, kind, generation = template_of(live), w.kind.name, None
    if w.holder is not None and not containers_of(template):
        # a workloadRef Rollout: its template is in the Deployment we patched, as last seen
        template, kind, generation = w.holder.template, w.holder.kind.name, w.holder.generation
    now = {str(c.get("name")): c.get("image") for c in containers_of(template)}
    if not now:
        return False
    others = {n: now.get(n) for n in w.containers if now.get(n) != w.image_for(n, ctx.image)}
    if not others:
        return False
    running = ", ".join(f"container {name}: {image}" for name, image in others.items())
    if generation is None:
        generation = (live.get("metadata") or {}).get("generation")
    w.supersede(
        f"superseded by another change to the {kind} during the rollout: it now "
        f"runs {running} (generation {generation}); not rolled back, the newer change stands"
    )
    return True


def judge_workload(ctx: Context, w: Workload, undoing: bool) -> None:
    """Judge ``w`` now and make the transition the verdict calls for."""
    live = w.live
    assert live is not None
    if not undoing and superseded(ctx, w, live):
        return
    if w.canary is not None:
        judge_canary(ctx, w, undoing)
        return
    if undoing and w.kind is STATEFULSET:
        force_stuck_pods(ctx, w)
    verdict = judge(snapshot(w), ctx.now(), policy_for(ctx, w))
    w.seen = verdict.seen
    _progress(ctx, w, verdict.progress)
    if verdict.state == "complete" and undoing and w.kind is STATEFULSET:
        pending = partition_pending(live, list(w.pods.values()))
        if pending:  # a canary pod may still run the revision we undid
            _progress(ctx, w, f"waiting for pod {', '.join(pending)} at the restored revision")
            return
    if verdict.state == "complete":
        w.succeed()
        revision = revision_of(live)
        at = f" (revision {revision})" if revision is not None else ""
        ctx.io.info(
            f"{w.display}: {'rolled back' if undoing else 'rolled out'}{at} in "
            f"{ctx.spent():.1f} s"
            + ("" if verdict.message.endswith("rolled out") else f": {verdict.message}")
        )
    elif verdict.state == "paused":
        w.pause(verdict.message)
        ctx.io.info(f"{w.display}: {verdict.message}; on-pause is succeed: done")
    elif verdict.state == "failed":
        problem = verdict.problem
        if w.kind is ROLLOUT and problem is None:  # Degraded: Argo says why
            kube = ctx.diagnosis_kube()
            w.fail(*argo.explain_degraded(kube, w, verdict.message))
        elif problem is not None:
            fail_with_diagnosis(ctx, w, verdict.message, problem.pod, problem.container)
        else:
            pod = verdict.pod
            name = pod["metadata"]["name"] if pod else ""
            fail_with_diagnosis(ctx, w, verdict.message, name, "")


def _progress(ctx: Context, w: Workload, line: str) -> None:
    if line and line != w.progress:
        w.progress = line
        ctx.io.info(f"{w.display}: {line}")


def time_out(ctx: Context, w: Workload) -> None:
    """The deadline came first: fail ``w`` saying where it stood."""
    if w.canary is not None:
        time_out_canary(ctx, w)
        return
    reason, pod = timed_out(snapshot(w), ctx.spent())
    fail_with_diagnosis(ctx, w, reason, pod["metadata"]["name"] if pod else "", "")


def fail_with_diagnosis(ctx: Context, w: Workload, reason: str, pod: str, container: str) -> None:
    """Fail ``w``, with the pod's events and log (read on a short budget of their own)."""
    kube = ctx.diagnosis_kube()  # a budget of its own, also at the deadline
    owners: tuple[tuple[str, str], ...] = ((w.kind.name, w.name),)
    if w.kind is DEPLOYMENT:
        owners += tuple(("ReplicaSet", name) for name in _new_replicasets(kube, w, pod))
    summary = f"{w.display}: {reason}"
    if pod and not container:
        ready = condition(w.pods.get(pod) or {}, "Ready") or {}
        why = ready.get("message") or ready.get("reason") or ""
        summary = f"pod {pod}: not ready" + (f": {why}" if why else "")
        container = w.containers[0] if w.containers else ""
    w.fail(reason, diagnose_pod(kube, w.namespace, summary, pod, container, owners))


def _new_replicasets(kube: Kube, w: Workload, pod: str) -> list[str]:
    """The ReplicaSet of ``pod``, else of the current template (best effort, for events)."""
    found = w.pods.get(pod) or {}
    names = [
        str(ref.get("name"))
        for ref in (found.get("metadata") or {}).get("ownerReferences") or []
        if ref.get("kind") == "ReplicaSet"
    ]
    if names or w.live is None:
        return names
    selector = label_selector((w.live.get("spec") or {}).get("selector") or {})
    query = [("labelSelector", selector)]
    try:
        listing = kube.request(
            "GET", w.kind.history, verb="list", namespace=w.namespace, query=query
        )
    except ClusterError:
        return []
    current = template_without_hash(template_of(w.live))
    return [
        str(rs["metadata"]["name"])
        for rs in listing.get("items") or []
        if controlled_by(rs, uid_of(w.live)) and template_without_hash(template_of(rs)) == current
    ]
