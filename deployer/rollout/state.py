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
    template: dict[str, Any] = field(default_factory=dict)  # its pod template, as last seen


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
    undo_source: str = ""  # where its undo went back to, once issued
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
    probed_at: float | None = None  # when probe.py last read its events
    deleted_pods: set[str] = field(default_factory=set)  # a forced StatefulSet rollback
    watch_from: str = ""  # a Job: watch from the resourceVersion its creation returned
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

    def holder_applied(self, holder: Mapping[str, Any]) -> None:
        """Our apply of the Deployment holding its template (``workloadRef``) is in."""
        if self.holder is not None:
            self.holder.template = dict(template_of(holder))
        self.changed = self.changed or (
            self.before is None
            or template_without_hash(template_of(self.before))
            != template_without_hash(template_of(holder))
        )

    def start_wait(self, *, undoing: bool) -> None:
        self.phase = Phase.ROLLING_BACK if undoing else Phase.WAITING
        self.outcome = Outcome.PENDING
        self.pods, self.seen, self.progress = {}, {}, ""
        self.scale_up, self.create_failure, self.probed_at = False, "", None
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

    def migration_failed(self) -> None:
        """This migration Job failed (its reason is the judge's); nothing after it changed."""
        self.reason = f"Job {self.name} failed: {self.reason}; nothing else was changed"

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
        if self.failed:
            self.undo_reason = self.reason
        elif culprits:
            self.undo_reason = f"rolled back because {culprits} failed"
        else:
            self.undo_reason = "put back because the run was cancelled"

    def superseded_before_undo(self) -> None:
        """Someone changed it after ours failed: their change stands, no undo."""
        self.reason = f"{self.undo_reason}; {self.reason}"

    def undo_issued(self, source: str) -> None:
        """Its undo to ``source`` (``revision 3``) is in the cluster."""
        self.undo_source = source

    def start_undo(self) -> None:
        """Wait for its undo."""
        self.start_wait(undoing=True)

    def not_undone(self, why: str) -> None:
        """An undo that could not start: the failure stands, with why."""
        self.outcome, self.phase = Outcome.FAILED, Phase.DONE
        self.reason = f"{self.undo_reason or self.reason}; {why}"

    def plan(self) -> None:
        self.outcome, self.reason, self.phase = Outcome.PLANNED, "", Phase.DONE

    def cancel(self) -> None:
        """Cancelled, and nothing put back: say where it stands and how to undo it."""
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

    def cancel_migration(self) -> None:
        """A migration Job the cancel caught running: left to finish, never deleted half-way."""
        self.reason = (
            f"cancelled while the migration ran ({self.progress or 'just created'}); left "
            "running (a migration stopped half-way is worse than one that finishes), nothing "
            f"after it was changed; see kubectl logs job/{self.name} -n {self.namespace}"
        )
        self.outcome, self.phase = Outcome.CANCELLED, Phase.DONE

    def cancel_undone(self) -> None:
        """Cancelled, and its undo was issued (not waited for)."""
        where = {
            Phase.ROLLING_BACK: "while rolling back",
            Phase.WAITING: f"while waiting ({self.progress or 'just changed'})",
        }.get(self.phase, "after its rollout")
        self.reason = f"cancelled {where}; put back to {self.undo_source} (not waited for)"
        self.outcome, self.phase = Outcome.CANCELLED, Phase.DONE


@dataclass
class RunState:
    """What one run deploys to and has changed so far; the rollback reads it."""

    workloads: list[Workload] = field(default_factory=list)
    jobs: list[Workload] = field(default_factory=list)  # migration Jobs, in run order
    manifests: ManifestSet | None = None
    restored: list[str] = field(default_factory=list)  # what the rollback did to the rest
    notes: list[str] = field(default_factory=list)  # e.g. an earlier run that was interrupted
    changed: bool = False  # anything at all, so an error is an outcome, not a raise

    @property
    def everything(self) -> list[Workload]:
        return [*self.jobs, *self.workloads]

    def failed(self) -> list[Workload]:
        return [w for w in self.everything if w.failed]

    def open(self) -> list[Workload]:
        return [w for w in self.workloads if w.open]
