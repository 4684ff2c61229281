"""A small Flagger: a Canary's phases for its target Deployment, by webhook check outcome.

As Flagger v1.x with ``provider: kubernetes`` reports them (seen on the test control
plane): a new Canary goes Initialized (``lastAppliedSpec`` = ``lastPromotedSpec`` = the
target template's hash). A template hash that is neither of those is a new revision:
Progressing, ``lastAppliedSpec`` set at once; one analysis step per
``analysis.interval``. A webhook whose URL ends in ``/fail`` fails each check
("Halt … advancement external check … failed"); at ``threshold`` failed checks:
"Rolling back … failed checks threshold reached N", "Canary failed! Scaling down …",
phase Failed, condition Promoted False. Passing checks for ``iterations``: Promoting,
Finalising, Succeeded (``lastPromotedSpec`` set). The promoted template written back
only sets ``lastAppliedSpec``; Failed stays Failed. Primaries, Services and scaling
are not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers.argo import _duration
from tests.fakecluster.controllers.events import record
from tests.fakecluster.meta import deep, meta, parse_time, short_hash

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]

Obj = dict[str, Any]
MANAGER = "flagger"
_NEXT = {"Promoting": "Finalising", "Finalising": "Succeeded"}


def _set_phase(status: Obj, phase: str, now: str, message: str) -> None:
    cond_status = {"Initialized": "True", "Succeeded": "True", "Failed": "False"}.get(
        phase, "Unknown"
    )
    status["phase"] = phase
    status["lastTransitionTime"] = now
    status["conditions"] = [
        {
            "type": "Promoted",
            "status": cond_status,
            "reason": phase,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
    ]


def _check(cluster: FakeCluster, canary: Obj, status: Obj, target: str) -> None:
    analysis = (canary.get("spec") or {}).get("analysis") or {}
    failing = [w for w in analysis.get("webhooks") or [] if str(w.get("url", "")).endswith("/fail")]
    now = cluster.store.now()

    def warn(message: str) -> None:
        record(cluster, canary, "Warning", "Synced", message, "flagger")

    if failing:
        hook = failing[0]
        status["failedChecks"] = int(status.get("failedChecks") or 0) + 1
        warn(
            f"Halt {target} advancement external check {hook.get('name')} failed POST "
            f"{hook.get('url')} giving up after 1 attempt(s)"
        )
        threshold = int(analysis.get("threshold") or 1)
        if status["failedChecks"] >= threshold:
            warn(f"Rolling back {target} failed checks threshold reached {threshold}")
            warn(f"Canary failed! Scaling down {target}")
            _set_phase(status, "Failed", now, "Canary analysis failed, Deployment scaled to zero.")
        return
    status["iterations"] = int(status.get("iterations") or 0) + 1
    if status["iterations"] >= int(analysis.get("iterations") or 1):
        _set_phase(
            status, "Promoting", now, "Canary analysis completed, starting primary rolling update."
        )


def _step(cluster: FakeCluster, canary: Obj, status: Obj, digest: str, target: str) -> None:
    now, phase = cluster.store.now(), str(status.get("phase") or "")
    applied, promoted = status.get("lastAppliedSpec"), status.get("lastPromotedSpec")
    interval = _duration(
        ((canary.get("spec") or {}).get("analysis") or {}).get("interval") or "60s"
    )
    due = parse_time(str(status.get("lastTransitionTime") or now)) + interval
    if not phase:
        status.update(lastAppliedSpec=digest, lastPromotedSpec=digest, failedChecks=0, iterations=0)
        _set_phase(status, "Initialized", now, "Deployment initialization completed.")
        record(cluster, canary, "Normal", "Synced", f"Initialization done! {target}", "flagger")
    elif digest not in (applied, promoted):
        status.update(lastAppliedSpec=digest, failedChecks=0, iterations=0, canaryWeight=0)
        _set_phase(
            status, "Progressing", now, "New revision detected, progressing canary analysis."
        )
        record(
            cluster,
            canary,
            "Normal",
            "Synced",
            f"New revision detected! Scaling up {target}",
            "flagger",
        )
    elif digest == promoted and applied != digest:
        status["lastAppliedSpec"] = digest
    elif phase in ("Progressing", *_NEXT) and cluster.clock.time() >= due:
        if phase == "Progressing":
            status["lastTransitionTime"] = now
            _check(cluster, canary, status, target)
        else:
            if _NEXT[phase] == "Succeeded":
                status["lastPromotedSpec"] = digest
            _set_phase(status, _NEXT[phase], now, f"Canary {_NEXT[phase].lower()}")
    if status.get("phase") in ("Progressing", *_NEXT):
        key = (meta(canary)["namespace"], meta(canary)["name"])
        cluster.controllers.requeue("flagger", key, interval)


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    store = cluster.store
    canary_t, d_t = cluster.registry.of_kind("Canary"), cluster.registry.of_kind("Deployment")
    canary = store.get(canary_t, key[0], key[1])
    if canary is None:
        return
    ref = (canary.get("spec") or {}).get("targetRef") or {}
    target = store.get(d_t, key[0], str(ref.get("name", "")))
    if target is None:
        return
    template = deep(target["spec"]["template"])
    status = deep(canary.get("status") or {})
    _step(cluster, canary, status, short_hash(template), f"{ref.get('name')}.{key[0]}")
    if status != (canary.get("status") or {}):
        body = deep(canary)
        body["status"] = status
        store.update(canary_t, body, manager=MANAGER, subresource="status")
