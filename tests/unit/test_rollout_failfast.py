"""Fail-fast accuracy (issue 16, items 8-11 and 14), judged on what the fake cluster does.

Each test plays a scenario on :mod:`tests.fakecluster` and judges the workload the
way the rollout's watch loop does: every quarter of a virtual second, the workload,
its pods and its ReplicaSets/ControllerRevisions go into :func:`judge`, with the
``seen`` map carried from one verdict to the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployer.cluster import label_selector
from deployer.rollout.judge import Snapshot, Verdict, baseline, judge
from deployer.rollout.kinds import DAEMONSET, DEPLOYMENT, KINDS, STATEFULSET
from deployer.rollout.status import Policy, condition, pod_problem
from tests.fakecluster import (
    ApiError,
    FakeCluster,
    daemonset,
    deployment,
    quota,
    rolled_out,
    statefulset,
)
from tests.fakecluster.store import Admission

POLICY = Policy()


def ref(name: str, n: int = 1) -> str:
    return f"registry.example/{name}@sha256:{str(n) * 64}"


def set_image(cluster: FakeCluster, kind: str, name: str, image: str) -> None:
    cluster.patch(
        kind,
        name,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}},
    )


def snapshot(
    cluster: FakeCluster, kind: str, name: str, base: Mapping[str, str], seen: Mapping[Any, float]
) -> Snapshot:
    obj = cluster.get(kind, name)
    assert obj is not None
    selector = label_selector(obj["spec"]["selector"])
    history = "ReplicaSet" if kind == "Deployment" else "ControllerRevision"
    return Snapshot(
        KINDS[kind.lower()],
        obj,
        tuple(cluster.list("Pod", selector=selector)),
        base,
        seen,
        history=tuple(cluster.list(history, selector=selector)),
    )


def watch(
    cluster: FakeCluster,
    kind: str,
    name: str,
    *,
    until: float,
    before: Mapping[str, Any] | None = None,
) -> tuple[Verdict, float]:
    """Judge ``kind/name`` every 0.25 virtual s until a verdict or ``until`` seconds pass."""
    base = baseline(before if before is not None else cluster.get(kind, name))
    start = cluster.clock.elapsed
    seen: Mapping[Any, float] = {}
    verdict = judge(snapshot(cluster, kind, name, base, seen), cluster.clock.monotonic(), POLICY)
    while cluster.clock.elapsed - start < until:
        cluster.run(0.25)
        verdict = judge(
            snapshot(cluster, kind, name, base, seen), cluster.clock.monotonic(), POLICY
        )
        seen = verdict.seen
        if verdict.state != "waiting":
            break
    return verdict, cluster.clock.elapsed - start


def running(cluster: FakeCluster, kind: str, name: str, image: str, **spec: Any) -> dict[str, Any]:
    make = {"Deployment": deployment, "StatefulSet": statefulset, "DaemonSet": daemonset}[kind]
    cluster.create(make(name, image, **spec))
    assert cluster.run_until(lambda: rolled_out(cluster, kind, name), 60)
    found = cluster.get(kind, name)
    assert found is not None
    return found


def mirror(a: Admission) -> None:
    """A mutating webhook that pulls every image through a registry mirror."""
    if a.operation == "CREATE" and a.t.kind == "Pod":
        for c in a.obj["spec"]["containers"]:
            c["image"] = c["image"].replace("registry.example/", "mirror.example/")


# -- item 8: "new" pods are the new revision's, never found by image ------------------------------


def test_a_registry_mirror_rewriting_images_does_not_turn_fail_fast_off() -> None:
    cluster = FakeCluster()
    cluster.admit(mirror, mutating=True)
    before = running(cluster, "Deployment", "web", ref("web"))
    set_image(cluster, "Deployment", "web", ref("fail-pull-web", 2))
    verdict, took = watch(cluster, "Deployment", "web", until=120, before=before)
    assert verdict.state == "failed", verdict
    assert "ImagePullBackOff" in verdict.message or "ErrImagePull" in verdict.message
    assert took < 40


def test_a_daemonset_behind_a_mirror_fails_fast_too() -> None:
    cluster = FakeCluster()
    cluster.admit(mirror, mutating=True)
    before = running(cluster, "DaemonSet", "agent", ref("web"))
    set_image(cluster, "DaemonSet", "agent", ref("fail-pull-web", 2))
    verdict, took = watch(cluster, "DaemonSet", "agent", until=120, before=before)
    assert verdict.state == "failed", verdict
    assert took < 40


def test_a_same_digest_statefulset_change_marks_the_stuck_pod_for_the_forced_rollback() -> None:
    """The undo restores the template; the pod of the failed revision must count as old.

    Same image before and after (only the nodeSelector changed), so telling the
    pods apart by image would leave db-1 in place and the undo would stall
    (kubernetes/kubernetes#67250).
    """
    cluster = FakeCluster()
    good = running(cluster, "StatefulSet", "db", ref("web"), replicas=2)
    cluster.patch(
        "StatefulSet", "db", {"spec": {"template": {"spec": {"nodeSelector": {"pool": "nowhere"}}}}}
    )
    cluster.run(10)
    cluster.patch(
        "StatefulSet", "db", {"spec": {"template": good["spec"]["template"]}}, type="merge"
    )
    cluster.patch(
        "StatefulSet", "db", {"spec": {"template": {"spec": {"nodeSelector": None}}}}, type="merge"
    )
    cluster.run(1)
    live = cluster.get("StatefulSet", "db")
    assert live is not None
    pods = cluster.list("Pod", selector="app=db")
    history = tuple(cluster.list("ControllerRevision", selector="app=db"))
    new = {p["metadata"]["name"] for p in STATEFULSET.new_pods(live, pods, history)}
    stuck = [
        p["metadata"]["name"]
        for p in pods
        if p["metadata"]["name"] not in new
        and (condition(p, "Ready") or {}).get("status") != "True"
    ]
    assert stuck == ["db-1"]
    assert new == {"db-0"}


def test_new_deployment_pods_are_those_of_the_new_replicaset() -> None:
    cluster = FakeCluster()
    running(cluster, "Deployment", "web", ref("web"), replicas=2)
    cluster.patch(
        "Deployment", "web", {"spec": {"template": {"spec": {"nodeSelector": {"pool": "nowhere"}}}}}
    )
    cluster.run(2)
    live = cluster.get("Deployment", "web")
    assert live is not None
    pods = cluster.list("Pod", selector="app=web")
    history = tuple(cluster.list("ReplicaSet", selector="app=web"))
    new = DEPLOYMENT.new_pods(live, pods, history)
    assert len(pods) == 3 and len(new) == 1  # same image everywhere; one pod of the new template
    (pod,) = new
    assert (pod_problem(pod) or POLICY).reason == "Unschedulable"  # type: ignore[union-attr]
    assert DAEMONSET.new_pods(live, [], ()) == []


# -- item 9: the new ReplicaSet's own ReplicaFailure --------------------------------------------------


def test_a_replica_failure_masked_by_an_earlier_one_fails_fast_naming_its_own_cause() -> None:
    cluster = FakeCluster()
    cluster.create(quota("pods", {"pods": "2"}))
    cluster.create(deployment("web", ref("web"), replicas=3))
    cluster.run(5)  # two pods run; the third is refused by the quota: ReplicaFailure
    before = cluster.get("Deployment", "web")
    assert before is not None and condition(before, "ReplicaFailure") is not None
    cluster.patch(
        "Deployment", "web", {"spec": {"template": {"spec": {"serviceAccountName": "robot"}}}}
    )
    verdict, took = watch(cluster, "Deployment", "web", until=60, before=before)
    assert verdict.state == "failed", verdict
    assert 'serviceaccount "robot" not found' in verdict.message
    assert took < 15


# -- item 10: quota while old pods terminate --------------------------------------------------------


def test_quota_failed_creates_while_an_old_pod_terminates_are_waited_out() -> None:
    cluster = FakeCluster()
    cluster.stop_seconds = 25  # the old pods take 25 s to stop (grace 30 s)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    before = running(cluster, "Deployment", "web", ref("web"), replicas=2, strategy=strategy)
    cluster.create(quota("pods", {"pods": "2"}))
    set_image(cluster, "Deployment", "web", ref("web", 2))
    verdict, took = watch(cluster, "Deployment", "web", until=300, before=before)
    assert verdict.state == "complete", verdict
    assert took > 50  # two old pods, one after the other, each 25 s


def test_a_quota_failure_with_nothing_terminating_fails_after_the_grace() -> None:
    cluster = FakeCluster()
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    before = running(cluster, "Deployment", "web", ref("web"), replicas=2, strategy=strategy)
    cluster.create(quota("pods", {"pods": "2"}))
    set_image(cluster, "Deployment", "web", ref("web", 2))
    verdict, took = watch(cluster, "Deployment", "web", until=120, before=before)
    assert verdict.state == "failed", verdict
    assert "exceeded quota: pods" in verdict.message
    assert POLICY.replica_failure_grace <= took < POLICY.replica_failure_grace + 2


def test_a_failure_held_long_by_terminating_pods_gets_the_controllers_next_retry() -> None:
    """After a long hold, the ReplicaSet controller's back-off puts its next create far out.

    Failing 10 s after the last old pod went would roll back a rollout whose pod is
    created at the controller's next try; a failure that persists past that try fails.
    """
    cluster = FakeCluster()
    cluster.stop_seconds = 25
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    before = running(cluster, "Deployment", "web", ref("web"), replicas=1, strategy=strategy)
    cluster.create(quota("pods", {"pods": "1"}))
    cluster.create(quota("cpu", {"requests.cpu": "1"}))
    big = {
        "containers": [
            {"name": "app", "image": ref("web", 2), "resources": {"requests": {"cpu": "2"}}}
        ]
    }
    cluster.patch("Deployment", "web", {"spec": {"template": {"spec": big}}})
    verdict, took = watch(cluster, "Deployment", "web", until=300, before=before)
    assert verdict.state == "failed", verdict
    assert "requests.cpu" in verdict.message
    assert took > 25 + POLICY.replica_failure_grace


# -- item 11: image pull problems ----------------------------------------------------------------------


def test_the_pull_grace_does_not_restart_when_the_kubelet_flips_the_reason() -> None:
    cluster = FakeCluster()
    before = running(cluster, "Deployment", "web", ref("web"), replicas=1)
    set_image(cluster, "Deployment", "web", ref("fail-pull-web", 2))
    verdict, took = watch(cluster, "Deployment", "web", until=120, before=before)
    assert verdict.state == "failed", verdict
    # First pull failure 1 s after the pod was bound, then 30 s of grace.
    assert POLICY.pull_grace < took < POLICY.pull_grace + 3


def test_registry_unavailable_and_image_inspect_errors_are_pull_problems() -> None:
    for image in (ref("registry-unavailable-web", 2), ref("inspect-error-web", 3)):
        cluster = FakeCluster()
        before = running(cluster, "Deployment", "web", ref("web"), replicas=1)
        set_image(cluster, "Deployment", "web", image)
        verdict, took = watch(cluster, "Deployment", "web", until=120, before=before)
        assert verdict.state == "failed", (image, verdict)
        assert verdict.problem is not None
        assert verdict.problem.reason in (
            "RegistryUnavailable",
            "ImagePullBackOff",
            "ImageInspectError",
        )
        assert took < POLICY.pull_grace + 3


# -- item 14: a transient ReplicaSetCreateError ------------------------------------------------------------


def webhook_timeouts(cluster: FakeCluster, seconds: float) -> Any:
    """A validating webhook on ReplicaSets that times out for ``seconds`` of virtual time."""
    until = cluster.clock.elapsed + seconds

    def check(a: Admission) -> None:
        if a.operation == "CREATE" and a.t.kind == "ReplicaSet" and cluster.clock.elapsed < until:
            raise ApiError(
                500,
                "InternalError",
                'Internal error occurred: failed calling webhook "policy.example.com": failed to '
                'call webhook: Post "https://policy.example.svc:443/validate?timeout=10s": '
                "context deadline exceeded",
            )

    return check


def test_a_transient_replicaset_create_error_is_not_fatal() -> None:
    cluster = FakeCluster()
    before = running(cluster, "Deployment", "web", ref("web"), replicas=2)
    cluster.admit(webhook_timeouts(cluster, 4))
    set_image(cluster, "Deployment", "web", ref("web", 2))
    verdict, took = watch(cluster, "Deployment", "web", until=60, before=before)
    assert verdict.state == "complete", verdict
    assert took > 4
    events = [e["reason"] for e in cluster.events(name="web") if e["type"] == "Warning"]
    assert "ReplicaSetCreateError" in events  # it happened, and the rollout went on


def test_a_replicaset_create_error_that_persists_fails_after_the_grace() -> None:
    cluster = FakeCluster()
    before = running(cluster, "Deployment", "web", ref("web"), replicas=2)
    cluster.admit(webhook_timeouts(cluster, 3600))
    set_image(cluster, "Deployment", "web", ref("web", 2))
    verdict, took = watch(cluster, "Deployment", "web", until=60, before=before)
    assert verdict.state == "failed", verdict
    assert verdict.message.startswith("ReplicaSetCreateError: ")
    assert "context deadline exceeded" in verdict.message
    assert POLICY.replica_failure_grace <= took < POLICY.replica_failure_grace + 2
