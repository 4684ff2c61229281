"""Pure: an Argo Rollout judged the way ``kubectl argo rollouts status`` judges it.

:func:`rollout_phase` is the CLI's ``GetRolloutPhase`` (argo-rollouts
``utils/rollout/rolloututil.go``), first match wins:

1. ``status.observedGeneration`` is a *string*; numeric and not ``metadata.generation``
   → Progressing, "waiting for rollout spec update to be observed";
2. ``status.controllerPause`` with no ``pauseConditions`` → Progressing (unpausing);
3. a ``workloadRef`` Rollout whose annotation ``rollout.argoproj.io/workload-generation``
   differs from ``status.workloadObservedGeneration`` → Progressing (the CLI checks
   this only for a template it resolved itself; we check it for every ``workloadRef``);
4. else the controller's own ``status.phase`` and ``status.message``.

:func:`rollout_status` makes that a :class:`~deployer.rollout.status.Status`:
Healthy is complete, Degraded failed (an abort after a failed analysis, an
``InvalidSpec``, a progress deadline), Paused waits (``paused`` when the pause
waits for someone to promote it), Progressing waits. Steps are numbered from 1,
as the controller's own events do ("Rollout step 2/4 completed").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deployer.rollout.status import Status

__all__ = [
    "HASH_LABEL",
    "WORKLOAD_GENERATION",
    "Pause",
    "current_hash",
    "current_step",
    "new_pods",
    "pause_of",
    "promote_hint",
    "rollout_phase",
    "rollout_progress",
    "rollout_status",
    "step_text",
]

HASH_LABEL = "rollouts-pod-template-hash"
WORKLOAD_GENERATION = "rollout.argoproj.io/workload-generation"


def _meta(ro: Mapping[str, Any]) -> Mapping[str, Any]:
    return ro.get("metadata") or {}


def _status(ro: Mapping[str, Any]) -> Mapping[str, Any]:
    return ro.get("status") or {}


def _spec(ro: Mapping[str, Any]) -> Mapping[str, Any]:
    return ro.get("spec") or {}


def _number(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _generation_observed(ro: Mapping[str, Any]) -> bool:
    observed = _number(_status(ro).get("observedGeneration"))
    if observed is None:  # a v0.9 hash, or nothing yet: the CLI counts it as observed
        return _status(ro).get("observedGeneration") not in (None, "")
    return observed >= int(_meta(ro).get("generation") or 0)


def _workload_observed(ro: Mapping[str, Any]) -> bool:
    wanted = (_meta(ro).get("annotations") or {}).get(WORKLOAD_GENERATION)
    seen = _number(_status(ro).get("workloadObservedGeneration"))
    if wanted is None or seen is None:
        return True
    return _number(wanted) == seen


def rollout_phase(ro: Mapping[str, Any]) -> tuple[str, str]:
    """``(phase, message)`` as ``kubectl argo rollouts status`` reads them (rules above)."""
    status = _status(ro)
    if not _generation_observed(ro):
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", "waiting for rollout to unpause"
    if _spec(ro).get("workloadRef") and not _workload_observed(ro):
        return (
            "Progressing",
            "waiting for rollout spec update to be observed for the reference workload",
        )
    phase = str(status.get("phase") or "")
    if not phase:
        return "Progressing", "waiting for the controller to report a phase"
    return phase, str(status.get("message") or "")


def _steps(ro: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    canary = (_spec(ro).get("strategy") or {}).get("canary") or {}
    return list(canary.get("steps") or [])


def step_text(step: Mapping[str, Any]) -> str:
    """A canary step in the controller's words (``CanaryStepString``): ``setWeight: 25``."""
    if step.get("setWeight") is not None:
        return f"setWeight: {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause: {duration}" if duration not in (None, "") else "pause"
    for name in ("experiment", "analysis", "setCanaryScale", "setHeaderRoute", "plugin"):
        if name in step:
            return name
    return "step"


