"""The Job controller (pkg/controller/job) and the TTL-after-finished controller.

Keeps ``min(parallelism, completions - succeeded)`` pods active; a failed pod
(``restartPolicy: Never``) counts toward ``backoffLimit`` and is replaced after the
controller's back-off (10 s doubling, at most 10 min); with ``OnFailure`` the
containers' restarts count (``pastBackoffLimitOnFailure``). Past the limit: condition
``FailureTarget`` then ``Failed`` (BackoffLimitExceeded), active pods deleted.
``activeDeadlineSeconds``: DeadlineExceeded. Enough successes: ``SuccessCriteriaMet``
then ``Complete``. Status: active, ready, succeeded, failed, terminating, startTime,
completionTime. ``ttlSecondsAfterFinished`` (0 included) deletes the finished Job
with Foreground propagation, as the TTL controller does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers.events import record
from tests.fakecluster.controllers.replicaset import pod_from_template, ready
from tests.fakecluster.errors import ApiError
from tests.fakecluster.meta import condition, deep, meta, owned_by, parse_time

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]

Obj = dict[str, Any]
MANAGER = "kube-controller-manager"


def _finished(job: Mapping[str, Any]) -> str:
    for kind in ("Complete", "Failed"):
        cond = condition(job, kind)
        if cond is not None and cond.get("status") == "True":
            return kind
    return ""


def _cond(kind: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _restarts(pods: list[Obj]) -> int:
    total = 0
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Running", "Pending"):
            status = pod.get("status") or {}
            for cs in [
                *(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or []),
            ]:
                total += int(cs.get("restartCount") or 0)
    return total


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    store = cluster.store
    job_t, pod_t = cluster.registry.of_kind("Job"), cluster.registry.of_kind("Pod")
    found = store.get(job_t, *key)
    if found is None or meta(found).get("deletionTimestamp"):
        return
    job = deep(found)
    spec, status = job["spec"], deep(job.get("status") or {})
    if _finished(job):
        _ttl(cluster, job)
        return
    now_s, now = cluster.clock.time(), store.now()
    status.setdefault("startTime", now)
    uid = meta(job)["uid"]
    pods = [p for p in store.list(pod_t, key[0]) if owned_by(p, uid)]
    terminating = [p for p in pods if meta(p).get("deletionTimestamp")]
    live = [p for p in pods if not meta(p).get("deletionTimestamp")]
    active = [
        p for p in live if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
    failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
    completions = int(spec.get("completions") or 1)
    limit = int(spec.get("backoffLimit", 6))
    policy = (spec["template"].get("spec") or {}).get("restartPolicy")
    conditions = list(status.get("conditions") or [])
    failure = ""
    if failed > limit or (
        policy == "OnFailure"
        and (_restarts(active) > 0 if limit == 0 else _restarts(active) >= limit)
    ):
        failure = "BackoffLimitExceeded:Job has reached the specified backoff limit"
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and parse_time(status["startTime"]) + int(deadline) <= now_s:
        failure = "DeadlineExceeded:Job was active longer than specified deadline"
    elif deadline is not None:
        cluster.controllers.requeue(
            "job", key, parse_time(status["startTime"]) + int(deadline) - now_s
        )
    if failure:
        reason, message = failure.split(":", 1)
        for pod in active:
            store.delete(pod_t, key[0], meta(pod)["name"])
        conditions += [
            _cond("FailureTarget", reason, message, now),
            _cond("Failed", reason, message, now),
        ]
        record(cluster, job, "Warning", reason, message, "job-controller")
    elif succeeded >= completions:
        conditions += [
            _cond(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ),
            _cond(
                "Complete", "CompletionsReached", "Reached expected number of succeeded pods", now
            ),
        ]
        status["completionTime"] = now
        record(cluster, job, "Normal", "Completed", "Job completed", "job-controller")
    else:
        wanted = min(int(spec.get("parallelism") or 1), completions - succeeded)
        missing = wanted - len(active)
        if missing > 0:
            _create(cluster, job, missing, failed)
    status["conditions"] = conditions
    pods = [p for p in store.list(pod_t, key[0]) if owned_by(p, uid)]
    active = [
        p
        for p in pods
        if not meta(p).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    status.update(
        {
            "active": len(active),
            "ready": sum(1 for p in active if ready(p)),
            "succeeded": succeeded,
            "failed": failed,
            "terminating": len(terminating),
            "uncountedTerminatedPods": {},
        }
    )
    for field in ("active", "succeeded", "failed", "terminating"):
        if status[field] == 0:
            del status[field]
    if not status["conditions"]:
        del status["conditions"]
    if found.get("status") != status:
        body = deep(found)
        body["status"] = status
        job = store.update(job_t, body, manager=MANAGER, subresource="status")
    if _finished(job):
        _ttl(cluster, job)


def _create(cluster: FakeCluster, job: Obj, missing: int, failed: int) -> None:
    key = (meta(job)["namespace"], meta(job)["name"])
    if failed:
        backoff = min(600.0, 10.0 * 2 ** (failed - 1))
        last = cluster.job_backoff.get(meta(job)["uid"])
        if last is None or last[0] != failed:
            cluster.job_backoff[meta(job)["uid"]] = (failed, cluster.clock.elapsed + backoff)
            cluster.controllers.requeue("job", key, backoff)
            return
        if cluster.clock.elapsed < last[1]:
            cluster.controllers.requeue("job", key, last[1] - cluster.clock.elapsed)
            return
    for _ in range(missing):
        pod = pod_from_template(job, job["spec"]["template"])
        try:
            created = cluster.store.create(
                cluster.registry.of_kind("Pod"),
                pod,
                manager=MANAGER,
                user="system:serviceaccount:kube-system:job-controller",
            )
        except ApiError as e:
            record(
                cluster,
                job,
                "Warning",
                "FailedCreate",
                f"Error creating: {e.message}",
                "job-controller",
            )
            cluster.controllers.backoff("job", key)
            return
        record(
            cluster,
            job,
            "Normal",
            "SuccessfulCreate",
            f"Created pod: {meta(created)['name']}",
            "job-controller",
        )


def _ttl(cluster: FakeCluster, job: Obj) -> None:
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl is None:
        return
    kind = _finished(job)
    cond = condition(job, kind) or {}
    finished = parse_time(str(cond.get("lastTransitionTime") or cluster.store.now()))
    due = finished + int(ttl) - cluster.clock.time()
    key = (meta(job)["namespace"], meta(job)["name"])
    if due > 0:
        cluster.controllers.requeue("job", key, due)
        return
    uid = meta(job)["uid"]
    job_t = cluster.registry.of_kind("Job")
    cluster.store.delete(
        job_t, key[0], key[1], propagation="Foreground", preconditions={"uid": uid}
    )
