"""One workload's state through a run, with every transition in this module.

::

    CHECKED ─change→ WAITING ─judge→ DONE(succeeded | failed)
                        │                      │ rollback-on-failure
                        └──────────────→ ROLLING_BACK ─judge→ DONE(rolled-back | failed)
    any phase ─cancel→ DONE(cancelled)         CHECKED ─dry-run→ DONE(planned)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.rollout.diagnose import Diagnosis
from deployer.rollout.kinds import Kind, images, template_of
from deployer.rollout.status import template_without_hash

__all__ = ["Outcome", "Phase", "Workload"]


class Phase(enum.Enum):
    CHECKED = "checked"
    WAITING = "waiting"
    ROLLING_BACK = "rolling back"
    DONE = "done"


class Outcome(enum.StrEnum):
    """The ``result`` of a workload in the outputs."""

    PENDING = ""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    CANCELLED = "cancelled"
    PLANNED = "planned"


@dataclass
class Workload:
    """One workload this run deploys to, and what is known about it so far."""

    kind: Kind
    namespace: str
    name: str
    containers: tuple[str, ...]
    before: dict[str, Any] | None  # as checked; None when a manifest creates it
    live: dict[str, Any] | None
    from_manifest: bool = False
    changed: bool = False
    phase: Phase = Phase.CHECKED
    outcome: Outcome = Outcome.PENDING
    reason: str = ""
    diagnosis: Diagnosis | None = None
    undo_reason: str = ""
    superseded: bool = False  # someone else changed our containers' images after us
    # the current wait
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # its ReplicaSets / ControllerRevisions by name: which pods are of the new revision
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    baseline: dict[str, str] = field(default_factory=dict)
    progress: str = ""
    scale_up: bool = False
    create_failure: str = ""
    checked_events_at: float = 0.0
    deleted_pods: set[str] = field(default_factory=set)  # a forced StatefulSet rollback

    @property
    def key(self) -> str:
        return f"{self.kind.lower}/{self.namespace}/{self.name}"

    @property
    def display(self) -> str:
        return f"{self.kind.lower}/{self.name}"

    @property
    def label(self) -> str:
        """``ns/name`` for a Deployment (as before kinds), ``statefulset/ns/name`` otherwise."""
        prefix = "" if self.kind.name == "Deployment" else f"{self.kind.lower}/"
        return f"{prefix}{self.namespace}/{self.name}"

    @property
    def previous_image(self) -> str:
        return self.images_of(self.before)

    def images_of(self, obj: Mapping[str, Any] | None) -> str:
        if obj is None:
            return ""
        found = images(template_of(obj))
        return ", ".join(found.get(c, "") for c in self.containers)

    @property
    def open(self) -> bool:
        return self.outcome is Outcome.PENDING

    # -- transitions ---------------------------------------------------------------

    def applied(self, obj: Mapping[str, Any]) -> None:
        """Our change (apply or patch) is in: remember whether the template changed."""
        self.live = dict(obj)
        self.changed = self.before is None or template_without_hash(
            template_of(self.before)
        ) != template_without_hash(template_of(obj))

    def start_wait(self, *, undoing: bool) -> None:
        self.phase = Phase.ROLLING_BACK if undoing else Phase.WAITING
        self.outcome = Outcome.PENDING
        self.pods, self.seen, self.progress = {}, {}, ""
        self.scale_up, self.create_failure, self.checked_events_at = False, "", 0.0
        self.baseline = {}

    def succeed(self) -> None:
        self.outcome = Outcome.SUCCEEDED
        if self.phase is Phase.ROLLING_BACK:
            self.outcome = Outcome.ROLLED_BACK
            self.reason = f"{self.undo_reason}; rolled back to the previous revision"
        self.phase = Phase.DONE

    def fail(self, reason: str, diagnosis: Diagnosis | None = None) -> None:
        if self.phase is Phase.ROLLING_BACK:
            reason = (
                f"{self.undo_reason}; rollback failed: {reason}; the {self.kind.name} now runs "
                f"{self.images_of(self.live)}"
            )
        self.outcome, self.reason, self.phase = Outcome.FAILED, reason, Phase.DONE
        if diagnosis is not None:
            self.diagnosis = diagnosis

    def supersede(self, reason: str) -> None:
        self.superseded = True
        self.fail(reason)

    def start_undo(self, why: str) -> None:
        self.undo_reason = why
        self.start_wait(undoing=True)

    def not_undone(self, why: str) -> None:
        """An undo that could not start: the failure stands, with why."""
        self.outcome, self.phase = Outcome.FAILED, Phase.DONE
        self.reason = f"{self.undo_reason or self.reason}; {why}"

    def plan(self) -> None:
        self.outcome, self.reason, self.phase = Outcome.PLANNED, "", Phase.DONE

    def cancel(self) -> None:
        if self.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK):
            return
        undo = f"; undo with kubectl rollout undo {self.kind.lower}/{self.name} -n {self.namespace}"
        if self.phase is Phase.CHECKED and not self.changed:
            self.reason = "cancelled before it was changed"
        elif self.phase is Phase.ROLLING_BACK:
            self.reason = f"cancelled while rolling back ({self.progress or 'started'}){undo}"
        else:
            self.reason = (
                f"cancelled while waiting ({self.progress or 'just changed'}); "
                f"the rollout continues in the cluster{undo}"
            )
        self.outcome, self.phase = Outcome.CANCELLED, Phase.DONE
