"""The roll-out stage against the real control plane (kube-apiserver + KWOK nodes).

KWOK makes pods Ready after 1-2 s, except images whose last path segment starts
with ``fail-pull`` (ImagePullBackOff), ``crash-loop`` (CrashLoopBackOff) or
``never-ready`` (Running, never Ready). One fresh namespace per test, except the
restricted-kubeconfig tests, which must use TEST_NAMESPACE.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from deployer.cluster import connect
from deployer.errors import AccessDenied, ConfigError
from deployer.report import RunReport, summary
from deployer.rollout import roll_out
from tests.conftest import need_service
from tests.helpers import (
    REGISTRY,
    Run,
    admin,
    create_deployment,
    create_workload,
    image_of,
    namespace,
    read,
    read_workload,
    ref,
    settings,
    wait_complete,
)

pytestmark = pytest.mark.integration
__all__ = ["admin", "namespace", "settings"]  # fixtures used here


def test_happy_path_changes_image_and_revision(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    new = ref("web", "v2")
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web")
    result = run(new)
    assert result.status == "succeeded", run.log
    (web,) = result.deployments
    assert (web.name, web.namespace, web.containers) == ("web", namespace, ("app",))
    assert web.previous_image == ref("web", "v1")
    assert web.new_image == new
    assert web.result == "succeeded"
    assert web.reason == ""
    assert (
        web.revision
        == int(before["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) + 1
    )
    after = read(admin, namespace, "web")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == new
    annotations = after["metadata"]["annotations"]
    assert annotations["kubernetes.io/change-cause"].startswith(f"deployer: {new} (commit abc1234")
    assert annotations["deployer.dev/commit"] == "https://github.com/acme/web/commit/abc1234def5678"
    assert annotations["deployer.dev/run-url"] == "https://github.com/acme/web/actions/runs/42"
    assert "updated replicas available" in run.log
    assert web.as_output()["previous-image"] == ref("web", "v1")


@pytest.mark.parametrize(
    ("repo", "timeout", "reason"),
    [
        ("fail-pull-web", "60s", "ImagePullBackOff"),
        ("crash-loop-web", "60s", "CrashLoopBackOff"),
        ("never-ready-web", "20s", "never became ready"),
    ],
)
def test_each_failure_is_rolled_back_to_the_template_before(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tmp_path: Path,
    repo: str,
    timeout: str,
    reason: str,
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        container="app",
        timeout=timeout,
    )
    started = time.monotonic()
    result = run(ref(repo, "bad"))
    took = time.monotonic() - started
    assert result.status == "rolled-back", run.log
    (web,) = result.deployments
    assert web.result == "rolled-back"
    assert reason in web.reason
    assert "rolled back to the previous revision" in web.reason
    assert f"::error title=Rollout of web failed::{namespace}/web: " in run.log
    after = read(admin, namespace, "web")
    assert after["spec"]["template"] == before["spec"]["template"]
    assert web.revision is not None and web.revision > 2
    if repo != "never-ready-web":
        assert took < 40, f"fail-fast took {took:.1f} s"
        assert "pod web-" in web.diagnosis


def test_rollback_disabled_leaves_the_new_template(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    bad = ref("fail-pull-web", "bad")
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        container="app",
        rollback_on_failure="false",
    )
    result = run(bad)
    assert result.status == "failed"
    (web,) = result.deployments
    assert web.result == "failed"
    assert "ImagePullBackOff" in web.reason
    assert f"kubectl rollout undo deployment/web -n {namespace}" in web.reason
    assert (
        read(admin, namespace, "web")["spec"]["template"]["spec"]["containers"][0]["image"] == bad
    )


def test_unknown_deployment_or_container_changes_nothing(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    with pytest.raises(ConfigError) as caught:
        Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web,nope")(
            ref("web", "v2")
        )
    assert caught.value.problems[0].input == "deployments"
    assert "no Deployment 'nope'" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        Run(
            tmp_path,
            settings["KUBECONFIG"],
            namespace=namespace,
            deployments="web",
            container="side",
        )(ref("web", "v2"))
    assert caught.value.problems[0].input == "container"
    assert "(it has: app)" in caught.value.message
    after = read(admin, namespace, "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_redeploying_the_same_digest_makes_no_revision(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web")
    result = run(ref("web", "v1"))
    assert result.status == "succeeded"
    (web,) = result.deployments
    assert web.result == "succeeded"
    assert web.reason.startswith("already running")
    after = read(admin, namespace, "web")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert web.revision == 1


def test_two_deployments_one_failing_both_rolled_back(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    web = create_deployment(admin, namespace, "web", ref("web", "v1"))
    # No replicas: its rollout completes at once whatever the image, then must be undone.
    worker = create_deployment(admin, namespace, "worker", ref("web", "v1"), replicas=0)
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web,worker")
    result = run(ref("fail-pull-web", "bad"))
    assert result.status == "rolled-back", run.log
    by_name = {d.name: d for d in result.deployments}
    assert by_name["web"].result == "rolled-back"
    assert by_name["worker"].result == "rolled-back"
    assert "because web failed" in by_name["worker"].reason
    assert read(admin, namespace, "web")["spec"]["template"] == web["spec"]["template"]
    assert read(admin, namespace, "worker")["spec"]["template"] == worker["spec"]["template"]


def test_dry_run_changes_nothing(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(
        tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web", dry_run="true"
    )
    result = run(f"{REGISTRY}/web:v2")
    assert result.status == "planned"
    assert result.deployments[0].result == "planned"
    assert f"{ref('web', 'v1')} -> {REGISTRY}/web:v2" in run.log
    plan = summary(RunReport(status=result.status, rollout=result), redact=lambda text: text)
    assert "**Plan:** 0 to create, 1 to change, 0 unchanged." in plan
    assert "| `deployment/web` | `app` | `127.0.0.1:5000/web@sha256:" in plan
    after = read(admin, namespace, "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_manifests_are_applied_with_the_image_substituted(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "app.yaml").write_text(
        f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config}}
data: {{greeting: hello}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
      - name: api
        image: {REGISTRY}/web:latest
"""
    )
    new = ref("web", "v3")
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="k8s/*.yaml")
    result = run(new)
    assert result.status == "succeeded", run.log
    (api,) = result.deployments
    assert api.name == "api"
    assert api.previous_image == ""
    assert (
        read(admin, namespace, "api")["spec"]["template"]["spec"]["containers"][0]["image"] == new
    )
    config_map = k8s.CoreV1Api(admin).read_namespaced_config_map("web-config", namespace)
    assert config_map.data == {"greeting": "hello"}


