"""Pure: a Flagger Canary's judgement of the rollout of the workload it targets.

Flagger (``flagger.app/v1beta1``) writes no ``observedGeneration``; what it is
judging is ``status.lastAppliedSpec`` (a hash of the target's pod template). A
new revision is one whose hash differs from ``lastAppliedSpec`` and
``lastPromotedSpec``; Flagger then sets ``lastAppliedSpec`` and moves the phase
Progressing → (WaitingPromotion →) Promoting → Finalising → Succeeded, or Failed
(traffic back to the primary, the target scaled to zero). So a phase counts only
once ``lastAppliedSpec`` moved away from what the run found: a ``Succeeded`` from
an earlier release would otherwise pass at once (the trap of ``kubectl wait
--for=condition=promoted``). A first deploy ends at ``Initialized``.

While undoing, the restored template is the primary's again: done once Flagger
saw it (``lastAppliedSpec == lastPromotedSpec``) and no analysis runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.rollout.status import Status, condition

__all__ = ["IN_PROGRESS", "Canary", "canary_progress", "canary_status", "canary_undo_status"]

IN_PROGRESS = frozenset({"Progressing", "Waiting", "WaitingPromotion", "Promoting", "Finalising"})


@dataclass
class Canary:
    """The Flagger Canary that judges a workload's rollout (the workload is its target)."""

    name: str
    before: dict[str, Any] | None  # as checked; None when the manifests create it
    live: dict[str, Any] | None = None

    def status_of(self, key: str, obj: Mapping[str, Any] | None = None) -> str:
        found = self.live if obj is None else obj
        return str(((found or {}).get("status") or {}).get(key) or "")

    def picked_up(self, changed: bool) -> bool:
        """Whether Flagger judges the template this run applied (not an earlier one)."""
        if self.live is None or not self.status_of("phase"):
            return False
        if not changed or self.before is None:
            return True
        return self.status_of("lastAppliedSpec") != self.status_of("lastAppliedSpec", self.before)


def canary_progress(canary: Canary) -> str:
    """``Progressing: weight 0, 1 iterations, 0 failed checks``."""
    c = canary
    return (
        f"{c.status_of('phase') or 'no phase yet'}: weight {c.status_of('canaryWeight') or 0}, "
        f"{c.status_of('iterations') or 0} iterations, "
        f"{c.status_of('failedChecks') or 0} failed checks"
    )


def canary_status(canary: Canary, changed: bool) -> Status:
    """The Canary's verdict on the run's template (see the module docstring)."""
    name, phase = canary.name, canary.status_of("phase")
    if not canary.picked_up(changed):
        now = f" (now {phase})" if phase else ""
        return Status(
            "waiting",
            f"waiting for Flagger to start the analysis of the new revision in canary {name}{now}",
            observed=False,
        )
    if phase == "Succeeded":
        return Status("complete", f'canary "{name}" promoted the new revision')
    if phase == "Initialized":
        return Status("complete", f'canary "{name}" initialized (a first deploy is not analysed)')
    if phase == "Failed":
        promoted = condition(canary.live or {}, "Promoted") or {}
        why = str(promoted.get("message") or "").strip()
        return Status("failed", f"canary {name} failed" + (f": {why}" if why else ""))
    return Status("waiting", f"canary {name}: {canary_progress(canary)}")


def canary_undo_status(canary: Canary) -> Status:
    """After the target's template was restored: done once Flagger sees the primary's again."""
    name, phase = canary.name, canary.status_of("phase")
    applied, promoted = canary.status_of("lastAppliedSpec"), canary.status_of("lastPromotedSpec")
    if applied and applied == promoted and phase not in IN_PROGRESS:
        return Status("complete", f"canary {name} runs its primary's template again ({phase})")
    now = phase or "no phase"
    return Status(
        "waiting", f"waiting for Flagger to see the restored template in canary {name} ({now})"
    )
