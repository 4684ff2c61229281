"""Issue 16 on the real control plane: the cluster is left as the run found it.

Under failure (config restored before the undo, manifest fields restored, a
migration that never finishes), for migrations (re-run, TTL 0), under SIGINT, and
with two runs at once or a killed run. Each test has its own namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from tests.conftest import ROOT
from tests.helpers import REGISTRY, Run, create_deployment, read, ref, wait_complete
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

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
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: "{REGISTRY}/web"
        envFrom: [{{configMapRef: {{name: settings}}}}]
"""


def _existing_app(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    """The release before the run: ConfigMap greeting=hello, Deployment web on v1 reading it."""
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"greeting": "hello"}}
    )
    return create_deployment(
        admin,
        namespace,
        "web",
        ref("web", "v1"),
        containers=[
            {
                "name": "app",
                "image": ref("web", "v1"),
                "envFrom": [{"configMapRef": {"name": "settings"}}],
            }
        ],
    )


def _write_app(tmp_path: Path, greeting: str = "bonjour", replicas: int = 2) -> None:
    text = APP.format(greeting=greeting, replicas=replicas, REGISTRY=REGISTRY)
    (tmp_path / "app.yaml").write_text(text)


class _Recorder(threading.Thread):
    """Watches one collection and records (resourceVersion, type, object) of each event."""

    def __init__(self, admin: k8s.ApiClient, lister: Any, namespace: str) -> None:
        super().__init__(daemon=True)
        self.admin, self.lister, self.namespace = admin, lister, namespace
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.watch = k8s_watch.Watch()

    def run(self) -> None:
        try:
            for event in self.watch.stream(self.lister, self.namespace, timeout_seconds=120):
                obj = self.admin.sanitize_for_serialization(event["object"])
                self.events.append((int(obj["metadata"]["resourceVersion"]), event["type"], obj))
        except Exception:  # the stream ends when stop() closes it
            return

    def stop(self) -> None:
        self.watch.stop()


