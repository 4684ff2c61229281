"""What every step of one run needs: the inputs, the clients, the one clock, the budget.

A :class:`Context` is made once by :func:`deployer.rollout.roll_out` (or
:func:`~deployer.rollout.check_cluster`) and handed to each step; steps never make
clients or read :mod:`time` themselves. The :class:`Budget` turns the ``timeout``
input into the deadlines each phase may use.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

from deployer.actions import ActionsIO
from deployer.clock import Clock
from deployer.cluster import Kube
from deployer.config import Config
from deployer.images import ImageSet
from deployer.rollout.status import Policy

__all__ = [
    "ANNOTATION_PREFIX",
    "CANCEL_SECONDS",
    "RELEASE_AFTER_CANCEL",
    "Budget",
    "Context",
    "rollback_reserve",
]

ANNOTATION_PREFIX = "deployer.dev/"
_RESERVE_SHARE = 0.25  # of the timeout kept for the rollback when it is on ...
_RESERVE_CAP = 60.0  # ... but never more than this
_FINISH_SECONDS = 1.0  # kept at the end of the timeout for the diagnosis and the report
# After SIGINT the runner sends SIGTERM at 7.5 s and kills at 10 s. The whole cancel stays
# within 5 s of the signal, however the API server stalls: the watch loop sees it within
# a tick (0.25 s), stops its watches (at most 0.5 s, events.py), issues the restores and
# undos within CANCEL_SECONDS and gives the Leases back within RELEASE_AFTER_CANCEL; the
# outputs and the summary are written after that.
CANCEL_SECONDS = 3.0
RELEASE_AFTER_CANCEL = 1.0
DIAGNOSIS_SECONDS = 10.0  # the reads that explain a failure, on a budget of their own


def rollback_reserve(timeout: float) -> float:
    """Seconds of ``timeout`` kept for the rollback: a quarter, at most 60 s."""
    return min(_RESERVE_CAP, timeout * _RESERVE_SHARE)


@dataclass(frozen=True)
class Budget:
    """The deadlines of one run, as values of the run's clock."""

    started: float
    timeout: float
    rollback: bool  # rollback-on-failure: keep a reserve for it

    @property
    def deadline(self) -> float:
        """The end of the whole stage."""
        return self.started + self.timeout

    @property
    def forward(self) -> float:
        """Where the forward waits end, so the rollback keeps its reserve."""
        reserve = rollback_reserve(self.timeout) if self.rollback else 0.0
        return self.deadline - reserve

    @property
    def undo_until(self) -> float:
        """Where the rollback's own wait ends: a moment before the deadline for the report."""
        return self.deadline - _FINISH_SECONDS


@dataclass
class Context:
    """One run's inputs, clients and clock; passed to every step."""

    config: Config
    image: str
    namespace: str
    kube: Kube
    io: ActionsIO
    cancel: threading.Event
    clock: Clock
    budget: Budget
    checked: bool = False  # check_cluster ran before the build and warned already
    policy: Policy = field(init=False)
    images: ImageSet = field(init=False)  # ``image`` and the ``images`` input

    def __post_init__(self) -> None:
        self.policy = Policy(
            tolerate=self.config.tolerate_failures_until_deadline, on_pause=self.config.on_pause
        )
        self.images = ImageSet(self.config.image.repository, self.image, self.config.images)

    def now(self) -> float:
        return self.clock.monotonic()

    def restarted(self) -> Context:
        """The same run with its budget starting now (once the namespace is ours)."""
        budget = Budget(self.now(), self.budget.timeout, self.budget.rollback)
        return dataclasses.replace(
            self, budget=budget, kube=self.kube.with_deadline(budget.forward)
        )

    def for_rollback(self) -> Context:
        """The same run with the rollback's budget: requests may use the reserve."""
        return self._with(self.kube.with_deadline(self.budget.deadline))

    def for_cancel(self) -> Context:
        """After a cancel: a client the cancel does not stop, for :data:`CANCEL_SECONDS`."""
        kube = Kube(
            self.kube.transport,
            cancel=threading.Event(),
            deadline=self.now() + CANCEL_SECONDS,
            backoff=self.kube.backoff,
            clock=self.clock,
        )
        return self._with(kube)

    def diagnosis_kube(self) -> Kube:
        """A client for explaining a failure: a failure found at the deadline still gets
        its diagnosis (:data:`DIAGNOSIS_SECONDS` from now)."""
        return self.kube.with_deadline(self.now() + DIAGNOSIS_SECONDS)

    def _with(self, kube: Kube) -> Context:
        return dataclasses.replace(self, kube=kube)

    def spent(self) -> float:
        """Seconds since the run started."""
        return self.clock.monotonic() - self.budget.started
