"""The pure judgements: kubectl's rollout-status rules and our pod fail-fast policy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.rollout.status import (
    Policy,
    daemonset_status,
    job_status,
    pod_problem,
    progress_line,
    rollout_status,
    statefulset_status,
    template_without_hash,
)

P = Policy()


def deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int | None = 3,
    updated: int = 3,
    total: int = 3,
    available: int = 3,
    progressing: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "updatedReplicas": updated,
        "replicas": total,
        "availableReplicas": available,
    }
    if progressing:
        status["conditions"] = [{"type": "Progressing", "status": "False", "reason": progressing}]
    return {"metadata": {"name": "web", "generation": generation}, "spec": spec, "status": status}


def kubectl_rule(d: dict[str, Any]) -> tuple[str, str]:
    """kubectl's DeploymentStatusViewer, transcribed independently of the code under test."""
    if d["metadata"]["generation"] > d["status"]["observedGeneration"]:
        return "waiting", "observed"
    for c in d["status"].get("conditions", []):
        if c["type"] == "Progressing" and c["reason"] == "ProgressDeadlineExceeded":
            return "failed", "deadline"
    s = d["status"]
    if "replicas" in d["spec"] and s["updatedReplicas"] < d["spec"]["replicas"]:
        return "waiting", "updated"
    if s["replicas"] > s["updatedReplicas"]:
        return "waiting", "old"
    if s["availableReplicas"] < s["updatedReplicas"]:
        return "waiting", "available"
    return "complete", ""


@given(
    generation=st.integers(1, 4),
    observed=st.integers(0, 4),
    replicas=st.one_of(st.none(), st.integers(0, 4)),
    updated=st.integers(0, 5),
    total=st.integers(0, 6),
    available=st.integers(0, 5),
    progressing=st.sampled_from([None, "ProgressDeadlineExceeded", "ReplicaSetUpdated"]),
)
def test_rollout_status_matches_kubectl_on_every_combination(**fields: Any) -> None:
    d = deployment(**fields)
    state, _ = kubectl_rule(d)
    assert rollout_status(d).state == state


@pytest.mark.parametrize(
    ("fields", "state", "message"),
    [
        ({"generation": 3, "observed": 2}, "waiting", "Waiting for deployment spec update"),
        (
            {"generation": 3, "observed": 2, "progressing": "ProgressDeadlineExceeded"},
            "waiting",
            "spec update",
        ),
        ({"progressing": "ProgressDeadlineExceeded"}, "failed", "exceeded its progress deadline"),
        ({"updated": 1}, "waiting", "1 out of 3 new replicas have been updated"),
        ({"total": 4}, "waiting", "1 old replicas are pending termination"),
        ({"available": 2}, "waiting", "2 of 3 updated replicas are available"),
        ({}, "complete", "successfully rolled out"),
        ({"replicas": None, "updated": 0, "total": 0, "available": 0}, "complete", "rolled out"),
    ],
)
def test_rollout_status_rules_in_order(fields: dict[str, Any], state: str, message: str) -> None:
    status = rollout_status(deployment(**fields))
    assert status.state == state
    assert message in status.message


def test_progress_line_shows_counts() -> None:
    assert progress_line(deployment(available=2)) == "2 of 3 updated replicas available"
    line = progress_line(deployment(updated=1, total=4, available=0))
    assert line == "0 of 3 updated replicas available, 1 of 3 updated, 3 old pending termination"


def pod(
    reason: str = "", restarts: int = 0, terminated: str = "", last: str = "", scheduled: str = ""
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if reason:
        state["waiting"] = {"reason": reason, "message": "why"}
    if terminated:
        state["terminated"] = {"reason": terminated, "exitCode": 137}
    cs: dict[str, Any] = {"name": "web", "restartCount": restarts, "state": state}
    if last:
        cs["lastState"] = {"terminated": {"reason": last}}
    status: dict[str, Any] = {"containerStatuses": [cs]}
    if scheduled:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": scheduled, "message": "0/2 nodes"}
        ]
    return {"metadata": {"name": "web-1"}, "status": status}


@pytest.mark.parametrize(
    ("the_pod", "reason", "grace"),
    [
        (pod("InvalidImageName"), "InvalidImageName", 0.0),
        (pod("ErrImageNeverPull"), "ErrImageNeverPull", 0.0),
        # A registry 5xx/429 or a mirror lagging behind the push heals on a retry.
        (pod("ImagePullBackOff"), "ImagePullBackOff", P.pull_grace),
        (pod("ErrImagePull"), "ErrImagePull", P.pull_grace),
        (pod("CreateContainerConfigError"), "CreateContainerConfigError", P.config_grace),
        (pod("CreateContainerError"), "CreateContainerError", P.config_grace),
        # Apps that crash until a sidecar or database is ready settle after 2-3 restarts.
        (pod("CrashLoopBackOff", restarts=1), "CrashLoopBackOff", None),
        (pod("CrashLoopBackOff", restarts=3), "CrashLoopBackOff", None),
        (pod("CrashLoopBackOff", restarts=4), "CrashLoopBackOff", 0.0),
        (
            pod("CrashLoopBackOff", restarts=4, last="OOMKilled"),
            "CrashLoopBackOff (last exit: OOMKilled)",
            0.0,
        ),
        (pod(terminated="OOMKilled", restarts=1), "OOMKilled", None),
        (pod(terminated="OOMKilled", restarts=4), "OOMKilled", 0.0),
        # An autoscaler takes 45 s to minutes to add a node.
        (pod(scheduled="Unschedulable"), "Unschedulable", P.unschedulable_grace),
    ],
)
def test_pod_problems_and_their_grace(
    the_pod: dict[str, Any], reason: str, grace: float | None
) -> None:
    problem = pod_problem(the_pod)
    assert problem is not None
    assert (problem.reason, problem.grace) == (reason, grace)
    assert problem.line().startswith("pod web-1")


