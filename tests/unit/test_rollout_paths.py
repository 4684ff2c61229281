"""The rollout's other paths on the fake cluster: dry run, rollback off, errors mid-run, kinds.

What a user sees when the rollout does not simply succeed or fail: a plan that
changes nothing, a failure left in place on request, an API error after a change,
someone else's change, a StatefulSet's forced rollback, a cancel mid-rollback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakecluster import FakeCluster, deployment, rolled_out, statefulset
from tests.unit.fake_rollout import FakeRun, ref


@pytest.fixture
def cluster() -> FakeCluster:
    found = FakeCluster()
    found.create(deployment("web", ref("web", "v1")))
    assert found.run_until(lambda: rolled_out(found, "Deployment", "web"), 30)
    return found


def image(cluster: FakeCluster, kind: str = "Deployment", name: str = "web") -> str:
    obj = cluster.get(kind, name)
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_dry_run_plans_and_changes_nothing(cluster: FakeCluster, tmp_path: Path) -> None:
    before = cluster.get("Deployment", "web")
    run = FakeRun(cluster, tmp_path, deployments="web", dry_run="true")
    result = run(ref("web", "v2"))
    assert result.status == "planned"
    assert [d.result for d in result.deployments] == ["planned"]
    assert "Dry run" in run.log
    assert cluster.get("Deployment", "web") == before
    assert cluster.get("Lease", "deployer") is None  # a dry run takes no lock


def test_rollback_off_leaves_the_failure_and_says_how_to_undo(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    run = FakeRun(cluster, tmp_path, deployments="web", rollback_on_failure="false")
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "failed", run.log
    (web,) = result.deployments
    assert "left as is (rollback-on-failure is off)" in web.reason
    assert "kubectl rollout undo deployment/web -n default" in web.reason
    assert image(cluster) == ref("crash-loop-web", "v2")


def test_an_api_error_after_a_change_is_an_outcome_and_rolled_back(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    cluster.create(deployment("api", ref("web", "v1")))
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "api"), 30)
    cluster.faults.fail(403, method="PATCH", path_contains="/deployments/api", times=10)
    run = FakeRun(cluster, tmp_path, deployments="web,api")
    result = run(ref("web", "v2"))
    assert result.status == "failed", run.log
    web, api = result.deployments
    assert web.result == "rolled-back", web.reason
    assert "not verified" in web.reason or "rolled back because api failed" in web.reason
    assert api.result == "failed" and "patch deployments.apps api" in api.reason
    assert image(cluster) == ref("web", "v1")


def test_someone_else_s_newer_image_stands(cluster: FakeCluster, tmp_path: Path) -> None:
    theirs = ref("web", "theirs")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": theirs}]}}}}
    cluster.clock.call_later(3, lambda: cluster.patch("Deployment", "web", patch))
    run = FakeRun(cluster, tmp_path, deployments="web")
    result = run(ref("never-ready-web", "v2"))
    (web,) = result.deployments
    assert web.result == "failed" and "superseded by another change" in web.reason, run.log
    assert "rolling back" not in run.log
    assert image(cluster) == theirs


def test_a_deployment_deleted_mid_rollout_is_named(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.clock.call_later(3, lambda: cluster.delete("Deployment", "web"))
    run = FakeRun(cluster, tmp_path, deployments="web")
    result = run(ref("never-ready-web", "v2"))
    (web,) = result.deployments
    assert "Deployment default/web was deleted during the rollout" in web.reason, run.log
    assert "no longer exists" in web.reason


def test_a_statefulset_stuck_on_its_failed_revision_is_forced_back(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    cluster.create(statefulset("db", ref("web", "v1"), replicas=2))
    assert cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 60)
    run = FakeRun(cluster, tmp_path, workloads="statefulset/db")
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    assert "deleting pod db-1, stuck on the failed revision" in run.log
    assert image(cluster, "StatefulSet", "db") == ref("web", "v1")


def test_a_cancel_during_the_rollback_reports_the_undo_issued(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    # Revision 1 never becomes Ready, so the rollback to it is still waiting when cancelled.
    cluster.create(deployment("nr", ref("never-ready-web", "v1"), replicas=1))
    run = FakeRun(cluster, tmp_path, deployments="nr", timeout="600s")

    def cancel_once_rolling_back() -> None:
        if "rolling back to" in run.log:
            run.cancel.set()
        else:
            cluster.clock.call_later(0.5, cancel_once_rolling_back)

    cancel_once_rolling_back()
    result = run(ref("fail-pull-web", "v2"))
    assert result.status == "cancelled", run.log
    (nr,) = result.deployments
    assert nr.reason.startswith("cancelled while rolling back; put back to the template"), nr.reason
    assert image(cluster, name="nr") == ref("never-ready-web", "v1")


def test_a_cancel_before_anything_changed_changes_nothing(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    run = FakeRun(cluster, tmp_path, deployments="web")
    run.cancel.set()
    result = run(ref("web", "v2"))
    assert result.status == "cancelled"
    assert result.deployments[0].reason == "cancelled before it was changed"
    assert image(cluster) == ref("web", "v1")