def test_config_is_restored_before_the_undo_recreates_pods(
    kube_admin: k8s.ApiClient, fresh_namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    """Pods the undo re-creates read env at start: the ConfigMap must be back first.

    On one apiserver resourceVersions are etcd revisions, so they order the events
    of the ConfigMap and of the pods.
    """
    ns = fresh_namespace
    _existing_app(kube_admin, ns)
    # One old pod at a time is replaced by a new one, so the undo has pods to re-create.
    strategy = {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    k8s.AppsV1Api(kube_admin).patch_namespaced_deployment(
        "web", ns, {"spec": {"strategy": strategy}}
    )
    wait_complete(kube_admin, ns, "web")
    before = read(kube_admin, ns, "web")
    core = k8s.CoreV1Api(kube_admin)
    pods = _Recorder(kube_admin, core.list_namespaced_pod, ns)
    maps = _Recorder(kube_admin, core.list_namespaced_config_map, ns)
    pods.start(), maps.start()
    time.sleep(1.0)  # both watches established before the run starts
    existing = {p.metadata.name for p in core.list_namespaced_pod(ns).items}
    _write_app(tmp_path)
    run = Run(tmp_path, kubeconfig, namespace=ns, manifests="app.yaml")
    result = run(ref("crash-loop-web", "v2"))
    time.sleep(1.0)
    pods.stop(), maps.stop()
    assert result.status == "rolled-back", run.log
    assert core.read_namespaced_config_map("settings", ns).data == {"greeting": "hello"}
    assert read(kube_admin, ns, "web")["spec"]["template"] == before["spec"]["template"]
    restored_at = min(
        rv
        for rv, kind, obj in maps.events
        if kind == "MODIFIED" and obj.get("data") == {"greeting": "hello"}
    )
    v1 = ref("web", "v1")
    undo_pods = [
        rv
        for rv, kind, obj in pods.events
        if kind == "ADDED"
        and obj["spec"]["containers"][0]["image"] == v1
        and obj["metadata"]["name"] not in existing
    ]
    assert undo_pods, "the undo re-created no pod of the first release"
    assert min(undo_pods) > restored_at, (restored_at, undo_pods, run.log)
    assert run.log.index("ConfigMap settings") < run.log.index("rolling back to")


def test_manifest_fields_are_restored_not_only_the_template(
    kube_admin: k8s.ApiClient, fresh_namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    ns = fresh_namespace
    before = _existing_app(kube_admin, ns)
    _write_app(tmp_path, replicas=4)
    run = Run(tmp_path, kubeconfig, namespace=ns, manifests="app.yaml")
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    after = read(kube_admin, ns, "web")
    assert after["spec"]["replicas"] == 2, run.log
    assert after["spec"]["template"] == before["spec"]["template"]
    assert any("spec.replicas restored" in line for line in result.restored), result.restored


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate}}
spec:
  backoffLimit: 0
  {extra}
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: migrate, image: "{REGISTRY}/web"}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: flags}}
data: {{a: b}}
"""


def _write_job(tmp_path: Path, extra: str = "") -> None:
    (tmp_path / "job.yaml").write_text(JOB.format(extra=extra, REGISTRY=REGISTRY))


def test_a_migration_that_never_finishes_leaves_time_to_restore(
    kube_admin: k8s.ApiClient, fresh_namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    ns = fresh_namespace
    create_deployment(kube_admin, ns, "web", ref("web", "v1"))
    _write_job(tmp_path)
    run = Run(
        tmp_path, kubeconfig, namespace=ns, deployments="web", manifests="job.yaml", timeout="40s"
    )
    started = time.monotonic()
    result = run(ref("never-ready-web", "v2"))  # the Job's pod runs, never completes
    took = time.monotonic() - started
    assert result.status == "failed", run.log
    job = result.deployments[0]
    assert (job.kind, job.result) == ("Job", "failed")
    assert "not complete after 30 s" in job.reason, job.reason  # 40 s less the reserve
    assert f"ConfigMap flags in {ns}: deleted (created by this run)" in result.restored
    with pytest.raises(k8s.ApiException):
        k8s.CoreV1Api(kube_admin).read_namespaced_config_map("flags", ns)
    assert took < 45


def test_a_rerun_runs_a_failed_migration_again(
    kube_admin: k8s.ApiClient, fresh_namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    """The first run's Job fails for a reason outside it (a quota); the re-run runs it again."""
    ns = fresh_namespace
    core, batch = k8s.CoreV1Api(kube_admin), k8s.BatchV1Api(kube_admin)
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    create_deployment(kube_admin, ns, "web", ref("web", "v1"), wait=False, replicas=0)
    _write_job(tmp_path, extra="activeDeadlineSeconds: 5")
    run = Run(
        tmp_path, kubeconfig, namespace=ns, deployments="web", manifests="job.yaml", timeout="60s"
    )
    image = ref("web", "v2")
    first = run(image)
    assert first.status == "failed", run.log
    failed_uid = batch.read_namespaced_job("migrate", ns).metadata.uid
    core.delete_namespaced_resource_quota("no-pods", ns)
    second = run(image)  # the same digest, the same manifest
    assert second.status == "succeeded", run.log
    job = batch.read_namespaced_job("migrate", ns)
    assert job.metadata.uid != failed_uid
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
    assert "replacing the one of an earlier run" in run.log


def test_a_job_deleted_right_after_it_completed_ttl_0_is_a_success(
    kube_admin: k8s.ApiClient, fresh_namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    ns = fresh_namespace
    create_deployment(kube_admin, ns, "web", ref("web", "v1"))
    _write_job(tmp_path, extra="ttlSecondsAfterFinished: 0")
    run = Run(tmp_path, kubeconfig, namespace=ns, deployments="web", manifests="job.yaml")
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    assert [d.result for d in result.deployments] == ["succeeded", "succeeded"]

    def gone() -> bool:
        try:
            k8s.BatchV1Api(kube_admin).read_namespaced_job("migrate", ns)
        except k8s.ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, 30, "the TTL controller deleting the Job")


# -- cancel and a killed runner, in a process of their own -----------------------------------


def _child(
    kubeconfig: str, namespace: str, image: str, run_id: str, **inputs: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "INPUT_IMAGE": f"{REGISTRY}/web",
        "INPUT_BUILD": "false",
        "INPUT_NAMESPACE": namespace,
        "INPUT_TIMEOUT": "120s",
        "GITHUB_WORKSPACE": inputs.pop("workspace"),
        "GITHUB_REPOSITORY": "acme/web",
        "GITHUB_RUN_ID": run_id,
        "GITHUB_RUN_ATTEMPT": "1",
        "KUBECONFIG": kubeconfig,
        "PYTHONPATH": str(ROOT),
    }
    for key, value in inputs.items():
        env["INPUT_" + key.upper().replace("_", "-")] = value
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.rollout_child", image],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


