"""The pure judge: (snapshot, now) -> verdict, one rule per test, for every kind."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.rollout.judge import Snapshot, baseline, judge, timed_out
from deployer.rollout.kinds import DAEMONSET, DEPLOYMENT, STATEFULSET
from deployer.rollout.status import Policy

P = Policy()
NEW, OLD = "ghcr.io/acme/web@sha256:new", "ghcr.io/acme/web@sha256:old"


def template(image: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "web", **labels}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def replicaset(hash_: str, image: str, **status: Any) -> dict[str, Any]:
    """A ReplicaSet of Deployment ``web`` (uid d1) with pod-template-hash ``hash_``."""
    return {
        "metadata": {
            "name": f"web-{hash_}",
            "uid": f"rs-{hash_}",
            "labels": {"app": "web", "pod-template-hash": hash_},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [
                {"kind": "Deployment", "name": "web", "uid": "d1", "controller": True}
            ],
        },
        "spec": {"template": template(image, **{"pod-template-hash": hash_})},
        "status": status,
    }


HISTORY = (replicaset("abc", NEW), replicaset("old", OLD))


def deployment(*, updated: int = 0, available: int = 0, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": "web", "uid": "d1", "generation": 2},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(NEW),
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": [],
        },
    }
    obj["spec"].update(extra.pop("spec", {}))
    obj["status"].update(extra)
    return obj


def pod(
    name: str = "web-abc-1",
    image: str = NEW,
    *,
    waiting: str = "",
    restarts: int = 0,
    unschedulable: bool = False,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "containerStatuses": [
            {
                "name": "app",
                "restartCount": restarts,
                "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}},
            }
        ],
        "conditions": [{"type": "Ready", "status": "False"}],
    }
    if unschedulable:
        status = {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient cpu.",
                }
            ]
        }
    hash_ = "abc" if image == NEW else "old"
    ref = owner or {
        "kind": "ReplicaSet",
        "name": f"web-{hash_}",
        "uid": f"rs-{hash_}",
        "controller": True,
    }
    labels = {"app": "web", "pod-template-hash": hash_}
    return {
        "metadata": {"name": name, "ownerReferences": [ref], "labels": labels},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": status,
    }


def snap(obj: dict[str, Any], *pods: dict[str, Any], **kw: Any) -> Snapshot:
    kw.setdefault("history", HISTORY)
    return Snapshot(DEPLOYMENT, obj, tuple(pods), **kw)


def test_complete_when_kubectl_says_so() -> None:
    verdict = judge(snap(deployment(updated=2, available=2)), 0.0, P)
    assert verdict.state == "complete"
    assert verdict.progress == "2 of 2 updated replicas available"


def test_waiting_pods_of_the_old_template_are_not_judged() -> None:
    broken_old = pod("web-old-1", OLD, waiting="InvalidImageName")
    verdict = judge(snap(deployment(), broken_old), 0.0, P)
    assert verdict.state == "waiting"


def test_a_permanent_pod_problem_fails_at_once_with_the_pod() -> None:
    verdict = judge(snap(deployment(), pod(waiting="InvalidImageName")), 0.0, P)
    assert verdict.state == "failed"
    assert verdict.message.startswith("pod web-abc-1, container app: InvalidImageName")
    assert verdict.problem is not None and verdict.pod is not None


def test_one_transient_pull_error_does_not_fail_a_good_release() -> None:  # fix 2
    s = snap(deployment(), pod(waiting="ImagePullBackOff"))
    first = judge(s, 100.0, P)
    assert first.state == "waiting"
    again = judge(snap(deployment(), pod(waiting="ImagePullBackOff"), seen=first.seen), 125.0, P)
    assert again.state == "waiting"
    # It healed: the memory of it is gone, and a new one starts a new grace.
    healed = judge(snap(deployment(), pod(), seen=again.seen), 126.0, P)
    assert healed.seen == {}
    late = judge(snap(deployment(), pod(waiting="ErrImagePull"), seen=healed.seen), 127.0, P)
    assert late.state == "waiting"
    stuck = judge(
        snap(deployment(), pod(waiting="ImagePullBackOff"), seen=first.seen), 100 + P.pull_grace, P
    )
    assert stuck.state == "failed"


def test_crashes_while_a_dependency_starts_are_tolerated() -> None:  # fix 9
    for restarts in (1, 2, 3):
        s = snap(deployment(), pod(waiting="CrashLoopBackOff", restarts=restarts))
        assert judge(s, 1000.0, P).state == "waiting"
    s = snap(deployment(), pod(waiting="CrashLoopBackOff", restarts=4))
    assert judge(s, 0.0, P).state == "failed"
    assert judge(s, 0.0, Policy(tolerate=True)).state == "waiting"


def test_unschedulable_waits_for_an_autoscaler() -> None:  # fix 1
    s = snap(deployment(), pod(unschedulable=True))
    first = judge(s, 0.0, P)
    at_60 = judge(snap(deployment(), pod(unschedulable=True), seen=first.seen), 60.0, P)
    assert at_60.state == "waiting"
    late = snap(deployment(), pod(unschedulable=True), seen=first.seen)
    assert judge(late, P.unschedulable_grace, P).state == "failed"
    coming = snap(deployment(), pod(unschedulable=True), seen=first.seen, scale_up=True)
    assert judge(coming, 10 * P.unschedulable_grace, P).state == "waiting"


def rs_create_error(obj: dict[str, Any], when: str) -> dict[str, Any]:
    obj["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ReplicaSetCreateError",
            "message": 'exceeded quota: "compute"',
            "lastUpdateTime": when,
        }
    ]
    return obj


def test_replicaset_create_error_fails_after_its_grace_even_before_observed() -> None:
    obj = rs_create_error(deployment(), "t2")
    obj["metadata"]["generation"] = 3  # observedGeneration still 2: written by a failed sync
    first = judge(snap(obj, baseline={}, history=()), 0.0, P)
    assert first.state == "waiting"  # the controller tries again: a webhook timeout passes
    verdict = judge(snap(obj, baseline={}, history=(), seen=first.seen), P.replica_failure_grace, P)
    assert verdict.state == "failed"
    assert verdict.message == 'ReplicaSetCreateError: exceeded quota: "compute"'


def test_a_condition_from_before_our_change_is_stale() -> None:  # fixes 3 and 8
    old = rs_create_error(deployment(), "t1")
    assert judge(snap(old, baseline=baseline(old)), 0.0, P).state == "waiting"
    timed_out_before = deployment()
    timed_out_before["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    stale = snap(timed_out_before, baseline=baseline(timed_out_before))
    assert judge(stale, 0.0, P).state == "waiting"  # the undo right after it is not failed
    fresh = judge(snap(timed_out_before, baseline={}), 0.0, P)
    assert fresh.state == "failed" and "exceeded its progress deadline" in fresh.message


SA_MESSAGE = (
    'pods "web-abc-" is forbidden: error looking up service account web/robot: '
    'serviceaccount "robot" not found'
)


def failing(cond_message: str) -> dict[str, Any]:
    return {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": cond_message,
    }


def test_replica_failure_fails_after_its_grace_naming_the_cause() -> None:  # fix 4
    history = (replicaset("abc", NEW, conditions=[failing(SA_MESSAGE)]), replicaset("old", OLD))
    first = judge(snap(deployment(), history=history), 10.0, P)
    assert first.state == "waiting"
    later = judge(
        snap(deployment(), history=history, seen=first.seen), 10.0 + P.replica_failure_grace, P
    )
    assert later.state == "failed"
    assert later.message == f"FailedCreate: {SA_MESSAGE}"
    tolerated = snap(deployment(), history=history, seen=first.seen)
    assert judge(tolerated, 1e6, Policy(tolerate=True)).state == "waiting"


def test_the_new_replicasets_own_failure_counts_not_the_deployments_copy() -> None:  # item 9
    obj = deployment()
    obj["status"]["conditions"] = [failing("exceeded quota: compute")]  # from the old ReplicaSet
    base = baseline(obj)
    history = (replicaset("abc", NEW, conditions=[failing(SA_MESSAGE)]), replicaset("old", OLD))
    first = judge(snap(obj, history=history, baseline=base), 0.0, P)
    verdict = judge(snap(obj, history=history, baseline=base, seen=first.seen), 60.0, P)
    assert verdict.message == f"FailedCreate: {SA_MESSAGE}"
    # The new ReplicaSet creates its pods: the Deployment's (even fresh) copy does not matter.
    fresh = judge(snap(obj, seen=first.seen), 60.0, P)
    assert fresh.state == "waiting"
    # Before the new ReplicaSet is known, a fresh condition of the Deployment is all there is.
    unknown = snap(obj, history=())
    assert judge(snap(obj, history=(), seen=judge(unknown, 0.0, P).seen), 60.0, P).state == "failed"


def test_a_deployment_paused_during_the_rollout_fails() -> None:  # fix 10
    verdict = judge(snap(deployment(spec={"paused": True})), 0.0, P)
    assert verdict.state == "failed"
    assert "kubectl rollout resume deployment/web" in verdict.message


def statefulset(ready: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "uid": "s1", "generation": 2},
        "spec": {
            "replicas": 2,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}},
        },
        "status": {
            "observedGeneration": 2,
            "readyReplicas": ready,
            "updatedReplicas": 1,
            "currentRevision": "db-1111",
            "updateRevision": "db-2222",
        },
    }


def test_statefulset_pods_are_judged_through_their_owner_and_revision() -> None:
    owner = {"kind": "StatefulSet", "uid": "s1", "controller": True}
    crashing = pod("db-1", waiting="CrashLoopBackOff", restarts=5, owner=owner)
    crashing["metadata"]["labels"] = {"controller-revision-hash": "db-2222"}
    old = pod("db-0", waiting="CrashLoopBackOff", restarts=9, owner=owner)
    old["metadata"]["labels"] = {"controller-revision-hash": "db-1111"}
    stranger = pod("other-1", waiting="InvalidImageName", owner={"uid": "x", "controller": True})
    stranger["metadata"]["labels"] = {"controller-revision-hash": "db-2222"}
    verdict = judge(Snapshot(STATEFULSET, statefulset(), (stranger, old, crashing)), 0.0, P)
    assert verdict.state == "failed"
    assert verdict.message.startswith("pod db-1, container app: CrashLoopBackOff")
    assert verdict.progress == "Waiting for 1 pods to be ready"


def test_a_daemonset_failed_create_event_fails_after_its_grace() -> None:
    ds = {
        "metadata": {"name": "agent", "uid": "a1", "generation": 2},
        "spec": {"updateStrategy": {"type": "RollingUpdate"}, "template": {}},
        "status": {"observedGeneration": 2, "desiredNumberScheduled": 2},
    }
    first = judge(Snapshot(DAEMONSET, ds, create_failure="quota"), 0.0, P)
    assert first.state == "waiting"
    failed = judge(Snapshot(DAEMONSET, ds, seen=first.seen, create_failure="quota"), 60.0, P)
    assert (failed.state, failed.message) == ("failed", "FailedCreate: quota")


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (snap(deployment(), pod()), "pod web-abc-1 never became ready (not ready)"),
        (
            snap(deployment(), pod(waiting="ImagePullBackOff")),
            "never became ready (pod web-abc-1, container app: ImagePullBackOff)",
        ),
        (Snapshot(DAEMONSET, {"metadata": {}}, create_failure="quota"), "; quota"),
    ],
)
def test_timed_out_says_what_it_waited_for(snapshot: Snapshot, expected: str) -> None:
    reason, _ = timed_out(snapshot, 59.6)
    assert reason.startswith("not complete after 60 s: ")
    assert expected in reason
