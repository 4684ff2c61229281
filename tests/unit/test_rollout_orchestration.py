"""The rollout's orchestration against the in-memory fake cluster (issue 16).

Each test drives the real stage (``roll_out``) on the fake's virtual clock and
asserts what a user would see: the cluster left as the run found it, in order,
in time, under failure, cancel, a second run or a killed one. The items of
issue 16 are named in the test names' comments.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fakecluster import FakeCluster, configmap, deployment, rolled_out, statefulset
from tests.fakecluster.cluster import Request
from tests.unit.fake_rollout import REPO, FakeRun, ref
from tests.unit.test_secrets import assert_no_leaks


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def seeded(cluster: FakeCluster, *objects: dict[str, Any]) -> None:
    for obj in objects:
        cluster.create(obj)
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            name = obj["metadata"]["name"]
            assert cluster.run_until(lambda n=name, k=obj["kind"]: rolled_out(cluster, k, n), 60)


def index(requests: list[Request], method: str, contains: str, content: str = "") -> list[int]:
    return [
        i
        for i, r in enumerate(requests)
        if r.method == method and contains in r.path and content in (r.content_type or "")
    ]


def image_of(obj: dict[str, Any] | None) -> str:
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


APP = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: {greeting}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  {extra}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: {repo}
        envFrom: [{{configMapRef: {{name: settings}}}}]
"""


def app(greeting: str = "bonjour", replicas: int = 2, extra: str = "") -> str:
    return APP.format(greeting=greeting, replicas=replicas, extra=extra, repo=REPO)


def existing_app(cluster: FakeCluster, **spec: Any) -> dict[str, Any]:
    env = {"envFrom": [{"configMapRef": {"name": "settings"}}]}
    web = deployment("web", ref("web", "v1"), replicas=2, **spec)
    web["spec"]["template"]["spec"]["containers"][0].update(env)
    seeded(cluster, configmap("settings", {"greeting": "hello"}), web)
    found = cluster.get("Deployment", "web")
    assert found is not None
    return found


# -- 1, 2, 5 and 14: rollback puts everything back, in order, in time --------------------