@pytest.fixture
def restricted(admin: k8s.ApiClient, settings: dict[str, str]) -> Iterator[tuple[str, str]]:
    extra = need_service("TEST_KUBECONFIG_RESTRICTED")
    name = f"r-{uuid.uuid4().hex[:6]}"
    yield extra["TEST_KUBECONFIG_RESTRICTED"], name
    apps = k8s.AppsV1Api(admin)
    apps.delete_namespaced_deployment(name, settings["TEST_NAMESPACE"])


def test_restricted_credentials_are_enough_for_deployments(
    admin: k8s.ApiClient,
    settings: dict[str, str],
    tmp_path: Path,
    restricted: tuple[str, str],
) -> None:
    kubeconfig, name = restricted
    ns = settings["TEST_NAMESPACE"]
    create_deployment(admin, ns, name, ref("web", "v1"), replicas=1)
    run = Run(tmp_path, kubeconfig, namespace=ns, deployments=name)
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    bad = run(ref("fail-pull-web", "v2"))
    assert bad.status == "rolled-back", run.log


def test_restricted_credentials_refused_for_manifests_is_clear(
    admin: k8s.ApiClient,
    settings: dict[str, str],
    tmp_path: Path,
    restricted: tuple[str, str],
) -> None:
    kubeconfig, name = restricted
    ns = settings["TEST_NAMESPACE"]
    before = create_deployment(admin, ns, name, ref("web", "v1"), replicas=1)
    (tmp_path / "cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}-cm}}\ndata: {{a: b}}\n"
    )
    run = Run(tmp_path, kubeconfig, namespace=ns, deployments=name, manifests="cm.yaml")
    with pytest.raises(AccessDenied) as caught:
        run(ref("web", "v2"))
    assert caught.value.message.startswith(f"The credentials may not patch configmaps {name}-cm")
    assert f"in namespace {ns}" in caught.value.message
    after = read(admin, ns, name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_cancel_returns_quickly_with_each_deployments_state(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web")
    api, _ = connect(run.config)
    cancel = threading.Event()
    timer = threading.Timer(2.0, cancel.set)
    timer.start()
    started = time.monotonic()
    result = roll_out(run.config, ref("never-ready-web", "x"), api, run.io, cancel)
    assert time.monotonic() - started < 2.0 + 5.0
    assert result.status == "cancelled"
    (web,) = result.deployments
    assert web.result == "cancelled"
    assert "cancelled while waiting" in web.reason
    assert f"kubectl rollout undo deployment/web -n {namespace}" in web.reason
    assert not [t for t in threading.enumerate() if t.name.startswith("watch-")]


def test_cancel_during_the_rollback_says_the_rollback_was_not_finished(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    # Revision 1 never becomes Ready, so the rollback to it is still waiting when cancelled.
    create_deployment(admin, namespace, "web", ref("never-ready-web", "v1"), replicas=1, wait=False)
    run = Run(
        tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web", timeout="120s"
    )
    api, _ = connect(run.config)
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_once_rolling_back() -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end and "rolling back to revision" not in run.log:
            time.sleep(0.05)
        cancelled_at.append(time.monotonic())
        cancel.set()

    watcher = threading.Thread(target=cancel_once_rolling_back, daemon=True)
    watcher.start()
    try:
        result = roll_out(run.config, ref("fail-pull-web", "v2"), api, run.io, cancel)
    finally:
        api.close()
    watcher.join(5)
    assert "rolling back to revision" in run.log
    assert time.monotonic() - cancelled_at[0] < 5.0
    assert result.status == "cancelled"
    (web,) = result.deployments
    assert web.result == "cancelled"
    assert "roll" in web.reason and "back" in web.reason, web.reason
    live = read(admin, namespace, "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == ref(
        "never-ready-web", "v1"
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("watch-")]


# -- workload kinds -------------------------------------------------------------------------


def test_statefulset_rolls_out_and_a_crash_loop_goes_back_to_the_previous_revision(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_workload(admin, namespace, "statefulset", "db", ref("web", "v1"))
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, workloads="statefulset/db")
    good = run(ref("web", "v2"))
    assert good.status == "succeeded", run.log
    (db,) = good.deployments
    assert (db.kind, db.name, db.previous_image) == ("StatefulSet", "db", ref("web", "v1"))
    assert "statefulset/db: rolled out" in run.log
    rolled = read_workload(admin, namespace, "statefulset", "db")
    assert image_of(rolled) == ref("web", "v2")
    started = time.monotonic()
    bad = run(ref("crash-loop-web", "v3"))
    assert bad.status == "rolled-back", run.log
    assert time.monotonic() - started < 45
    (db,) = bad.deployments
    assert "CrashLoopBackOff" in db.reason and "rolled back" in db.reason
    after = read_workload(admin, namespace, "statefulset", "db")
    assert after["spec"]["template"] == rolled["spec"]["template"]
    assert after["status"]["readyReplicas"] == 2
    # kubectl's undo through the ControllerRevision, then the forced rollback of the
    # pod stuck on the failed revision (OrderedReady waits for it forever otherwise).
    assert "statefulset/db: rolling back to revision 2" in run.log
    assert "statefulset/db: deleting pod db-1, stuck on the failed revision" in run.log
    del before


def test_statefulset_partition_is_honoured(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    create_workload(
        admin,
        namespace,
        "statefulset",
        "db",
        ref("web", "v1"),
        replicas=3,
        updateStrategy=strategy,
    )
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, workloads="statefulset/db")
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    assert "partitioned roll out complete: 1 new pods have been updated" in run.log
    pods = k8s.CoreV1Api(admin).list_namespaced_pod(namespace, label_selector="app=db").items
    images = {p.metadata.name: p.spec.containers[0].image for p in pods}
    assert images == {"db-0": ref("web", "v1"), "db-1": ref("web", "v1"), "db-2": ref("web", "v2")}


def test_daemonset_rolls_out_and_a_failed_pull_is_rolled_back(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_workload(admin, namespace, "daemonset", "agent", ref("web", "v1"))
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, workloads="daemonset/agent")
    good = run(ref("web", "v2"))
    assert good.status == "succeeded", run.log
    assert 'daemon set "agent" successfully rolled out' in run.log
    rolled = read_workload(admin, namespace, "daemonset", "agent")
    bad = run(ref("crash-loop-agent", "v3"))
    assert bad.status == "rolled-back", run.log
    (agent,) = bad.deployments
    assert agent.kind == "DaemonSet" and "CrashLoopBackOff" in agent.reason
    after = read_workload(admin, namespace, "daemonset", "agent")
    assert after["spec"]["template"] == rolled["spec"]["template"]


# -- all or nothing, migrations ----------------------------------------------------------------

APP = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: {greeting}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
"""


def test_a_failed_run_leaves_every_applied_object_as_it_found_it(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"greeting": "hello"}}
    )
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    (tmp_path / "app.yaml").write_text(APP.format(greeting="bonjour", image=f"{REGISTRY}/web"))
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="app.yaml")
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    assert core.read_namespaced_config_map("settings", namespace).data == {"greeting": "hello"}
    with pytest.raises(k8s.ApiException) as gone:
        core.read_namespaced_service("web", namespace)
    assert gone.value.status == 404
    assert read(admin, namespace, "web")["spec"]["template"] == before["spec"]["template"]
    assert f"ConfigMap settings in {namespace}: restored" in "\n".join(result.restored)
    assert f"Service web in {namespace}: deleted (created by this run)" in result.restored
    text = summary(RunReport(status=result.status, rollout=result), redact=lambda text: text)
    assert f"- `Service web in {namespace}: deleted (created by this run)`" in text


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: migrate, image: "{image}"}}]
"""


def test_a_migration_job_runs_before_the_workloads_and_is_replaced_next_release(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    (tmp_path / "job.yaml").write_text(JOB.format(image=f"{REGISTRY}/web"))
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        manifests="job.yaml",
    )
    first = run(ref("web", "v2"))
    assert first.status == "succeeded", run.log
    assert run.log.index("Job migrate: completed") < run.log.index("deployment/web: updated")
    assert [d.kind for d in first.deployments] == ["Job", "Deployment"]
    second = run(ref("web", "v3"))  # a changed template: immutable, so the Job is replaced
    assert second.status == "succeeded", run.log
    job = k8s.BatchV1Api(admin).read_namespaced_job("migrate", namespace)
    assert job.spec.template.spec.containers[0].image == ref("web", "v3")


def test_a_failed_migration_stops_the_run_before_anything_else_changes(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    (tmp_path / "job.yaml").write_text(
        JOB.format(image=f"{REGISTRY}/web")
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata: {a: b}\n"
    )
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        manifests="job.yaml",
    )
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "failed", run.log
    job, web = result.deployments
    assert (job.kind, job.result) == ("Job", "failed")
    assert "Job migrate failed: pod migrate-" in job.reason and "CrashLoopBackOff" in job.reason
    assert "Events:" in job.diagnosis
    assert (web.result, web.reason) == ("failed", "not changed: Job migrate failed")
    after = read(admin, namespace, "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    with pytest.raises(k8s.ApiException):  # applied before the Job, removed again
        k8s.CoreV1Api(admin).read_namespaced_config_map("flags", namespace)


# -- fail-fast accuracy ---------------------------------------------------------------------------


def test_a_missing_service_account_fails_fast_naming_it(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    # Pods of the running revision use ServiceAccount robot; then someone deletes it,
    # so the next revision's pods cannot be created (FailedCreate on the new ReplicaSet).
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    k8s.AppsV1Api(admin).patch_namespaced_deployment(
        "web", namespace, {"spec": {"template": {"spec": {"serviceAccountName": "robot"}}}}
    )
    wait_complete(admin, namespace, "web")
    before = read(admin, namespace, "web")
    core.delete_namespaced_service_account("robot", namespace)
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web")
    started = time.monotonic()
    result = run(ref("web", "v2"))
    took = time.monotonic() - started
    assert result.status == "rolled-back", run.log
    (web,) = result.deployments
    assert 'serviceaccount "robot" not found' in web.reason
    assert took < 30, f"took {took:.0f} s"
    assert "ReplicaSet web-" in web.diagnosis and "FailedCreate" in web.diagnosis
    assert read(admin, namespace, "web")["spec"]["template"] == before["spec"]["template"]


def test_an_unschedulable_pod_that_gets_a_node_after_60_s_succeeds(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=1)
    node = f"kwok-extra-{namespace[-8:]}"
    k8s.AppsV1Api(admin).patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "nodeSelector": {"deployer-test/pool": node},
                        "tolerations": [{"key": "deployer-test/extra", "operator": "Exists"}],
                    }
                }
            }
        },
    )
    run = Run(
        tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web", timeout="180s"
    )

    def add_node() -> None:
        time.sleep(60)
        k8s.CoreV1Api(admin).create_node(
            {
                "metadata": {
                    "name": node,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"type": "kwok", "deployer-test/pool": node},
                },
                "spec": {
                    "taints": [{"key": "deployer-test/extra", "value": "x", "effect": "NoSchedule"}]
                },
            }
        )

    adder = threading.Thread(target=add_node, daemon=True)
    adder.start()
    try:
        result = run(ref("web", "v2"))
    finally:
        adder.join(70)
        with contextlib.suppress(k8s.ApiException):
            k8s.CoreV1Api(admin).delete_node(node)
    assert result.status == "succeeded", run.log
    assert "Unschedulable" not in result.deployments[0].reason


