"""A small Argo Rollouts controller: canary steps without traffic routing, as v1.10 writes them.

What the rollout stage reads, modelled on the real controller (seen on the test
control plane, see tests/integration/test_progressive.py):

- ReplicaSets ``<rollout>-<hash>`` labelled ``rollouts-pod-template-hash``, owned by
  the Rollout, annotated ``rollout.argoproj.io/revision``; pods come from the fake's
  ReplicaSet controller, so pod fates by image name work for the canary.
- A new template: ``currentPodHash`` moves, ``currentStepIndex`` 0, abort cleared;
  the stable template written back skips the steps ("Rollback to stable ReplicaSets").
- Steps: ``setWeight`` (canary replicas = weight of ``replicas``, rounded half up; the
  step completes once they are available), ``pause`` (a ``CanaryPauseStep`` pause
  condition and ``controllerPause``; with a duration it ends by itself, without one
  when someone clears ``pauseConditions``: a promote), ``analysis`` (an AnalysisRun
  ``<rollout>-<hash>-<revision>-<step>`` whose ``job`` metrics run Jobs
  ``<run uid>.<metric>.1``; a failed Job fails the metric with an empty message).
- A failed run aborts: ``abort: true``, condition Progressing False ``RolloutAborted``,
  phase Degraded, ``currentStepIndex`` 0, the canary scaled to zero. So does
  ``status.abort`` set by a client (``kubectl argo rollouts abort``).
- ``workloadRef`` to a Deployment: the template is the Deployment's; the annotation
  ``rollout.argoproj.io/workload-generation`` and ``status.workloadObservedGeneration``
  follow the Deployment's generation.
- Status: ``observedGeneration`` as a string, phase and message as
  ``CalculateRolloutPhase``, replica counts, ``stableRS``.
Not modelled: blue-green, traffic routing, experiments, progress deadlines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers.events import record
from tests.fakecluster.meta import deep, meta, owned_by, owner_ref, parse_time, short_hash

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]

Obj = dict[str, Any]
HASH = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
WORKLOAD_GENERATION = "rollout.argoproj.io/workload-generation"
MANAGER = "argo-rollouts"
_COMPONENT = "rollouts-controller"


def _duration(text: Any) -> float:
    value = str(text or "0").strip()
    units = {"s": 1, "m": 60, "h": 3600}
    if value and value[-1] in units:
        return float(value[:-1]) * units[value[-1]]
    return float(value)


class _Sync:
    """One sync of one Rollout."""

    def __init__(self, cluster: FakeCluster, ro: Obj) -> None:
        self.cluster, self.store = cluster, cluster.store
        self.t = cluster.registry.of_kind("Rollout")
        self.rs_t = cluster.registry.of_kind("ReplicaSet")
        self.ro = deep(ro)
        self.ns, self.name = meta(ro)["namespace"], meta(ro)["name"]
        self.status: Obj = deep(ro.get("status") or {})
        self.replicas = int((ro.get("spec") or {}).get("replicas") or 1)
        canary = ((ro.get("spec") or {}).get("strategy") or {}).get("canary") or {}
        self.steps: list[Obj] = list(canary.get("steps") or [])

    # -- objects ----------------------------------------------------------------------------

    def event(self, type_: str, reason: str, message: str) -> None:
        record(self.cluster, self.ro, type_, reason, message, _COMPONENT)

    def template(self) -> Obj | None:
        ref = (self.ro.get("spec") or {}).get("workloadRef")
        if not ref:
            return deep((self.ro.get("spec") or {}).get("template") or {})
        d_t = self.cluster.registry.of_kind("Deployment")
        dep = self.store.get(d_t, self.ns, str(ref.get("name", "")))
        if dep is None:
            return None
        generation = str(meta(dep).get("generation") or 1)
        annotations = meta(self.ro).setdefault("annotations", {})
        if annotations.get(WORKLOAD_GENERATION) != generation:
            annotations[WORKLOAD_GENERATION] = generation
            self.ro = self.store.update(self.t, self.ro, manager=MANAGER)
        self.status["workloadObservedGeneration"] = generation
        return deep(dep["spec"]["template"])

    def owned(self) -> list[Obj]:
        uid = meta(self.ro)["uid"]
        return [rs for rs in self.store.list(self.rs_t, self.ns) if owned_by(rs, uid)]

    def ensure_rs(self, digest: str, template: Obj) -> Obj:
        for rs in self.owned():
            if (meta(rs).get("labels") or {}).get(HASH) == digest:
                return rs
        revision = 1 + max(
            (int((meta(rs).get("annotations") or {}).get(REVISION, 0)) for rs in self.owned()),
            default=0,
        )
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH] = digest
        selector = deep((self.ro.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH] = digest
        body = {
            "metadata": {
                "name": f"{self.name}-{digest}",
                "namespace": self.ns,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {REVISION: str(revision)},
                "ownerReferences": [owner_ref(self.ro)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        created = self.store.create(self.rs_t, body, manager=MANAGER)
        meta(self.ro).setdefault("annotations", {})[REVISION] = str(revision)
        self.event(
            "Normal", "NewReplicaSetCreated", f"Created ReplicaSet {body['metadata']['name']}"
        )
        return created

    def scale(self, rs: Obj | None, replicas: int) -> None:
        if rs is None or int(rs["spec"].get("replicas") or 0) == replicas:
            return
        updated = deep(self.store.require(self.rs_t, self.ns, meta(rs)["name"]))
        updated["spec"]["replicas"] = replicas
        self.store.update(self.rs_t, updated, manager=MANAGER)

    def rs_of(self, digest: str) -> Obj | None:
        return next(
            (rs for rs in self.owned() if (meta(rs).get("labels") or {}).get(HASH) == digest), None
        )

    def available(self, digest: str) -> int:
        rs = self.rs_of(digest)
        return int(((rs or {}).get("status") or {}).get("availableReplicas") or 0)

    # -- steps ----------------------------------------------------------------------------------

    def new_template(self, digest: str) -> None:
        stable = self.status.get("stableRS")
        self.status.update(currentPodHash=digest, abort=False, pauseConditions=None)
        self.status.pop("controllerPause", None)
        self.status["canary"] = {}
        self.set_progressing("True", "RolloutUpdated", "Rollout updated")
        if stable == digest:
            self.status["currentStepIndex"] = len(self.steps)
            self.event("Normal", "SkipSteps", "Rollback to stable ReplicaSets")
        else:
            self.status["currentStepIndex"] = 0
            self.event("Normal", "RolloutUpdated", f"Rollout updated to revision for {digest}")

    def set_progressing(self, status: str, reason: str, message: str) -> None:
        now = self.store.now()
        conditions = [
            c for c in self.status.get("conditions") or [] if c.get("type") != "Progressing"
        ]
        conditions.append(
            {
                "type": "Progressing",
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
        self.status["conditions"] = conditions

    def abort(self, why: str) -> None:
        revision = (meta(self.ro).get("annotations") or {}).get(REVISION, "")
        message = f"Rollout aborted update to revision {revision}: {why}"
        self.status.update(abort=True, currentStepIndex=0, pauseConditions=None, canary={})
        self.status.pop("controllerPause", None)
        self.set_progressing("False", "RolloutAborted", message)
        self.event("Warning", "RolloutAborted", message)

    def weight(self, step: Obj, digest: str, stable: str) -> bool:
        want = math.floor(self.replicas * int(step["setWeight"]) / 100 + 0.5)
        self.scale(self.rs_of(digest), want)
        self.scale(self.rs_of(stable), self.replicas - want)
        return self.available(digest) >= want

    def pause(self, step: Obj, index: int) -> bool:
        pauses = self.status.get("pauseConditions") or []
        if self.status.get("controllerPause") and not pauses:  # someone promoted
            self.status.pop("controllerPause", None)
            return True
        duration = (step.get("pause") or {}).get("duration")
        if not pauses:
            now = self.store.now()
            self.status["pauseConditions"] = [{"reason": "CanaryPauseStep", "startTime": now}]
            self.status["controllerPause"] = True
            self.event("Normal", "RolloutPaused", "Rollout is paused (CanaryPauseStep)")
            if duration:
                key = (self.ns, self.name)
                self.cluster.controllers.requeue("argo-rollout", key, _duration(duration))
            return False
        started = parse_time(str(pauses[0].get("startTime")))
        if duration and started + _duration(duration) <= self.cluster.clock.time():
            self.status["pauseConditions"] = None
            self.status.pop("controllerPause", None)
            return True
        return False

    def analysis(self, step: Obj, index: int, digest: str) -> bool:
        run = _ensure_run(self, step, index, digest)
        phase = str((run.get("status") or {}).get("phase") or "Running")
        self.status["canary"] = {
            "currentStepAnalysisRunStatus": {"name": meta(run)["name"], "status": phase}
        }
        if phase in ("Failed", "Error"):
            message = str(run["status"].get("message") or "")
            self.abort(f"Step-based analysis phase error/failed: {message}")
        return phase == "Successful"

    def run_steps(self, digest: str, stable: str) -> None:
        index = int(self.status.get("currentStepIndex") or 0)
        while index < len(self.steps) and not self.status.get("abort"):
            step = self.steps[index]
            if "setWeight" in step:
                done = self.weight(step, digest, stable)
            elif "pause" in step:
                done = self.pause(step, index)
            elif "analysis" in step:
                done = self.analysis(step, index, digest)
            else:
                done = True
            if not done:
                break
            index += 1
            self.status["currentStepIndex"] = index
            self.status["canary"] = {}
            self.event(
                "Normal",
                "RolloutStepCompleted",
                f"Rollout step {index}/{len(self.steps)} completed",
            )
        if index >= len(self.steps) and not self.status.get("abort"):
            self.scale(self.rs_of(digest), self.replicas)
            if self.available(digest) >= self.replicas:
                self.scale(self.rs_of(stable), 0)
                self.status["stableRS"] = digest
                self.event("Normal", "RolloutCompleted", f"Rollout completed update ({digest})")

    # -- the sync --------------------------------------------------------------------------------

    def run(self) -> None:
        template = self.template()
        if template is None:
            return
        labels = (template.get("metadata") or {}).get("labels") or {}
        labels.pop(HASH, None)
        digest = short_hash(template)
        self.ensure_rs(digest, deep(template))
        if self.status.get("currentPodHash") != digest:
            self.new_template(digest)
        stable = str(self.status.get("stableRS") or "")
        if not stable or stable == digest:
            self.scale(self.rs_of(digest), self.replicas)
            for rs in self.owned():
                if (meta(rs).get("labels") or {}).get(HASH) != digest:
                    self.scale(rs, 0)
            if self.available(digest) >= self.replicas:
                self.status["stableRS"] = digest
                self.status["currentStepIndex"] = len(self.steps)
        elif self.status.get("abort"):
            if not any(
                c.get("reason") == "RolloutAborted" for c in self.status.get("conditions") or []
            ):
                self.abort("aborted by a client")
            self.scale(self.rs_of(stable), self.replicas)
            self.scale(self.rs_of(digest), 0)
        else:
            self.run_steps(digest, stable)
        self.write(digest)

    def write(self, digest: str) -> None:
        owned = self.owned()
        current = self.rs_of(digest) or {}

        def total(field: str, items: list[Obj]) -> int:
            return sum(int((rs.get("status") or {}).get(field) or 0) for rs in items)

        self.status.update(
            observedGeneration=str(meta(self.ro).get("generation") or 1),
            replicas=total("replicas", owned),
            updatedReplicas=total("replicas", [current] if current else []),
            readyReplicas=total("readyReplicas", owned),
            availableReplicas=total("availableReplicas", owned),
            selector=",".join(
                f"{k}={v}"
                for k, v in sorted(
                    (
                        ((self.ro.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                    ).items()
                )
            ),
        )
        self.status["phase"], self.status["message"] = _phase(self.ro, self.status)
        fresh = self.store.require(self.t, self.ns, self.name)
        if (fresh.get("status") or {}) == self.status:
            return
        body = deep(fresh)
        body["status"] = self.status
        self.store.update(self.t, body, manager=MANAGER, subresource="status")
        if meta(self.ro).get("annotations") != meta(fresh).get("annotations"):
            again = deep(self.store.require(self.t, self.ns, self.name))
            again["metadata"]["annotations"] = meta(self.ro).get("annotations")
            self.store.update(self.t, again, manager=MANAGER)


def _phase(ro: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[str, str]:
    """CalculateRolloutPhase, for the canary strategy without traffic routing."""
    for cond in status.get("conditions") or []:
        if cond.get("reason") in ("RolloutAborted", "ProgressDeadlineExceeded"):
            return "Degraded", f"{cond['reason']}: {cond.get('message', '')}"
    if (ro.get("spec") or {}).get("paused"):
        return "Paused", "manually paused"
    for pause in status.get("pauseConditions") or []:
        return "Paused", str(pause.get("reason", ""))
    replicas = int((ro.get("spec") or {}).get("replicas") or 1)
    if int(status.get("updatedReplicas") or 0) < replicas:
        return "Progressing", "more replicas need to be updated"
    if int(status.get("availableReplicas") or 0) < int(status.get("updatedReplicas") or 0):
        return "Progressing", "updated replicas are still becoming available"
    if int(status.get("replicas") or 0) > int(status.get("updatedReplicas") or 0):
        return "Progressing", "old replicas are pending termination"
    if not status.get("stableRS") or status.get("stableRS") != status.get("currentPodHash"):
        return "Progressing", "waiting for all steps to complete"
    return "Healthy", ""


def _ensure_run(s: _Sync, step: Obj, index: int, digest: str) -> Obj:
    """The step's AnalysisRun, its job metrics' Jobs, and its phase from theirs."""
    run_t = s.cluster.registry.of_kind("AnalysisRun")
    revision = (meta(s.ro).get("annotations") or {}).get(REVISION, "1")
    name = f"{s.name}-{digest}-{revision}-{index}"
    run = s.store.get(run_t, s.ns, name)
    if run is None:
        metrics = []
        for ref in (step.get("analysis") or {}).get("templates") or []:
            tmpl_t = s.cluster.registry.of_kind("AnalysisTemplate")
            found = s.store.get(tmpl_t, s.ns, str(ref.get("templateName", "")))
            metrics += list(((found or {}).get("spec") or {}).get("metrics") or [])
        body = {
            "metadata": {
                "name": name,
                "namespace": s.ns,
                "labels": {"rollout-type": "Step", "step-index": str(index), HASH: digest},
                "annotations": {REVISION: revision},
                "ownerReferences": [owner_ref(s.ro)],
            },
            "spec": {"metrics": metrics},
        }
        run = s.store.create(run_t, body, manager=MANAGER)
    return _sync_run(s.cluster, run)


def _sync_run(cluster: FakeCluster, run: Obj) -> Obj:
    """Start each ``job`` metric's Job once; the run's phase follows their conditions."""
    store, job_t = cluster.store, cluster.registry.of_kind("Job")
    run_t = cluster.registry.of_kind("AnalysisRun")
    ns = meta(run)["namespace"]
    results, phase, message = [], "Successful", ""
    for metric in (run.get("spec") or {}).get("metrics") or []:
        job_spec = ((metric.get("provider") or {}).get("job") or {}).get("spec") or {}
        job_name = f"{meta(run)['uid']}.{metric['name']}.1"
        job = store.get(job_t, ns, job_name)
        if job is None:
            body = {
                "metadata": {
                    "name": job_name,
                    "namespace": ns,
                    "ownerReferences": [owner_ref(run)],
                },
                "spec": deep(job_spec),
            }
            job = store.create(job_t, body, manager=MANAGER)
        done = {
            c["type"]
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"
        }
        state = "Failed" if "Failed" in done else "Successful" if "Complete" in done else "Running"
        measurement = {"phase": state, "metadata": {"job-name": job_name, "job-namespace": ns}}
        results.append({"name": metric["name"], "phase": state, "measurements": [measurement]})
        if state == "Failed" and phase != "Failed":
            phase = "Failed"
            message = (
                f'Metric "{metric["name"]}" assessed Failed due to failed (1) > failureLimit (0)'
            )
        elif state == "Running" and phase == "Successful":
            phase = "Running"
    status = {"phase": phase, "metricResults": results}
    if message:
        status["message"] = message
    if (run.get("status") or {}) != status:
        body = deep(run)
        body["status"] = status
        run = store.update(run_t, body, manager=MANAGER, subresource="status")
    return run


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    t = cluster.registry.of_kind("Rollout")
    ro = cluster.store.get(t, key[0], key[1])
    if ro is not None and not meta(ro).get("deletionTimestamp"):
        _Sync(cluster, ro).run()
