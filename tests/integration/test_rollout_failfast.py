"""Fail-fast accuracy on the real control plane (issue 16, items 8-10), and the fake's fidelity.

- A StatefulSet template change that keeps the digest is forced back: the pod stuck
  on the failed revision is told apart by ``controller-revision-hash``, not image.
- A ReplicaFailure masked by an earlier one (the Deployment's condition keeps the
  old message) fails fast, naming the new ReplicaSet's own cause.
- ``maxSurge: 0`` at a ResourceQuota, old pods terminating for a while: the
  FailedCreate while they go is waited out and the rollout succeeds. KWOK deletes
  pods at once, so these pods run on a node of their own whose kubelet is this
  test (:class:`ScriptedNode`: Ready pods, a graceful stop that takes
  ``stop_seconds``, its heartbeat); the apiserver's quota admission,
  the quota, ReplicaSet and Deployment controllers are the real ones.
- The same rollout on the real cluster and on ``tests.fakecluster`` gives the same
  shape of objects (status fields, conditions, annotations, labels, events).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.helpers import (
    REGISTRY,
    Run,
    admin,
    create_deployment,
    create_workload,
    namespace,
    read,
    read_workload,
    ref,
    settings,
    wait_complete,
)
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration
__all__ = ["admin", "namespace", "settings"]  # fixtures used here


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


# -- item 8 -----------------------------------------------------------------------------------------

SAME_DIGEST = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  replicas: 2
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      nodeSelector: {{deployer-test/pool: nowhere}}
      containers: [{{name: app, image: "{REGISTRY}/web"}}]
"""


def test_a_same_digest_statefulset_change_is_forced_back(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    image = ref("web", "v1")
    before = create_workload(admin, namespace, "statefulset", "db", image)
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "db.yaml").write_text(SAME_DIGEST.format(REGISTRY=REGISTRY))
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        manifests="k8s/*.yaml",
        timeout="40s",
    )
    result = run(image)  # the digest already running: only the nodeSelector changes
    assert result.status == "rolled-back", run.log
    (db,) = result.deployments
    assert "rolled back" in db.reason, db.reason
    assert "statefulset/db: deleting pod db-1, stuck on the failed revision" in run.log
    after = read_workload(admin, namespace, "statefulset", "db")
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["status"]["readyReplicas"] == 2
    assert after["status"]["currentRevision"] == before["status"]["currentRevision"]


# -- item 9 -----------------------------------------------------------------------------------------


def test_a_replica_failure_masked_by_an_earlier_one_fails_fast(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "2"}}}
    )
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    wait_until(
        lambda: core.read_namespaced_resource_quota("pods", namespace).status.hard or None,
        30,
        "the quota's status",
    )
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,  # one more than the quota: a ReplicaFailure that stays
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "serviceAccountName": "robot",
                    "containers": [{"name": "app", "image": ref("web", "v1")}],
                },
            },
        },
    }
    apps.create_namespaced_deployment(namespace, body)

    def quota_failure() -> str:
        found = conditions(read(admin, namespace, "web")).get("ReplicaFailure") or {}
        return str(found.get("message") or "")

    masked = wait_until(lambda: "exceeded quota" in quota_failure() and quota_failure(), 60, "it")
    core.delete_namespaced_service_account("robot", namespace)
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        rollback_on_failure="false",
    )
    started = time.monotonic()
    result = run(ref("web", "v2"))
    took = time.monotonic() - started
    assert result.status == "failed", run.log
    (web,) = result.deployments
    assert 'serviceaccount "robot" not found' in web.reason, web.reason
    assert took < 45, f"took {took:.0f} s"
    # The trap: the Deployment's own condition still says what it said before.
    assert quota_failure() == masked


# -- item 10 ----------------------------------------------------------------------------------------