def test_the_defaults_wait_long_enough_for_what_heals() -> None:
    assert P.restarts >= 3
    assert P.pull_grace >= 20.0  # two kubelet pull retries (10 s, 20 s back-off)
    assert P.unschedulable_grace > 60.0


def test_tolerating_failures_makes_every_problem_non_fatal() -> None:
    tolerant = Policy(tolerate=True)
    for the_pod in (pod("InvalidImageName"), pod("CrashLoopBackOff", restarts=9)):
        problem = pod_problem(the_pod, tolerant)
        assert problem is not None and problem.grace is None


@pytest.mark.parametrize(
    "the_pod",
    [
        pod(),
        pod("ContainerCreating"),
        pod(terminated="Completed", restarts=5),
        pod(scheduled="SchedulerError"),
        {
            "metadata": {"name": "x", "deletionTimestamp": "now"},
            "status": pod("ImagePullBackOff")["status"],
        },
    ],
)
def test_healthy_pods_are_no_problem(the_pod: dict[str, Any]) -> None:
    assert pod_problem(the_pod) is None


def statefulset(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int | None = 3,
    ready: int = 3,
    updated: int = 3,
    partition: int | None = None,
    rolling: bool = True,
    update: str = "r2",
    current: str = "r2",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"updateStrategy": {"type": "RollingUpdate"}}
    if replicas is not None:
        spec["replicas"] = replicas
    if rolling:
        spec["updateStrategy"]["rollingUpdate"] = (
            {} if partition is None else {"partition": partition}
        )
    status = {
        "observedGeneration": observed,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "currentReplicas": 3,
        "updateRevision": update,
        "currentRevision": current,
    }
    return {"metadata": {"name": "db", "generation": generation}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("fields", "state", "message"),
    [
        ({"observed": 0, "generation": 0}, "waiting", "spec update to be observed"),
        ({"generation": 3}, "waiting", "spec update to be observed"),
        ({"ready": 1}, "waiting", "Waiting for 2 pods to be ready"),
        # kubectl: with rollingUpdate set, only the partition decides.
        ({"partition": 1, "updated": 1}, "waiting", "1 out of 2 new pods have been updated"),
        ({"partition": 1, "updated": 2}, "complete", "partitioned roll out complete: 2 new pods"),
        ({"updated": 3, "update": "r3"}, "complete", "partitioned roll out complete"),
        ({"rolling": False, "update": "r3"}, "waiting", "complete 3 pods at revision r3"),
        ({"rolling": False}, "complete", "rolling update complete 3 pods at revision r2"),
    ],
)
def test_statefulset_status_is_kubectls(fields: dict[str, Any], state: str, message: str) -> None:
    status = statefulset_status(statefulset(**fields))
    assert (status.state, message in status.message) == (state, True), status


def daemonset(
    *,
    generation: int = 2,
    observed: int = 2,
    desired: int = 2,
    updated: int = 2,
    available: int = 2,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "agent", "generation": generation},
        "spec": {"updateStrategy": {"type": "RollingUpdate"}},
        "status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": desired,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
        },
    }


@pytest.mark.parametrize(
    ("fields", "state", "message"),
    [
        ({"generation": 3}, "waiting", "Waiting for daemon set spec update to be observed"),
        ({"updated": 1}, "waiting", '"agent" rollout to finish: 1 out of 2 new pods have been'),
        ({"available": 1}, "waiting", "1 of 2 updated pods are available"),
        ({}, "complete", 'daemon set "agent" successfully rolled out'),
    ],
)
def test_daemonset_status_is_kubectls(fields: dict[str, Any], state: str, message: str) -> None:
    status = daemonset_status(daemonset(**fields))
    assert status.state == state
    assert message in status.message


def test_on_delete_is_reported_not_waited_for() -> None:
    from deployer.rollout.kinds import DAEMONSET, STATEFULSET

    for kind, obj in ((STATEFULSET, statefulset(ready=0)), (DAEMONSET, daemonset(updated=0))):
        obj["spec"]["updateStrategy"] = {"type": "OnDelete"}
        status = kind.status(obj)
        assert status.state == "complete"
        assert "OnDelete" in status.message


def test_job_status_follows_its_conditions() -> None:
    job: dict[str, Any] = {"metadata": {"name": "migrate"}, "status": {"active": 1}}
    assert job_status(job).state == "waiting"
    job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    assert job_status(job).state == "complete"
    job["status"]["conditions"] = [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    ]
    failed = job_status(job)
    assert failed.state == "failed" and "BackoffLimitExceeded" in failed.message


def test_template_without_hash_leaves_the_input_alone() -> None:
    template = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {}}
    assert template_without_hash(template) == {"metadata": {"labels": {"app": "web"}}, "spec": {}}
    assert template["metadata"]["labels"]["pod-template-hash"] == "abc"
