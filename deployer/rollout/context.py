"""What every step of one run needs: the inputs, the clients, the one clock, the budget.

A :class:`Context` is made once by :func:`deployer.rollout.roll_out` (or
:func:`~deployer.rollout.check_cluster`) and handed to each step; steps never make
clients or read :mod:`time` themselves. The :class:`Budget` turns the ``timeout``
input into the deadlines each phase may use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from deployer.actions import ActionsIO
from deployer.clock import Clock
from deployer.cluster import Kube
from deployer.config import Config
from deployer.images import ImageSet
from deployer.rollout.status import Policy

__all__ = ["ANNOTATION_PREFIX", "Budget", "Context", "rollback_reserve"]

ANNOTATION_PREFIX = "deployer.dev/"
_RESERVE_SHARE = 0.25  # of the timeout kept for the rollback when it is on ...
_RESERVE_CAP = 60.0  # ... but never more than this
_FINISH_SECONDS = 1.0  # kept at the end of the timeout for the diagnosis and the report


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

    def spent(self) -> float:
        """Seconds since the run started."""
        return self.clock.monotonic() - self.budget.started
