"""The stage's answer: one :class:`DeploymentResult` per workload, one :class:`RolloutResult`.

Also the step that tells the user why workloads failed (``::error::`` lines and
the diagnosis, untrusted text inert), which the driver calls before the rollback.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.actions import ActionsIO
from deployer.plan import Plan
from deployer.rollout.argo_status import current_step, rollout_phase
from deployer.rollout.kinds import JOB, ROLLOUT
from deployer.rollout.state import Outcome, RunState, Workload
from deployer.rollout.undo import revision_of

__all__ = ["DeploymentResult", "RolloutResult", "report_failures", "result_of"]


@dataclass(frozen=True)
class DeploymentResult:
    """What happened to one workload (the name is the first generation's)."""

    namespace: str
    name: str
    containers: tuple[str, ...]
    previous_image: str
    new_image: str
    revision: int | None
    result: str  # succeeded | failed | rolled-back | planned | cancelled | paused
    reason: str
    diagnosis: str = ""
    kind: str = "Deployment"
    images: tuple[tuple[str, str], ...] = ()  # container → the image the run set
    # Where its progressive delivery controller left it: an Argo Rollout's phase and
    # step, a Flagger Canary's phase ('' for the other kinds).
    phase: str = ""

    def as_output(self) -> dict[str, object]:
        """The JSON shape of one entry of the ``deployments`` and ``workloads`` outputs."""
        found: dict[str, object] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "containers": list(self.containers),
            "previous-image": self.previous_image,
            "new-image": self.new_image,
            "images": dict(self.images) or {c: self.new_image for c in self.containers},
            "revision": self.revision,
            "result": self.result,
            "reason": self.reason,
        }
        if self.phase:
            found["phase"] = self.phase
        return found


@dataclass(frozen=True)
class RolloutResult:
    """The outcome of the stage and of each workload."""

    status: str  # succeeded | failed | rolled-back | cancelled | planned | paused
    deployments: tuple[DeploymentResult, ...]  # every workload, whatever its kind
    restored: tuple[str, ...] = ()  # what the rollback did to the other applied objects
    url: str = ""  # the environment's URL (deployer.envurl), after a run that succeeded
    plan: Plan | None = None  # a dry run's: every object compared with the live one
    notes: tuple[str, ...] = ()  # what the user should know besides (an interrupted run)

    @property
    def revisions(self) -> dict[str, int | None]:
        """Deployment name → its revision at the end (``namespace/name`` if a name repeats)."""
        found = [d for d in self.deployments if d.kind == "Deployment"]
        names = [d.name for d in found]
        return {
            d.name if names.count(d.name) == 1 else f"{d.namespace}/{d.name}": d.revision
            for d in found
        }


def _phase(w: Workload) -> str:
    """``Paused at step 3 of 4 (pause)`` for a Rollout, ``canary web: Failed`` for a target."""
    if w.canary is not None:
        return f"canary {w.canary.name}: {w.canary.status_of('phase') or 'no phase yet'}"
    if w.kind is not ROLLOUT or w.live is None:
        return ""
    phase, _ = rollout_phase(w.live)
    step = current_step(w.live)
    return f"{phase} at step {step}" if step and phase in ("Paused", "Progressing") else phase


def _one(w: Workload, image: str) -> DeploymentResult:
    outcome = w.outcome.value or "failed"
    reason = w.reason
    if w.outcome is Outcome.SUCCEEDED and not w.changed and w.kind is not JOB:
        reason = f"already running {w.new_images(image)}"
    return DeploymentResult(
        namespace=w.namespace,
        name=w.name,
        containers=w.containers,
        previous_image=w.previous_image,
        new_image=w.new_images(image),
        images=tuple(w.target_images(image).items()),
        revision=revision_of(w.live) if w.kind is not JOB else None,
        result=outcome,
        reason=reason,
        diagnosis=w.diagnosis.text() if w.diagnosis else "",
        kind=w.kind.name,
        phase=_phase(w),
    )


def result_of(state: RunState, image: str, status: str | None = None) -> RolloutResult:
    """The result of the run from its state; ``status`` from the outcomes unless given."""
    results = [_one(w, image) for w in state.everything]
    if status is None:
        outcomes = {r.result for r in results}
        if outcomes <= {"succeeded"}:
            status = "succeeded"
        elif outcomes <= {"succeeded", "paused"}:
            status = "paused"
        elif "failed" in outcomes:
            status = "failed"
        else:
            status = "rolled-back"
    return RolloutResult(status, tuple(results), tuple(state.restored), notes=tuple(state.notes))


def report_failures(io: ActionsIO, failed: list[Workload]) -> None:
    """One ``::error::`` per failed workload, then its diagnosis (events and log inert)."""
    for w in failed:
        io.error(f"{w.label}: {w.reason}", title=f"Rollout of {w.name} failed")
        if w.diagnosis is None:
            continue
        with io.group(f"Why {w.name} failed"):
            io.info(w.diagnosis.summary)
            if w.diagnosis.events or w.diagnosis.log:
                with io.untrusted() as log:
                    if w.diagnosis.events:
                        log.write("Events:")
                        log.write_lines(f"  {e}" for e in w.diagnosis.events)
                    if w.diagnosis.log:
                        log.write("Last log lines:")
                        log.write_lines(f"  {line}" for line in w.diagnosis.log)
            for note in w.diagnosis.notes:
                io.info(note)
