"""The roll-out stage: check, change, watch, judge, and undo on failure.

Order of work, so that a mistake changes nothing (:mod:`.driver` reads like this):

1. Check (:mod:`.check`, :mod:`.access`, :mod:`.apply`): read every named workload
   (Deployment, StatefulSet, DaemonSet, Argo Rollout), read and dry-run every manifest, resolve
   the containers to update, and ask the API server whether the credentials may
   do what the rollout needs. Problems raise ``ConfigError``/``AccessDenied``.
2. Change (:mod:`.change`, :mod:`.migrate`): apply the manifests (server-side
   apply; migration Jobs are run to completion before any workload changes), then
   patch the workloads' images to the digest reference, with the change annotations.
3. Watch (:mod:`.watch` over :mod:`.events`) and judge (:mod:`.judge`, pure, per
   kind exactly like ``kubectl rollout status``, plus pod problems to fail before
   the deadline; :mod:`.verdicts` makes the transitions of :mod:`.state`).
4. Roll back (:mod:`.rollback`): if anything failed and ``rollback-on-failure`` is
   on, first every other object the manifests changed is restored (:mod:`.restore`:
   pods the undo re-creates read their ConfigMaps and Secrets when they start), then
   every workload this run changed is undone like ``kubectl rollout undo``
   (:mod:`.undo`) and watched again, and last what the run created is deleted. A
   cancel issues the same restores and undos without watching them.

Argo Rollouts and Flagger (:mod:`.argo`, :mod:`.flagger`): a Rollout is a workload
like the others (a ``workloadRef`` Rollout changed and undone in its Deployment); a
Deployment a Flagger Canary targets is judged by that Canary.

Outcomes are returned as a :class:`RolloutResult` (:mod:`.result`); only problems
found before anything changed are raised.
"""

from __future__ import annotations

import threading

from kubernetes.client import ApiClient

from deployer.actions import ActionsIO
from deployer.clock import SYSTEM_CLOCK, Clock
from deployer.cluster import ApiTransport, Kube, Transport, default_namespace
from deployer.config import Config
from deployer.rollout.check import resolve_containers
from deployer.rollout.context import ANNOTATION_PREFIX, Budget, Context, rollback_reserve
from deployer.rollout.driver import preflight, run
from deployer.rollout.result import DeploymentResult, RolloutResult

__all__ = [
    "ANNOTATION_PREFIX",
    "DeploymentResult",
    "RolloutResult",
    "check_cluster",
    "resolve_containers",
    "roll_out",
    "rollback_reserve",
]


def _context(
    config: Config,
    image: str,
    api: ApiClient | Transport,
    io: ActionsIO,
    cancel: threading.Event,
    clock: Clock,
) -> Context:
    transport: Transport = api if isinstance(api, Transport) else ApiTransport(api)
    budget = Budget(clock.monotonic(), config.timeout, config.rollback_on_failure)
    kube = Kube(transport, cancel=cancel, deadline=budget.forward, clock=clock)
    namespace = default_namespace(config)
    return Context(config, image, namespace, kube, io, cancel, clock, budget)


def check_cluster(
    config: Config,
    api: ApiClient | Transport,
    io: ActionsIO,
    cancel: threading.Event,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Run the stage's checks before the build, so a typo costs no build and no push.

    Workloads, containers, paused state, permissions and the manifests (with a
    placeholder digest) are checked; :func:`roll_out` checks again with the real one.
    ``api`` is the API client, or a :class:`~deployer.cluster.Transport` (a test's
    fake cluster).
    """
    placeholder = config.image.with_digest("sha256:" + "0" * 64)
    preflight(_context(config, placeholder, api, io, cancel, clock))


def roll_out(
    config: Config,
    image: str,
    api: ApiClient | Transport,
    io: ActionsIO,
    cancel: threading.Event,
    *,
    checked: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> RolloutResult:
    """Roll ``image`` out to the configured workloads; see the module docstring."""
    ctx = _context(config, image, api, io, cancel, clock)
    ctx.checked = checked
    return run(ctx)