def test_config_is_restored_before_the_undo_recreates_pods(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 1
    before = existing_app(cluster)
    run = FakeRun(cluster, tmp_path, manifests="app.yaml")
    run.manifest("app.yaml", app())
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    restore = index(cluster.requests, "PUT", "/configmaps/settings")
    undo = index(cluster.requests, "PATCH", "/deployments/web", "json-patch")
    assert restore and undo, run.log
    assert restore[0] < undo[0], "the undo re-created pods before their ConfigMap was back"
    assert (cluster.get("ConfigMap", "settings") or {})["data"] == {"greeting": "hello"}
    assert image_of(cluster.get("Deployment", "web")) == image_of(before)


def test_a_migration_that_runs_to_the_deadline_leaves_the_rollback_its_reserve(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 2
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="m.yaml", timeout="60s")
    run.manifest("m.yaml", FLAGS + JOB.format(extra="", restart="Never", repo=REPO))
    result = run(ref("never-ready-web", "v2"))  # the Job's pod never completes
    assert result.status == "failed", run.log
    job = result.deployments[0]
    assert job.kind == "Job" and "not complete after 45 s" in job.reason, job.reason
    assert "ConfigMap flags in default: deleted (created by this run)" in result.restored
    assert cluster.get("ConfigMap", "flags") is None


def test_manifest_workload_fields_are_restored_with_the_template(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 5
    existing_app(cluster)
    run = FakeRun(cluster, tmp_path, manifests="app.yaml")
    run.manifest("app.yaml", app(replicas=4, extra="minReadySeconds: 2"))
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    web = cluster.get("Deployment", "web")
    assert web is not None
    assert web["spec"]["replicas"] == 2
    assert web["spec"].get("minReadySeconds", 0) == 0
    assert image_of(web) == ref("web", "v1")
    (line,) = [r for r in result.restored if r.startswith("Deployment web")]
    assert "spec.replicas" in line and "spec.minReadySeconds" in line


def test_a_config_edited_by_someone_else_meanwhile_is_a_named_conflict_not_overwritten(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 14: resourceVersion preconditions
    existing_app(cluster)
    run = FakeRun(cluster, tmp_path, manifests="app.yaml")
    run.manifest("app.yaml", app())
    theirs = {"data": {"greeting": "hola"}}
    cluster.clock.call_later(
        5, lambda: cluster.patch("ConfigMap", "settings", theirs, type="merge")
    )
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    (line,) = [r for r in result.restored if r.startswith("ConfigMap settings")]
    assert "not restored: conflict, changed by someone else" in line, line
    assert (cluster.get("ConfigMap", "settings") or {})["data"] == {"greeting": "hola"}


def test_an_object_held_by_finalizers_is_reported_deleting(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 14: finalizers
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="extra.yaml")
    run.manifest(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n"
        "  finalizers: [example.com/hold]\ndata: {a: b}\n",
    )
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    line = "ConfigMap extra in default: deleting (held by finalizers example.com/hold; "
    assert any(r.startswith(line) for r in result.restored), result.restored
    found = cluster.get("ConfigMap", "extra")
    assert found is not None and found["metadata"].get("deletionTimestamp")


# -- 3, 4, 14: migrations ------------------------------------------------------------------

JOB = """
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate}}
spec:
  backoffLimit: 0
  {extra}
  template:
    spec:
      restartPolicy: {restart}
      containers: [{{name: migrate, image: {repo}}}]
"""
FLAGS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata: {a: b}\n"


def test_a_rerun_runs_a_failed_migration_again(cluster: FakeCluster, tmp_path: Path) -> None:
    """Item 3: the same digest again; the Job failed for a reason outside it (a quota)."""
    seeded(cluster, deployment("web", ref("web", "v1")))
    cluster.create({"apiVersion": "v1", "kind": "ResourceQuota",
                    "metadata": {"name": "none", "namespace": "default"},
                    "spec": {"hard": {"pods": "0"}}})  # fmt: skip
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="job.yaml")
    run.manifest(
        "job.yaml", JOB.format(extra="activeDeadlineSeconds: 5", restart="Never", repo=REPO)
    )
    image = ref("web", "v2")
    first = run(image)
    assert first.status == "failed", run.log
    failed = cluster.get("Job", "migrate")
    assert failed is not None
    cluster.delete("ResourceQuota", "none")
    second = run(image)
    assert second.status == "succeeded", run.log
    job = cluster.get("Job", "migrate")
    assert job is not None and job["metadata"]["uid"] != failed["metadata"]["uid"]
    assert image_of(cluster.get("Deployment", "web")) == image


def test_a_job_deleted_by_its_ttl_right_after_completing_is_a_success(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 4
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="job.yaml")
    run.manifest(
        "job.yaml", JOB.format(extra="ttlSecondsAfterFinished: 0", restart="Never", repo=REPO)
    )
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    assert [(d.kind, d.result) for d in result.deployments] == [
        ("Job", "succeeded"),
        ("Deployment", "succeeded"),
    ]
    assert cluster.run_until(lambda: cluster.get("Job", "migrate") is None, 30)


def test_an_on_failure_job_is_judged_by_its_backoff_limit_not_by_restarts(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 14: restartPolicy OnFailure
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="job.yaml", timeout="20m")
    text = JOB.format(extra="", restart="OnFailure", repo=REPO).replace(
        "backoffLimit: 0", "backoffLimit: 6"
    )
    run.manifest("job.yaml", text)
    result = run(ref("crash-loop-web", "v2"))
    job = result.deployments[0]
    assert job.result == "failed", run.log
    assert "BackoffLimitExceeded" in job.reason, job.reason  # the Job controller's verdict
    assert "restarted 4 times" not in job.reason


def test_a_replaced_job_s_pods_are_gone_before_the_new_job_starts(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 14: Foreground deletion
    seeded(cluster, deployment("web", ref("web", "v1")))
    cluster.stop_seconds = 20.0  # the old Job's pod takes 20 s to stop
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="job.yaml", timeout="60s")
    run.manifest("job.yaml", JOB.format(extra="", restart="Never", repo=REPO))
    assert run(ref("never-ready-web", "v2")).status == "failed"  # its pod keeps running
    overlaps: list[set[str]] = []

    def sample() -> None:
        owners = {
            str(p["metadata"]["labels"].get("controller-uid"))
            for p in cluster.list("Pod", "default", "job-name=migrate")
        }
        if len(owners) > 1:
            overlaps.append(owners)
        cluster.clock.call_later(0.5, sample)

    sample()
    second = run(ref("web", "v3"))
    assert second.status == "succeeded", run.log
    assert not overlaps, "the new Job's pod ran next to the old one's"


# -- 6: cancel ---------------------------------------------------------------------------------


def test_a_cancel_puts_everything_back_within_5_s(cluster: FakeCluster, tmp_path: Path) -> None:
    before = existing_app(cluster)
    run = FakeRun(cluster, tmp_path, manifests="app.yaml")
    run.manifest("app.yaml", app())
    cancel_at: list[float] = []

    def cancel() -> None:
        cancel_at.append(cluster.clock.elapsed)
        run.cancel.set()

    cluster.clock.call_later(12, cancel)
    result = run(ref("never-ready-web", "v2"))
    assert result.status == "cancelled", run.log
    (web,) = result.deployments
    assert web.result == "cancelled"
    assert "put back to revision 1 (not waited for)" in web.reason, web.reason
    assert (cluster.get("ConfigMap", "settings") or {})["data"] == {"greeting": "hello"}
    assert image_of(cluster.get("Deployment", "web")) == image_of(before)
    assert "ConfigMap settings in default: restored to what it was before the run" in (
        result.restored
    )
    writes = [
        r
        for r in cluster.requests
        if r.method in ("PUT", "PATCH") and r.at >= cancel_at[0] and "/leases/" not in r.path
    ]
    assert writes, run.log
    assert all(r.at - cancel_at[0] <= 5.0 for r in writes), [(r.path, r.at) for r in writes]


def test_a_cancel_while_the_api_server_stalls_still_ends_within_5_s(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    """The worst case: the Lease's renewal and the watches hang on the API server when the
    signal comes; the run still returns (outputs and summary next) within 5 s of it."""
    run = FakeRun(cluster, tmp_path, manifests="app.yaml")
    run.manifest("app.yaml", app())
    cancel_at: list[float] = []
    ended: list[tuple[Any, float, float]] = []

    def cancel() -> None:
        cancel_at.append(cluster.clock.elapsed)
        run.cancel.set()

    def scenario() -> None:
        existing_app(cluster)
        start = cluster.clock.elapsed
        # The Lease is renewed every 10 s from the start: the one at 20 s hangs.
        cluster.clock.call_later(19.9, lambda: cluster.faults.outage(120, mode="hang"))
        cluster.clock.call_later(20.1, cancel)
        result = run(ref("never-ready-web", "v2"))
        ended.append((result, start, cluster.clock.elapsed))

    # On a thread the fake's clock does not know: a run that waits in real time (a join, a
    # lock) stops virtual time, and would hang the test instead of failing it.
    runner = threading.Thread(target=scenario, daemon=True)
    runner.start()
    runner.join(30)
    assert ended, f"the cancelled run did not end (30 real seconds):\n{run.log}"
    ((result, start, end),) = ended
    assert result.status == "cancelled", run.log
    renewals = [r for r in cluster.requests_to("PUT", "/leases/") if r.at >= start + 19.9]
    assert renewals and renewals[0].at < cancel_at[0], "no renewal was in flight"
    assert end - cancel_at[0] <= 5.0, (end - cancel_at[0], run.log)
    (web,) = result.deployments
    assert web.result == "cancelled"
    assert "not released (its renewal still waits for the API server)" in run.log


def test_a_cancel_during_a_migration_leaves_the_job_running_and_says_so(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    before = seeded(cluster, deployment("web", ref("web", "v1"))) or cluster.get(
        "Deployment", "web"
    )
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="m.yaml", timeout="120s")
    run.manifest("m.yaml", FLAGS + JOB.format(extra="", restart="Never", repo=REPO))
    cluster.clock.call_later(8, run.cancel.set)
    result = run(ref("never-ready-web", "v2"))
    assert result.status == "cancelled", run.log
    job, web = result.deployments
    assert (job.kind, job.result) == ("Job", "cancelled")
    assert job.reason.startswith("cancelled while the migration ran ("), job.reason
    assert "left running (a migration stopped half-way is worse than one that finishes)" in (
        job.reason
    )
    assert "see kubectl logs job/migrate -n default" in job.reason
    assert (web.result, web.reason) == ("cancelled", "cancelled before it was changed")
    assert f"job/migrate: {job.reason}" in run.log
    # The Job is left to finish (not deleted); what the run created before it is gone.
    assert (cluster.get("Job", "migrate") or {}).get("status", {}).get("active") == 1
    assert not cluster.requests_to("DELETE", "/jobs/migrate")
    assert cluster.get("ConfigMap", "flags") is None
    assert image_of(cluster.get("Deployment", "web")) == image_of(before)


def test_signals_only_set_the_event_while_the_rollout_handles_them() -> None:  # item 6
    from deployer.errors import Cancelled
    from deployer.pipeline import CancelScope

    cancel = threading.Event()
    scope = CancelScope(cancel)
    with scope.deferred():
        scope.handle(2, None)  # SIGINT: no exception in the middle of a change
    assert cancel.is_set() and scope.signal == "SIGINT"
    later = CancelScope(threading.Event())
    with pytest.raises(Cancelled, match="Cancelled by SIGTERM"):
        later.handle(15, None)


# -- 7: one run at a time per namespace ------------------------------------------------------


def lease(cluster: FakeCluster) -> dict[str, Any]:
    found = cluster.get("Lease", "deployer")
    assert found is not None
    return found


def test_a_second_run_waits_for_the_first_naming_it_then_succeeds(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    seeded(cluster, deployment("web", ref("web", "v1"), replicas=3, minReadySeconds=10))
    first = FakeRun(cluster, tmp_path, {"GITHUB_RUN_ID": "101"}, deployments="web")
    second = FakeRun(cluster, tmp_path, {"GITHUB_RUN_ID": "102"}, deployments="web")
    results: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: results.update(first=first(ref("web", "v2"))))
    thread.start()
    assert cluster.run_until(lambda: "deployment/web: updated" in first.log, 30)
    results["second"] = second(ref("web", "v3"))
    assert cluster.run_until(lambda: not thread.is_alive(), 60)  # join() would stop the clock
    assert results["first"].status == "succeeded", first.log
    assert results["second"].status == "succeeded", second.log
    holder = "https://github.com/acme/web/actions/runs/101/attempts/1"
    waits = [ln for ln in second.log.splitlines() if ln.startswith("Waiting for namespace default")]
    assert waits and all(holder in ln for ln in waits), second.log
    assert len(waits) >= 2  # a progress line every 15 s while the first runs (~35 s)
    assert image_of(cluster.get("Deployment", "web")) == ref("web", "v3")
    assert not lease(cluster)["spec"].get("holderIdentity")  # released


def test_a_second_run_gives_up_at_its_timeout_naming_the_holder(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    seeded(cluster, deployment("web", ref("web", "v1")))
    first = FakeRun(cluster, tmp_path, {"GITHUB_RUN_ID": "101"}, deployments="web")
    second = FakeRun(cluster, tmp_path, {"GITHUB_RUN_ID": "102"}, deployments="web", timeout="30s")
    thread = threading.Thread(target=lambda: first(ref("never-ready-web", "v2")))
    thread.start()
    assert cluster.run_until(lambda: "deployment/web: updated" in first.log, 30)
    from deployer.errors import NamespaceLocked

    with pytest.raises(NamespaceLocked) as caught:
        second(ref("web", "v3"))
    first.cancel.set()
    assert cluster.run_until(lambda: not thread.is_alive(), 60)  # join() would stop the clock
    assert "https://github.com/acme/web/actions/runs/101/attempts/1" in caught.value.message
    assert not index(cluster.requests, "PATCH", "/deployments/web", "strategic")[1:]


def test_a_run_after_a_killed_run_takes_over_and_says_what_it_had_changed(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    seeded(cluster, deployment("web", ref("web", "v1")))
    now = cluster.clock.time()
    stamp = __import__("datetime").datetime.fromtimestamp(now, tz=__import__("datetime").UTC)
    # As a run records it: each workload with both image references in full.
    old, new = (f"registry.example.com:5000/team/{ref('never-ready-web', v)}" for v in "12")
    change = f"deployment/web ({old} -> {new})"
    changing = {"image": new, "changes": [change]}
    cluster.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": "deployer",
                "namespace": "default",
                "annotations": {
                    "deployer.dev/changing": json.dumps(changing),
                    "deployer.dev/holder-nonce": "dead",
                },
            },
            "spec": {
                "holderIdentity": "https://github.com/acme/web/actions/runs/7/attempts/1",
                "leaseDurationSeconds": 30,
                "renewTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
    )
    started = cluster.clock.monotonic()
    run = FakeRun(cluster, tmp_path, deployments="web")
    result = run(ref("web", "v3"))
    assert result.status == "succeeded", run.log
    assert 25 <= cluster.clock.monotonic() - started <= 45  # waited for it to expire
    (note,) = result.notes
    assert "https://github.com/acme/web/actions/runs/7/attempts/1" in note
    assert "was interrupted" in note and change in note  # the digests whole
    assert "::warning title=An earlier deploy was interrupted::" in run.log


def test_the_lease_is_released_on_every_exit(cluster: FakeCluster, tmp_path: Path) -> None:
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web")
    assert run(ref("crash-loop-web", "v2")).status == "rolled-back"
    assert not lease(cluster)["spec"].get("holderIdentity")
    missing = FakeRun(cluster, tmp_path, deployments="nope")
    with pytest.raises(Exception, match="no Deployment 'nope'"):
        missing(ref("web", "v2"))
    assert not lease(cluster)["spec"].get("holderIdentity")
    cancelled = FakeRun(cluster, tmp_path, deployments="web")
    cluster.clock.call_later(3, cancelled.cancel.set)
    assert cancelled(ref("never-ready-web", "v3")).status == "cancelled"
    assert not lease(cluster)["spec"].get("holderIdentity")


def test_the_lease_is_renewed_while_held(cluster: FakeCluster, tmp_path: Path) -> None:
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", timeout="90s")
    assert run(ref("never-ready-web", "v2")).status == "rolled-back"
    renewals = index(cluster.requests, "PUT", "/leases/deployer")
    assert len(renewals) >= 6  # take, record, ~6 renewals over ~70 s, release


def test_credentials_without_leases_rights_warn_and_deploy_unlocked(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    seeded(cluster, deployment("web", ref("web", "v1")))
    cluster.deny("get", "leases", group="coordination.k8s.io")
    run = FakeRun(cluster, tmp_path, deployments="web")
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    assert "::warning title=No deploy lock::Namespace default is not locked for this run" in (
        run.log
    )
    assert "two runs at once are not kept apart" in run.log
    assert "get, create and update on leases.coordination.k8s.io" in run.log
    assert cluster.get("Lease", "deployer") is None
    assert image_of(cluster.get("Deployment", "web")) == ref("web", "v2")


def test_a_lock_taken_over_during_the_run_is_reported_lost_and_left_to_its_holder(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", timeout="60s")
    theirs = "https://github.com/acme/other/actions/runs/9/attempts/1"

    def take_over() -> None:  # another run that thought ours dead (a renewal too late)
        cluster.patch("Lease", "deployer", {"spec": {"holderIdentity": theirs}}, type="merge")

    cluster.clock.call_later(5, take_over)
    result = run(ref("never-ready-web", "v2"))
    assert result.status == "rolled-back", run.log
    assert (
        "::warning title=Deploy lock lost::This run lost the lock of namespace default" in run.log
    )
    assert "another run may deploy to it now" in run.log
    assert lease(cluster)["spec"]["holderIdentity"] == theirs  # not released over theirs


def test_a_namespace_the_manifests_create_is_deployed_unlocked(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    run = FakeRun(
        cluster, tmp_path, manifests="ns.yaml", namespace="fresh", allow_cluster_scoped="true"
    )
    run.manifest(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: fresh}\n---\n" + FLAGS,
    )
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    assert "Namespace fresh does not exist yet: not locked" in run.log
    assert (cluster.get("ConfigMap", "flags", "fresh") or {}).get("data") == {"a": "b"}


# -- 12, 13, 14: the watch loop ------------------------------------------------------------------


def test_probes_run_on_time_while_events_keep_coming(cluster: FakeCluster, tmp_path: Path) -> None:
    """Item 12: an autoscaler's node comes after 150 s; busy pod events must not hide its event."""
    seeded(cluster, deployment("web", ref("web", "v1"), replicas=1))
    cluster.autoscaler.enable(delay=150)
    run = FakeRun(cluster, tmp_path, deployments="web", timeout="10m")
    ticks = [0]

    def busy() -> None:  # an annotation on the running pod, every 0.1 s: a busy event stream
        for pod in cluster.list("Pod", "default", "app=web"):
            if not pod["metadata"].get("deletionTimestamp"):
                ticks[0] += 1
                patch = {"metadata": {"annotations": {"tick": str(ticks[0])}}}
                cluster.patch("Pod", pod["metadata"]["name"], patch, type="merge")
        if ticks[0] < 4000:
            cluster.clock.call_later(0.1, busy)

    busy()  # from the start: the loop never has a quiet moment
    result = run(ref("unschedulable-web", "v2"))
    assert result.status == "succeeded", run.log[-3000:]
    assert "Unschedulable" not in result.deployments[0].reason


def test_a_partitioned_statefulset_undo_waits_for_the_canary(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    """Item 13: the canary db-2 is Ready on the new image; web fails, so both roll back."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": {"name": "robot", "namespace": "default"}}  # fmt: skip
    cluster.create(sa)
    seeded(
        cluster,
        statefulset("db", ref("web", "v1"), replicas=3, updateStrategy=strategy),
        deployment("web", ref("web", "v1"), pod={"serviceAccountName": "robot"}),
    )
    cluster.delete("ServiceAccount", "robot")  # web's next pods cannot be created
    run = FakeRun(cluster, tmp_path, workloads="statefulset/db,deployment/web", container="app")
    result = run(ref("web", "v2"))
    assert result.status == "rolled-back", run.log
    assert "serviceaccount" in result.deployments[1].reason, result.deployments[1].reason
    canary = cluster.get("Pod", "db-2")
    assert canary is not None and not canary["metadata"].get("deletionTimestamp"), run.log
    assert canary["spec"]["containers"][0]["image"] == ref("web", "v1"), run.log
    ready = [c for c in canary["status"].get("conditions") or [] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"


def test_an_api_outage_of_20_s_does_not_fail_a_healthy_rollout(
    cluster: FakeCluster, tmp_path: Path
) -> None:  # item 14
    seeded(cluster, deployment("web", ref("web", "v1"), replicas=3, minReadySeconds=10))
    run = FakeRun(cluster, tmp_path, deployments="web")
    cluster.clock.call_later(3, lambda: cluster.outage(20))
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    assert result.deployments[0].result == "succeeded"
    assert any(r.status == 0 for r in cluster.requests), "no request met the outage"


# -- a Secret in the manifests is masked in every run, not only in a dry run ----------------

SECRET = """
apiVersion: v1
kind: Secret
metadata: {{name: db}}
stringData: {{url: "postgres://app:{password}@db:5432/app"}}
data: {{token: {token}}}
"""


def test_a_manifest_secret_never_prints_when_a_failing_pods_log_shows_it(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password, token = "db-Passw0rd-that-must-never-print", "api-t0ken-from-the-secret"
    url = f"postgres://app:{password}@db:5432/app"
    log = f"connecting to {url}\nusing token {token}\npanic: connection refused\n"
    # The app prints its config as it crashes: the log tail is part of the diagnosis.
    monkeypatch.setattr("tests.fakecluster.cluster._default_log", lambda status, previous: log)
    seeded(cluster, deployment("web", ref("web", "v1")))
    run = FakeRun(cluster, tmp_path, deployments="web", manifests="secret.yaml")
    encoded = base64.b64encode(token.encode()).decode()
    run.manifest("secret.yaml", SECRET.format(password=password, token=encoded))
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    assert "panic: connection refused" in run.log  # the log tail was shown
    assert_no_leaks({"log": run.log}, {"password": password, "url": url, "token": token})