class ScriptedNode:
    """A node this test is the kubelet of: KWOK leaves it alone (no kwok annotation).

    Pods bound to it become Running and Ready at once; a pod being deleted stops
    ``stop_seconds`` after its deletion started (its grace is longer), then the
    kubelet's final delete (grace 0). Its Ready condition is refreshed every 5 s so
    the node lifecycle controller keeps it Ready. Tainted: only pods that tolerate
    ``deployer-test/scripted`` land here.
    """

    def __init__(self, api: k8s.ApiClient, name: str, stop_seconds: float) -> None:
        self.core = k8s.CoreV1Api(api)
        self.name, self.stop_seconds = name, stop_seconds
        self.stopping: dict[str, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"kubelet-{name}")

    def __enter__(self) -> ScriptedNode:
        self.core.create_node(
            {
                "metadata": {"name": self.name, "labels": {"deployer-test/pool": self.name}},
                "spec": {
                    "taints": [
                        {"key": "deployer-test/scripted", "value": "x", "effect": "NoSchedule"}
                    ]
                },
            }
        )
        self._heartbeat()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for pod in self._pods():
            with contextlib.suppress(k8s.ApiException):
                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
        self.done.set()
        self.thread.join(10)
        with contextlib.suppress(k8s.ApiException):
            self.core.delete_node(self.name)

    def _heartbeat(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "status": {
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "scripted by the test",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        }
        self.core.patch_node_status(self.name, status)

    def _pods(self) -> list[Any]:
        listing = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}")
        return list(listing.items)

    def _run(self) -> None:
        beat = time.monotonic()
        while not self.done.wait(0.2):
            if time.monotonic() - beat > 5:
                self._heartbeat()
                beat = time.monotonic()
            for pod in self._pods():
                with contextlib.suppress(k8s.ApiException):
                    self._tend(pod)

    def _tend(self, pod: Any) -> None:
        m = pod.metadata
        if m.deletion_timestamp is not None:
            first = self.stopping.setdefault(m.uid, time.monotonic())
            if time.monotonic() - first >= self.stop_seconds:
                self.core.delete_namespaced_pod(m.name, m.namespace, grace_period_seconds=0)
            return
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        names = [c.name for c in pod.spec.containers]
        status = {
            "status": {
                "phase": "Running",
                "hostIP": "10.0.0.9",
                "podIP": "10.244.9.9",
                "startTime": now,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in (
                        "Initialized",
                        "Ready",
                        "ContainersReady",
                        "PodReadyToStartContainers",
                    )
                ],
                "containerStatuses": [
                    {
                        "name": n,
                        "image": next(c.image for c in pod.spec.containers if c.name == n),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                    for n in names
                ],
            }
        }
        self.core.patch_namespaced_pod_status(m.name, m.namespace, status)