def current_step(ro: Mapping[str, Any], index: int | None = None) -> str:
    """``3 of 4 (analysis)`` for the step at ``index`` (default: the current one); ''."""
    steps = _steps(ro)
    if index is None:
        index = _number(_status(ro).get("currentStepIndex"))
    if not steps or index is None:
        return ""
    if index >= len(steps):
        return f"{len(steps)} of {len(steps)} (all steps done)"
    return f"{index + 1} of {len(steps)} ({step_text(steps[index])})"


def promote_hint(ro: Mapping[str, Any]) -> str:
    meta = _meta(ro)
    return f"kubectl argo rollouts promote {meta.get('name', '')} -n {meta.get('namespace', '')}"


@dataclass(frozen=True)
class Pause:
    """Why a Rollout is paused, and whether it waits for a person (a promotion)."""

    text: str
    for_promotion: bool


def pause_of(ro: Mapping[str, Any]) -> Pause | None:
    """The pause the Rollout is in, if any (``spec.paused`` or a pause condition)."""
    if _spec(ro).get("paused"):
        return Pause("manually paused (spec.paused)", False)
    reasons = [str(c.get("reason", "")) for c in _status(ro).get("pauseConditions") or []]
    if not reasons:
        return None
    step = current_step(ro)
    where = f"paused at step {step}" if step else "paused"
    if "CanaryPauseStep" in reasons:
        steps = _steps(ro)
        index = _number(_status(ro).get("currentStepIndex"))
        pause = (
            steps[index].get("pause") if steps and index is not None and index < len(steps) else {}
        )
        if (pause or {}).get("duration") in (None, ""):
            return Pause(f"{where}, waiting for promotion", True)
        return Pause(where, False)
    if "BlueGreenPause" in reasons:
        auto = ((_spec(ro).get("strategy") or {}).get("blueGreen") or {}).get(
            "autoPromotionSeconds"
        )
        if auto:
            return Pause(f"paused before promotion for {auto} s (blue-green)", False)
        return Pause("paused before promotion (blue-green), waiting for promotion", True)
    return Pause(f"{where}: {', '.join(reasons)}", False)


def rollout_status(ro: Mapping[str, Any]) -> Status:
    """The Rollout judged like ``kubectl argo rollouts status`` (see the module docstring)."""
    name = _meta(ro).get("name", "")
    phase, message = rollout_phase(ro)
    observed = not message.startswith("waiting for rollout spec update")
    if phase == "Healthy":
        return Status("complete", f'rollout "{name}" is healthy')
    if phase == "Degraded":
        return Status("failed", f"degraded: {message}")
    if phase == "Paused":
        pause = pause_of(ro)
        if pause is None:
            return Status("waiting", f"paused: {message}")
        if pause.for_promotion:
            return Status("waiting", f"{pause.text} ({promote_hint(ro)})", paused=True)
        return Status("waiting", pause.text)
    step = current_step(ro) if observed else ""
    at = f" (step {step})" if step else ""
    return Status("waiting", f"{message or phase}{at}", observed)


def rollout_progress(ro: Mapping[str, Any]) -> str:
    """What a user wants to see change: phase, step and replica counts."""
    status = _status(ro)
    phase, _ = rollout_phase(ro)
    # An abort sets the step index back to 0: its step is not where it stopped.
    step = "" if phase == "Degraded" or status.get("abort") else current_step(ro)
    wanted = _spec(ro).get("replicas")
    wanted = 1 if wanted is None else int(wanted)
    line = f"{phase}" + (f", step {step}" if step else "")
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    return f"{line}: {updated} of {wanted} updated, {available} available"


def current_hash(ro: Mapping[str, Any]) -> str:
    """The pod hash of the Rollout's current template, once the controller saw it; ''."""
    if rollout_phase(ro)[1].startswith("waiting for rollout spec update"):
        return ""
    return str(_status(ro).get("currentPodHash") or "")


def new_pods(ro: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods of the current template (the canary's while it runs), by their hash label."""
    wanted = current_hash(ro)
    if not wanted:
        return []
    return [
        p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) == wanted
    ]
