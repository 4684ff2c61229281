"""The pure judgements: kubectl's rollout-status rules and our pod fail-fast policy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.rollout_status import (
    GRACE_SECONDS,
    deployment_problem,
    pod_problem,
    progress_line,
    rollout_status,
    template_without_hash,
)


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


def test_replicaset_create_error_fails_fast_but_kubectl_would_wait() -> None:
    d = deployment(updated=0)
    d["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ReplicaSetCreateError",
            "message": "quota",
        }
    ]
    assert rollout_status(d).state == "waiting"
    assert deployment_problem(d) == "ReplicaSetCreateError: quota"
    assert deployment_problem(deployment()) is None


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
        (pod("ImagePullBackOff"), "ImagePullBackOff", 0.0),
        (pod("InvalidImageName"), "InvalidImageName", 0.0),
        (pod("ErrImageNeverPull"), "ErrImageNeverPull", 0.0),
        (pod("ErrImagePull"), "ErrImagePull", GRACE_SECONDS),
        (pod("CreateContainerConfigError"), "CreateContainerConfigError", GRACE_SECONDS),
        (pod("CreateContainerError"), "CreateContainerError", GRACE_SECONDS),
        (pod("CrashLoopBackOff", restarts=1), "CrashLoopBackOff", GRACE_SECONDS),
        (pod("CrashLoopBackOff", restarts=2), "CrashLoopBackOff", 0.0),
        (
            pod("CrashLoopBackOff", restarts=3, last="OOMKilled"),
            "CrashLoopBackOff (last exit: OOMKilled)",
            0.0,
        ),
        (pod(terminated="OOMKilled", restarts=2), "OOMKilled", 0.0),
        (pod(scheduled="Unschedulable"), "Unschedulable", 2 * GRACE_SECONDS),
    ],
)
def test_pod_problems_and_their_grace(the_pod: dict[str, Any], reason: str, grace: float) -> None:
    problem = pod_problem(the_pod)
    assert problem is not None
    assert (problem.reason, problem.grace) == (reason, grace)
    assert problem.line().startswith("pod web-1")


@pytest.mark.parametrize(
    "the_pod",
    [
        pod(),
        pod("ContainerCreating"),
        pod(terminated="OOMKilled", restarts=1),  # one crash is tolerated
        pod(terminated="Completed", restarts=5),
        pod(scheduled="SchedulerError"),
        {
            "metadata": {"name": "x", "deletionTimestamp": "now"},
            "status": pod("ImagePullBackOff")["status"],
        },
    ],
)
def test_healthy_or_tolerated_pods_are_no_problem(the_pod: dict[str, Any]) -> None:
    assert pod_problem(the_pod) is None


def test_template_without_hash_leaves_the_input_alone() -> None:
    template = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {}}
    assert template_without_hash(template) == {"metadata": {"labels": {"app": "web"}}, "spec": {}}
    assert template["metadata"]["labels"]["pod-template-hash"] == "abc"
