"""Argo Rollouts around the generic steps: ``workloadRef``, and why a Rollout was aborted.

- A ``workloadRef`` Rollout keeps its pod template in a Deployment
  (:func:`resolve_ref`): the run patches (and the undo restores) that Deployment,
  and judges the Rollout; :func:`pending` holds the verdict until the controller has
  seen the Deployment's new generation (``rollout.argoproj.io/workload-generation``),
  since the Rollout's own generation does not move.
- A Deployment the run changes whose pods a Rollout runs (its ``workloadRef``, in
  the cluster or in ``manifests``) is judged as that Rollout
  (:func:`judged_by_rollouts`): the Deployment alone, scaled to zero, would pass at
  once and say nothing of the canary.
- A Degraded Rollout is explained by :func:`explain_degraded`: the step, the
  AnalysisRun and its failed metric's message; the ``job`` provider leaves that
  message empty, so then the Job's pod (its state, events, log lines); plus what is
  wrong with the canary pods, if anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from deployer.cluster import ANALYSISRUNS, DEPLOYMENTS, PODS, ROLLOUTS, Kube, Response, discover
from deployer.errors import AccessDenied, ClusterError
from deployer.rollout import argo_status
from deployer.rollout.apply import Applied
from deployer.rollout.diagnose import Diagnosis, diagnose_pod, object_events
from deployer.rollout.kinds import DEPLOYMENT, ROLLOUT, controlled_by, template_of, uid_of
from deployer.rollout.state import TemplateHolder, Workload
from deployer.rollout.status import pod_problem

__all__ = ["explain_degraded", "judged_by_rollouts", "pending", "resolve_ref"]

_FAILED_RUNS = ("Failed", "Error", "Inconclusive")
_NOTE_CHARS = 500


def resolve_ref(
    kube: Kube, namespace: str, rollout: Mapping[str, Any]
) -> tuple[TemplateHolder, dict[str, Any]] | str | None:
    """For a ``workloadRef`` Rollout: its Deployment and the Rollout with that template.

    None when the Rollout has its own template; the problem, in words, when the
    reference cannot be followed (only Deployments are supported).
    """
    ref = (rollout.get("spec") or {}).get("workloadRef")
    if not ref:
        return None
    kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
    if kind != "Deployment" or str(ref.get("apiVersion", "apps/v1")) != "apps/v1":
        return f"its workloadRef is a {kind or 'kind-less object'}: only a Deployment is supported"
    found = kube.request(
        "GET", DEPLOYMENTS, verb="get", namespace=namespace, name=name, expect=frozenset({404})
    )
    if isinstance(found, Response):
        return f"its workloadRef names Deployment '{name}', which is not in namespace {namespace}"
    deployment = dict(found)
    resolved = dict(rollout)
    resolved["spec"] = {**(rollout.get("spec") or {}), "template": deployment["spec"]["template"]}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    return TemplateHolder(DEPLOYMENT, name, generation), resolved


def _with_template(
    rollout: Mapping[str, Any] | None, deployment: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    if rollout is None:
        return None
    found = dict(rollout)
    found["spec"] = {**(rollout.get("spec") or {}), "template": template_of(deployment)}
    return found


def _referring(
    kube: Kube, namespaces: list[str], documents: Mapping[tuple[str, str, str], Applied]
) -> dict[tuple[str, str], tuple[dict[str, Any] | None, str, bool]]:
    """(namespace, Deployment) → (the Rollout as it is now, its name, from manifests)."""
    found: dict[tuple[str, str], tuple[dict[str, Any] | None, str, bool]] = {}
    for ns in namespaces:
        try:
            listing = kube.request("GET", ROLLOUTS, verb="list", namespace=ns)
        except AccessDenied as e:
            raise AccessDenied(
                f"Argo Rollouts is installed, and the credentials may not list "
                f"rollouts.argoproj.io in namespace {ns}: the deploy must know whether a "
                "Rollout runs the pods of the Deployments it changes (workloadRef); add get, "
                "list and watch on rollouts.argoproj.io to the Role (docs/cluster.md)",
                details=e.details,
            ) from None
        for ro in listing.get("items") or []:
            ref = (ro.get("spec") or {}).get("workloadRef") or {}
            if ref.get("kind") == "Deployment":
                found[(ns, str(ref.get("name")))] = (dict(ro), ro["metadata"]["name"], False)
    for (lower, ns, name), item in documents.items():
        ref = (item.manifest.doc.get("spec") or {}).get("workloadRef") or {}
        if lower == ROLLOUT.lower and ref.get("kind") == "Deployment":
            found[(ns, str(ref.get("name")))] = (item.prior, name, True)
    return found


def judged_by_rollouts(
    kube: Kube,
    say: Callable[[str], None] | None,
    workloads: list[Workload],
    documents: Mapping[tuple[str, str, str], Applied],
) -> list[Workload]:
    """Each Deployment whose pods a Rollout runs (``workloadRef``) becomes that Rollout."""
    targets = [w for w in workloads if w.kind is DEPLOYMENT]
    if not targets:
        return workloads
    try:
        discover(kube, "argoproj.io/v1alpha1", "Rollout", {})
    except ClusterError:  # Argo Rollouts is not installed
        return workloads
    found = _referring(kube, list(dict.fromkeys(w.namespace for w in targets)), documents)
    named = {(w.namespace, w.name) for w in workloads if w.kind is ROLLOUT}
    result = []
    for w in workloads:
        hit = found.get((w.namespace, w.name)) if w.kind is DEPLOYMENT else None
        if hit is None:
            result.append(w)
            continue
        rollout, name, manifest = hit
        if say is not None:
            say(f"{w.display}: its pods are run by rollout/{name} (workloadRef): judged there")
        if (w.namespace, name) in named:
            continue
        before = _with_template(rollout, w.before)
        r = Workload(ROLLOUT, w.namespace, name, w.containers, before, before)
        r.from_manifest = manifest or w.from_manifest
        generation = int(((w.live or {}).get("metadata") or {}).get("generation") or 0)
        r.holder = TemplateHolder(DEPLOYMENT, w.name, generation)
        r.images = w.images
        result.append(r)
        named.add((w.namespace, name))
    return result


def pending(w: Workload) -> str:
    """Why the Rollout's controller cannot have seen our change yet ('' once it can)."""
    if w.holder is None or w.live is None:
        return ""
    seen = ((w.live.get("metadata") or {}).get("annotations") or {}).get(
        argo_status.WORKLOAD_GENERATION
    )
    try:
        caught_up = seen is not None and int(seen) >= w.holder.generation
    except ValueError:
        caught_up = True
    if caught_up:
        return ""
    return (
        f"waiting for Argo Rollouts to see generation {w.holder.generation} of "
        f"{w.holder.kind.lower}/{w.holder.name}"
    )