class _Lines(threading.Thread):
    """Reads a child's output; ``wait_for`` a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc, self.lines = proc, []  # type: ignore[var-annotated]

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        wait_until(lambda: any(text in line for line in self.lines), timeout, repr(text))

    @property
    def text(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigint_mid_wait_puts_everything_back_within_5_s(
    kube_admin: k8s.ApiClient,
    fresh_namespace: str,
    kubeconfig: str,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    ns = fresh_namespace
    before = _existing_app(kube_admin, ns)
    _write_app(tmp_path)
    proc = _child(
        kubeconfig, ns, ref("never-ready-web", "v2"), "7001",
        workspace=str(tmp_path), manifests="app.yaml",
    )  # fmt: skip
    children.append(proc)
    out = _Lines(proc)
    out.start()
    out.wait_for("deployment/web: updated", 60)
    core = k8s.CoreV1Api(kube_admin)
    assert core.read_namespaced_config_map("settings", ns).data == {"greeting": "bonjour"}
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)

    def put_back() -> bool:
        template = read(kube_admin, ns, "web")["spec"]["template"]
        data = core.read_namespaced_config_map("settings", ns).data
        return template == before["spec"]["template"] and data == {"greeting": "hello"}

    wait_until(put_back, 5.0, "the ConfigMap and the Deployment put back", interval=0.05)
    took = time.monotonic() - signalled
    proc.wait(10)
    out.join(5)
    assert took <= 5.0
    result = json.loads(out.lines[-1])
    assert result["status"] == "cancelled", out.text
    (web,) = result["workloads"]
    assert web["result"] == "cancelled"
    assert "put back to revision" in web["reason"], web["reason"]
    assert (
        f"ConfigMap settings in {ns}: restored to what it was before the run"
        in (result["restored"])
    )
    print(f"SIGINT -> everything put back in {took:.2f} s")


def test_a_second_run_waits_for_the_first_and_names_it(
    kube_admin: k8s.ApiClient, fresh_namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    ns = fresh_namespace
    create_deployment(kube_admin, ns, "web", ref("web", "v1"), replicas=3)
    k8s.AppsV1Api(kube_admin).patch_namespaced_deployment(
        "web",
        ns,
        {
            "spec": {
                "minReadySeconds": 3,
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            }
        },
    )
    wait_complete(kube_admin, ns, "web")
    first = Run(
        tmp_path, kubeconfig, environ={"GITHUB_RUN_ID": "101"}, namespace=ns, deployments="web"
    )
    second = Run(
        tmp_path, kubeconfig, environ={"GITHUB_RUN_ID": "102"}, namespace=ns, deployments="web"
    )
    results: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: results.update(first=first(ref("web", "v2"))))
    runner.start()
    wait_until(lambda: "deployment/web: updated" in first.log, 30, "the first run's change")
    results["second"] = second(ref("web", "v3"))
    runner.join(60)
    assert results["first"].status == "succeeded", first.log
    assert results["second"].status == "succeeded", second.log
    holder = "https://github.com/acme/web/actions/runs/101"
    assert f"Waiting for namespace {ns}: {holder}" in second.log
    assert second.log.index("Waiting for namespace") < second.log.index("deployment/web: updated")
    assert read(kube_admin, ns, "web")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        ref("web", "v3")
    )


def test_a_run_after_a_killed_run_says_which_run_was_interrupted(
    kube_admin: k8s.ApiClient,
    fresh_namespace: str,
    kubeconfig: str,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    ns = fresh_namespace
    create_deployment(kube_admin, ns, "web", ref("web", "v1"))
    proc = _child(
        kubeconfig, ns, ref("never-ready-web", "v2"), "7002",
        workspace=str(tmp_path), deployments="web",
    )  # fmt: skip
    children.append(proc)
    out = _Lines(proc)
    out.start()
    out.wait_for("deployment/web: updated", 60)
    proc.kill()  # SIGKILL: no handler, no release, nothing put back
    proc.wait(10)
    killed_at = time.monotonic()
    run = Run(
        tmp_path, kubeconfig, environ={"GITHUB_RUN_ID": "7003"}, namespace=ns, deployments="web"
    )
    result = run(ref("web", "v3"))
    assert result.status == "succeeded", run.log
    assert time.monotonic() - killed_at <= 30 + 20  # the lease expired, then the rollout
    holder = "https://github.com/acme/web/actions/runs/7002/attempts/1"
    (note,) = result.notes
    assert holder in note and "was interrupted" in note
    assert "deployment/web" in note and ref("never-ready-web", "v2") in note
    assert "An earlier deploy was interrupted" in run.log