def test_quota_failed_creates_while_old_pods_terminate_are_waited_out(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    node = f"scripted-{uuid.uuid4().hex[:8]}"
    with ScriptedNode(admin, node, stop_seconds=12):
        body = {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
                },
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "nodeSelector": {"deployer-test/pool": node},
                        "tolerations": [{"key": "deployer-test/scripted", "operator": "Exists"}],
                        "terminationGracePeriodSeconds": 30,
                        "containers": [{"name": "app", "image": ref("web", "v1")}],
                    },
                },
            },
        }
        apps.create_namespaced_deployment(namespace, body)
        wait_complete(admin, namespace, "web")
        core.create_namespaced_resource_quota(
            namespace, {"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "2"}}}
        )
        wait_until(
            lambda: core.read_namespaced_resource_quota("pods", namespace).status.used or None,
            30,
            "the quota's usage",
        )
        run = Run(
            tmp_path, settings["KUBECONFIG"], namespace=namespace, deployments="web", timeout="150s"
        )
        result = run(ref("web", "v2"))
        events = core.list_namespaced_event(namespace).items
        apps.delete_namespaced_deployment("web", namespace)
    assert result.status == "succeeded", run.log
    quota_refusals = [
        e for e in events if e.reason == "FailedCreate" and "exceeded quota" in e.message
    ]
    assert quota_refusals, "the old pods' termination never held the quota: the test proves nothing"


# -- the fake cluster against the real one ------------------------------------------------------------


def shape(value: Any) -> Any:
    """Keys and types, not values: what two clusters agree on when their timing differs."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in ("managedFields",)}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def _scenario_real(admin: k8s.ApiClient, ns: str) -> dict[str, Any]:
    create_deployment(admin, ns, "web", ref("web", "v1"), replicas=2)
    k8s.AppsV1Api(admin).patch_namespaced_deployment(
        "web",
        ns,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": ref("web", "v2")}]}}
            }
        },
    )
    wait_complete(admin, ns, "web")
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    sanitize = admin.sanitize_for_serialization
    rs = [sanitize(r) for r in apps.list_namespaced_replica_set(ns).items]
    events = [sanitize(e) for e in core.list_namespaced_event(ns).items]
    pods = [
        sanitize(p) for p in core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp
    ]
    return {"deployment": read(admin, ns, "web"), "replicasets": rs, "pods": pods, "events": events}


def _scenario_fake() -> dict[str, Any]:
    from tests.fakecluster import FakeCluster, deployment, rolled_out

    cluster = FakeCluster()
    cluster.create(deployment("web", ref("web", "v1"), replicas=2))
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 30)
    cluster.patch(
        "Deployment",
        "web",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": ref("web", "v2")}]}}
            }
        },
    )
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 60)
    cluster.run(5)
    return {
        "deployment": cluster.get("Deployment", "web"),
        "replicasets": cluster.list("ReplicaSet"),
        "pods": cluster.list("Pod"),
        "events": cluster.list("Event"),
    }


def test_the_fake_cluster_gives_the_real_shape_of_a_rollout(
    admin: k8s.ApiClient, namespace: str
) -> None:
    real, fake = _scenario_real(admin, namespace), _scenario_fake()
    d_real, d_fake = real["deployment"], fake["deployment"]
    assert shape(d_fake["status"]) == shape(d_real["status"])
    assert {k: (v["status"], v["reason"]) for k, v in conditions(d_fake).items()} == {
        k: (v["status"], v["reason"]) for k, v in conditions(d_real).items()
    }
    assert d_fake["metadata"]["annotations"].keys() == d_real["metadata"]["annotations"].keys()
    assert d_fake["metadata"]["generation"] == d_real["metadata"]["generation"] == 2

    def by_revision(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {i["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: i for i in items}

    rs_real, rs_fake = by_revision(real["replicasets"]), by_revision(fake["replicasets"])
    assert rs_real.keys() == rs_fake.keys() == {"1", "2"}
    for revision in ("1", "2"):
        a, b = rs_real[revision], rs_fake[revision]
        assert (a["spec"]["replicas"], b["spec"]["replicas"]) == (
            (0, 0) if revision == "1" else (2, 2)
        )
        assert a["metadata"]["annotations"].keys() == b["metadata"]["annotations"].keys()
        assert a["metadata"]["labels"].keys() == b["metadata"]["labels"].keys()
        assert shape(a["status"]) == shape(b["status"])
    assert {
        p["metadata"]["labels"].keys() == {"app", "pod-template-hash"}
        for p in real["pods"] + fake["pods"]
    } == {True}
    pod_real, pod_fake = real["pods"][0], fake["pods"][0]
    assert pod_real["spec"].keys() <= pod_fake["spec"].keys() | {"enableServiceLinks", "nodeName"}
    assert {c["type"] for c in pod_real["status"]["conditions"]} <= {
        c["type"] for c in pod_fake["status"]["conditions"]
    }

    def reasons(events: list[dict[str, Any]], kind: str) -> set[str]:
        return {e["reason"] for e in events if e["involvedObject"]["kind"] == kind}

    assert reasons(fake["events"], "Deployment") == reasons(real["events"], "Deployment")
    assert reasons(fake["events"], "ReplicaSet") == reasons(real["events"], "ReplicaSet")