TWO = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  revisionHistoryLimit: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: app, image: "{REGISTRY}/web"}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 1
  revisionHistoryLimit: 0
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
      - {{name: app, image: "{REGISTRY}/web"}}
      - {{name: side, image: "{side}"}}
"""


def test_revision_history_limit_zero_keeps_all_or_nothing(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    apps = k8s.AppsV1Api(admin)
    for name in ("web", "api"):
        create_deployment(admin, namespace, name, ref("web", "v1"), replicas=1)
        apps.patch_namespaced_deployment(name, namespace, {"spec": {"revisionHistoryLimit": 0}})
    # web completes first and, with no history kept, loses its old ReplicaSet; api's new
    # sidecar crash-loops, so both must end on what the run found.
    side = ref("crash-loop-side", "v1")
    (tmp_path / "two.yaml").write_text(TWO.format(REGISTRY=REGISTRY, side=side))
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="two.yaml")
    result = run(ref("web", "v2"))
    assert result.status == "rolled-back", run.log
    assert "deployment/web: rolled out" in run.log
    assert "deployment/web: rolling back to the template as the run found it" in run.log
    for name in ("web", "api"):
        after = read(admin, namespace, name)
        images = [c["image"] for c in after["spec"]["template"]["spec"]["containers"]]
        assert images == [ref("web", "v1")], name


def test_a_rollout_restart_during_a_failing_rollout_is_undone_to_the_pre_run_image(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(
        tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web", timeout="30s"
    )

    def restart() -> None:  # what kubectl rollout restart sends
        end = time.monotonic() + 20
        while time.monotonic() < end and "deployment/web: updated" not in run.log:
            time.sleep(0.05)
        k8s.AppsV1Api(admin).patch_namespaced_deployment(
            "web",
            namespace,
            {
                "spec": {
                    "template": {
                        "metadata": {
                            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01"}
                        }
                    }
                }
            },
        )

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    result = run(ref("never-ready-web", "v2"))
    restarter.join(5)
    assert result.status == "rolled-back", run.log
    after = read(admin, namespace, "web")
    assert after["spec"]["template"] == before["spec"]["template"]


def test_manifests_may_create_the_namespace_their_objects_live_in(
    admin: k8s.ApiClient, settings: dict[str, str], tmp_path: Path
) -> None:  # fix 10: the preflight dry-run failed on the not-yet-existing namespace
    fresh = f"made-{uuid.uuid4().hex[:6]}"
    (tmp_path / "ns.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: {fresh}}}\n"
        f"data: {{a: b}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {fresh}}}\n"
    )
    # allow-cluster-scoped: the Namespace is cluster-scoped (an input of the "harden" branch).
    run = Run(tmp_path, settings["KUBECONFIG"], manifests="ns.yaml", allow_cluster_scoped="true")
    try:
        result = run(ref("web", "v1"))
        assert result.status == "succeeded", run.log
        cm = k8s.CoreV1Api(admin).read_namespaced_config_map("cfg", fresh)
        assert cm.data == {"a": "b"}
    finally:
        with contextlib.suppress(k8s.ApiException):
            k8s.CoreV1Api(admin).delete_namespace(fresh)


def test_tolerating_failures_waits_for_the_deadline_and_says_why(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=1)
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        timeout="24s",
        tolerate_failures_until_deadline="true",
    )
    started = time.monotonic()
    result = run(ref("crash-loop-web", "v2"))
    took = time.monotonic() - started
    assert result.status == "rolled-back", run.log
    (web,) = result.deployments
    # The forward wait is the timeout minus the rollback's reserve (a quarter): 18 s.
    assert took >= 17, f"failed fast after {took:.1f} s despite the input"
    assert web.reason.startswith("not complete after 18 s"), web.reason
    assert "CrashLoopBackOff" in web.reason


def test_the_restricted_role_is_enough_for_a_statefulset_and_its_forced_rollback(
    admin: k8s.ApiClient, settings: dict[str, str], tmp_path: Path
) -> None:
    kubeconfig = need_service("TEST_KUBECONFIG_RESTRICTED")["TEST_KUBECONFIG_RESTRICTED"]
    ns, name = settings["TEST_NAMESPACE"], f"s-{uuid.uuid4().hex[:6]}"
    create_workload(admin, ns, "statefulset", name, ref("web", "v1"), replicas=1)
    try:
        run = Run(tmp_path, kubeconfig, namespace=ns, workloads=f"statefulset/{name}")
        assert run(ref("web", "v2")).status == "succeeded", run.log
        bad = run(ref("crash-loop-web", "v3"))
        assert bad.status == "rolled-back", run.log
        assert "Rollback may stall" not in run.log
        assert image_of(read_workload(admin, ns, "statefulset", name)) == ref("web", "v2")
    finally:
        k8s.AppsV1Api(admin).delete_namespaced_stateful_set(name, ns)
