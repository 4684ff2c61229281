"""One workload's state through a run, with every transition in this module.

::

    CHECKED ─change→ WAITING ─judge→ DONE(succeeded | failed | paused)
                        │                      │ rollback-on-failure
                        └──────────────→ ROLLING_BACK ─judge→ DONE(rolled-back | failed)
    any phase ─cancel→ DONE(cancelled)         CHECKED ─dry-run→ DONE(planned)

The steps never write a ``reason`` themselves: they call the transition that says
what happened, and the transition words it. :class:`RunState` is what the run has
changed so far (the workloads, the migration Jobs, the applied manifests).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.rollout.apply import ManifestSet
from deployer.rollout.diagnose import Diagnosis
from deployer.rollout.flagger_status import Canary
from deployer.rollout.kinds import Kind, images, template_of
from deployer.rollout.status import template_without_hash

__all__ = ["Outcome", "Phase", "RunState", "TemplateHolder", "Workload"]


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
    PAUSED = "paused"  # waiting for a promotion (an Argo Rollouts pause step), on-pause: succeed


@dataclass
class TemplateHolder:
    """Where a workload's pod template lives when not in itself: a workloadRef's Deployment.

    The image patch and the undo go to it; the workload itself is what is judged.
    """

    kind: Kind
    name: str
    generation: int = 0  # its metadata.generation once our change is in


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
    culprit: bool = False  # failed for a reason of its own (not because another did)
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
    holder: TemplateHolder | None = None  # a Rollout's workloadRef (``before`` has its template)
    canary: Canary | None = None  # the Flagger Canary that judges this workload
    # What the run sets: container → image (several with the ``images`` input), and for a
    # named workload a strategic-merge fragment of spec.template (annotations, pull secret).
    images: dict[str, str] = field(default_factory=dict)
    template_patch: dict[str, Any] = field(default_factory=dict)

    def image_for(self, container: str, default: str) -> str:
        return self.images.get(container, default)

    def target_images(self, default: str) -> dict[str, str]:
        """Container → the image the run sets (``default``: the ``image`` input's)."""
        return {c: self.image_for(c, default) for c in self.containers}

    def new_images(self, default: str) -> str:
        return ", ".join(dict.fromkeys(self.target_images(default).values()))

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

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def undo_hint(self) -> str:
        return self.kind.command(self.kind.undo_command, self.namespace, self.name)

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

    def pause(self, where: str) -> None:
        """Paused for a promotion after every earlier step succeeded (``on-pause: succeed``)."""
        self.outcome, self.reason, self.phase = Outcome.PAUSED, where, Phase.DONE

    def fail(self, reason: str, diagnosis: Diagnosis | None = None) -> None:
        """It failed for ``reason`` (while rolling back: the rollback failed)."""
        if self.phase is Phase.ROLLING_BACK:
            reason = (
                f"{self.undo_reason}; rollback failed: {reason}; the {self.kind.name} now runs "
                f"{self.images_of(self.live)}"
            )
        else:
            self.culprit = True
        self.outcome, self.reason, self.phase = Outcome.FAILED, reason, Phase.DONE
        if diagnosis is not None:
            self.diagnosis = diagnosis

    def not_verified(self, problem: str) -> None:
        """The API failed us after the change: the rollout's outcome is unknown."""
        self.fail(f"not verified: {problem}")

    def stop_waiting(self) -> None:
        """Another workload failed: with rollback on, this one is not waited for."""
        self.fail("stopped waiting: another workload failed")
        self.culprit = False

    def not_changed(self, job: str) -> None:
        """A migration Job failed before this workload was changed."""
        self.fail(f"not changed: Job {job} failed")
        self.culprit = False

    def migration_failed(self, why: str, diagnosis: Diagnosis | None) -> None:
        """This migration Job failed; the workloads after it were not changed."""
        self.fail(f"{why}; nothing else was changed", diagnosis)

    def supersede(self, reason: str) -> None:
        self.superseded = True
        self.fail(reason)

    def left_as_is(self) -> None:
        """Failed, and rollback-on-failure is off: say how to undo it by hand."""
        if self.failed and self.changed:
            self.reason += f"; left as is (rollback-on-failure is off): undo with {self.undo_hint}"

    def nothing_to_roll_back(self) -> None:
        """Failed, and the run created it: there is no earlier revision."""
        if self.failed and self.changed and self.before is None:
            self.reason += "; created by this run: nothing to roll back to"

    def prepare_undo(self, culprits: str) -> None:
        """It is to be rolled back: because it failed, or because ``culprits`` did."""
        self.undo_reason = self.reason if self.failed else f"rolled back because {culprits} failed"

    def superseded_before_undo(self) -> None:
        """Someone changed it after ours failed: their change stands, no undo."""
        self.reason = f"{self.undo_reason}; {self.reason}"

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
        if self.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK, Outcome.PAUSED):
            return
        undo = f"; undo with {self.undo_hint}"
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


@dataclass
class RunState:
    """What one run deploys to and has changed so far; the rollback reads it."""

    workloads: list[Workload] = field(default_factory=list)
    jobs: list[Workload] = field(default_factory=list)  # migration Jobs, in run order
    manifests: ManifestSet | None = None
    restored: list[str] = field(default_factory=list)  # what the rollback did to the rest
    changed: bool = False  # anything at all, so an error is an outcome, not a raise

    @property
    def everything(self) -> list[Workload]:
        return [*self.jobs, *self.workloads]

    def failed(self) -> list[Workload]:
        return [w for w in self.everything if w.failed]

    def open(self) -> list[Workload]:
        return [w for w in self.workloads if w.open]