def _runs(kube: Kube, w: Workload) -> list[dict[str, Any]]:
    """The Rollout's AnalysisRuns of its current template, newest first."""
    assert w.live is not None
    current = str((w.live.get("status") or {}).get("currentPodHash") or "")
    query = [("labelSelector", f"{argo_status.HASH_LABEL}={current}")] if current else []
    listing = kube.request("GET", ANALYSISRUNS, verb="list", namespace=w.namespace, query=query)
    runs = [dict(r) for r in listing.get("items") or [] if controlled_by(r, uid_of(w.live))]
    runs.sort(key=lambda r: str((r.get("metadata") or {}).get("creationTimestamp", "")))
    return runs[::-1]


def _run_line(run: Mapping[str, Any], w: Workload) -> str:
    """``at step 3 of 4 (analysis): AnalysisRun web-…-2-2 Failed: Metric "check" …``."""
    meta = run.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = run.get("status") or {}
    where = "background analysis"
    if labels.get("step-index") is not None:
        step = argo_status.current_step(w.live or {}, int(labels["step-index"]))
        where = f"step {step}" if step else "a step's analysis"
    message = str(status.get("message") or "").strip()
    text = f"at {where}: AnalysisRun {meta.get('name', '')} {status.get('phase', '')}"
    return text + (f": {message}" if message else "")


def _job_pods(kube: Kube, namespace: str, run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metric, Job) of each failed measurement of a ``job`` provider without a message."""
    found = []
    for metric in (run.get("status") or {}).get("metricResults") or []:
        if metric.get("phase") not in _FAILED_RUNS or metric.get("message"):
            continue
        for m in metric.get("measurements") or []:
            job = (m.get("metadata") or {}).get("job-name")
            if m.get("phase") in _FAILED_RUNS and job:
                found.append((str(metric.get("name", "")), str(job)))
    return found[-1:]  # the last one: the measurement that decided


def _terminated(pod: Mapping[str, Any]) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        done = (cs.get("state") or {}).get("terminated") or {}
        if done:
            return f"{done.get('reason') or 'terminated'} (exit code {done.get('exitCode')})"
    return str((pod.get("status") or {}).get("phase") or "")


def _job_diagnosis(kube: Kube, namespace: str, metric: str, job: str) -> Diagnosis | None:
    query = [("labelSelector", f"job-name={job}")]
    pods = kube.request("GET", PODS, verb="list", namespace=namespace, query=query)
    items = list(pods.get("items") or [])
    if not items:
        return None
    pod = items[-1]
    name = str(pod["metadata"]["name"])
    summary = f"metric {metric}: Job {job} failed: pod {name}: {_terminated(pod)}"
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    container = str(containers[0].get("name", ""))
    return diagnose_pod(kube, namespace, summary, name, container, (("Job", job),))


def _canary_pods(w: Workload) -> list[str]:
    """What is wrong with the canary pods, one line each (they may be gone by now)."""
    assert w.live is not None
    lines = []
    for pod in w.kind.new_pods(w.live, w.pods.values(), w.history.values()):
        found = pod_problem(pod)
        if found is not None:
            lines.append(f"canary {found.line()}"[:_NOTE_CHARS])
    return lines


def explain_degraded(kube: Kube, w: Workload, message: str) -> tuple[str, Diagnosis]:
    """The reason a Degraded Rollout failed, and its diagnosis (best effort, never raises)."""
    reason, notes = message, []
    events: list[str] = []
    log: tuple[str, ...] = ()
    try:
        runs = [r for r in _runs(kube, w) if (r.get("status") or {}).get("phase") in _FAILED_RUNS]
        events = object_events(kube, w.namespace, w.kind.name, w.name)
    except ClusterError as e:
        runs, notes = [], [f"(analysis not available: {e.message})"]
    if runs:
        reason = f"aborted by Argo Rollouts {_run_line(runs[0], w)}"
        for metric, job in _job_pods(kube, w.namespace, runs[0]):
            try:
                found = _job_diagnosis(kube, w.namespace, metric, job)
            except ClusterError:
                found = None
            if found is not None:
                notes.append(found.summary)
                events += list(found.events)
                log = found.log
    notes += _canary_pods(w)
    return reason, Diagnosis(reason, tuple(events), log, tuple(notes))
