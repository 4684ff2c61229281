"""The roll-out stage: check, change, watch, judge, and undo on failure.

Order of work, so that a mistake changes nothing:

1. Check (:mod:`.stage`, :mod:`.apply`): read every named workload
   (Deployment, StatefulSet, DaemonSet), read and dry-run every manifest, resolve
   the containers to update, and ask the API server whether the credentials may
   do what the rollout needs. Problems raise ``ConfigError``/``AccessDenied``.
2. Change: apply the manifests (server-side apply; migration Jobs are run to
   completion before any workload changes), then patch the workloads' images to
   the digest reference, with the change annotations.
3. Watch (:class:`deployer.cluster.Watch`, one per namespace and kind, one per
   workload's pods) and judge (:mod:`.judge`, pure, per kind exactly like
   ``kubectl rollout status``, plus pod problems to fail before the deadline).
4. Undo (:mod:`.undo`): if anything failed and ``rollback-on-failure`` is on,
   every workload this run changed is undone like ``kubectl rollout undo`` and
   watched again; every other object the manifests changed is restored, and
   what the run created is deleted.

Outcomes are returned as a :class:`RolloutResult`; only problems found before
anything changed are raised.
"""

from __future__ import annotations

import threading
import time

from kubernetes.client import ApiClient

from deployer.actions import ActionsIO
from deployer.cluster import ApiTransport, Kube
from deployer.config import Config
from deployer.rollout.stage import (
    ANNOTATION_PREFIX,
    DeploymentResult,
    RolloutResult,
    Stage,
    resolve_containers,
    rollback_reserve,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "DeploymentResult",
    "RolloutResult",
    "Stage",
    "check_cluster",
    "resolve_containers",
    "roll_out",
    "rollback_reserve",
]


def check_cluster(config: Config, api: ApiClient, io: ActionsIO, cancel: threading.Event) -> None:
    """Run the stage's checks before the build, so a typo costs no build and no push.

    Workloads, containers, paused state, permissions and the manifests (with a
    placeholder digest) are checked; :func:`roll_out` checks again with the real one.
    """
    deadline = time.monotonic() + config.timeout
    kube = Kube(ApiTransport(api), cancel=cancel, deadline=deadline)
    placeholder = config.image.with_digest("sha256:" + "0" * 64)
    Stage(config, placeholder, kube, io, cancel, deadline).preflight()


def roll_out(
    config: Config,
    image: str,
    api: ApiClient,
    io: ActionsIO,
    cancel: threading.Event,
    *,
    checked: bool = False,
) -> RolloutResult:
    """Roll ``image`` out to the configured workloads; see the module docstring."""
    deadline = time.monotonic() + config.timeout
    kube = Kube(ApiTransport(api), cancel=cancel, deadline=deadline)
    stage = Stage(config, image, kube, io, cancel, deadline)
    stage.checked = checked
    return stage.run()
