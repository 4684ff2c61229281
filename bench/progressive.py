"""Argo Rollouts against the test control plane: how fast a failed analysis is reported.

Detection latency of a failed analysis: from the moment the Rollout's status says
Degraded (Argo aborted after its AnalysisRun failed; seen by an independent admin
watch) to our ``::error`` line for it, which comes after the diagnosis is read (the
AnalysisRun, the Job's pod, its events and log). Target <= 1 s, absolute: the peer,
``kubectl argo rollouts status``, is not built in the test environment (only the
controller is), and it prints no reason beyond the Rollout's message anyway.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes import watch

from bench.common import Figure
from bench.rollout import _ref, _Verdict
from deployer.actions import ActionsIO
from deployer.cluster import connect
from deployer.config import load_config
from deployer.rollout import roll_out
from tests.conftest import read_testenv

REGISTRY = "127.0.0.1:5000"
REPEAT = 3
ARGO = ("argoproj.io", "v1alpha1")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    pod = {
        "restartPolicy": "Never",
        "containers": [{"name": "check", "image": f"{REGISTRY}/progressive/job-fail-check:1"}],
    }
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "check"},
        "spec": {
            "metrics": [
                {
                    "name": "check",
                    "provider": {"job": {"spec": {"backoffLimit": 0, "template": {"spec": pod}}}},
                }
            ]
        },
    }
    labels = {"app": "web"}
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": _ref("web", "start")}]},
            },
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 50},
                        {"analysis": {"templates": [{"templateName": "check"}]}},
                    ]
                }
            },
        },
    }
    return [("analysistemplates", template), ("rollouts", rollout)]


class _DegradedWatch(threading.Thread):
    """Records when the Rollout first says Degraded for the template with ``image``."""

    def __init__(self, kubeconfig: str, namespace: str, image: str) -> None:
        super().__init__(daemon=True)
        self.kubeconfig, self.namespace, self.image = kubeconfig, namespace, image
        self.at: float | None = None
        self.started = threading.Event()

    def run(self) -> None:
        client = kube_config.new_client_from_config(config_file=self.kubeconfig)
        api = k8s.CustomObjectsApi(client)
        w = watch.Watch()
        self.started.set()
        for event in w.stream(
            api.list_namespaced_custom_object,
            *ARGO,
            self.namespace,
            "rollouts",
            timeout_seconds=120,
        ):
            ro = event["object"]
            status = ro.get("status") or {}
            image = ro["spec"]["template"]["spec"]["containers"][0]["image"]
            observed = status.get("observedGeneration") == str(ro["metadata"]["generation"])
            if image == self.image and observed and status.get("phase") == "Degraded":
                self.at = time.monotonic()
                w.stop()
                break
        client.close()


def _healthy(api: k8s.CustomObjectsApi, namespace: str) -> bool:
    ro = api.get_namespaced_custom_object(*ARGO, namespace, "rollouts", "web")
    status = ro.get("status") or {}
    return bool(
        status.get("phase") == "Healthy"
        and status.get("observedGeneration") == str(ro["metadata"]["generation"])
        and status.get("stableRS") == status.get("currentPodHash")
    )


def _round(kubeconfig: str, namespace: str, n: int) -> tuple[float, str]:
    image = _ref("web", f"analysis-fails-{n}")
    config = load_config(
        {
            "INPUT_IMAGE": f"{REGISTRY}/web",
            "INPUT_BUILD": "false",
            "INPUT_NAMESPACE": namespace,
            "INPUT_WORKLOADS": "rollout/web",
            "INPUT_TIMEOUT": "120s",
            "GITHUB_WORKSPACE": tempfile.gettempdir(),
            "KUBECONFIG": kubeconfig,
        }
    )
    degraded = _DegradedWatch(kubeconfig, namespace, image)
    degraded.start()
    degraded.started.wait(10)
    out = _Verdict("::error title=Rollout of web failed::")
    api, _ = connect(config)
    try:
        result = roll_out(config, image, api, ActionsIO(out, {}), threading.Event())
    finally:
        api.close()
    degraded.join(10)
    if degraded.at is None or out.at is None:
        raise RuntimeError(f"no Degraded or no failure line (status {result.status})")
    return out.at - degraded.at, result.status


def run() -> list[Figure]:
    """The Argo Rollouts figure (needs the test control plane and the controller)."""
    env = read_testenv()
    kubeconfig = env.get("KUBECONFIG")
    if not kubeconfig or not env.get("TEST_ARGO_ROLLOUTS_VERSION"):
        raise RuntimeError("KUBECONFIG or Argo Rollouts missing from .testenv/env; make env-up")
    admin = kube_config.new_client_from_config(config_file=kubeconfig)
    core, api = k8s.CoreV1Api(admin), k8s.CustomObjectsApi(admin)
    namespace = f"bench-argo-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        for plural, body in _documents():
            api.create_namespaced_custom_object(*ARGO, namespace, plural, body)
        end = time.monotonic() + 60
        while not _healthy(api, namespace):
            if time.monotonic() > end:
                raise RuntimeError("the first revision of the Rollout did not become Healthy")
            time.sleep(0.5)
        rounds = [_round(kubeconfig, namespace, n) for n in range(REPEAT)]
    finally:
        core.delete_namespace(namespace)
        admin.close()
    statuses = ", ".join(sorted({status for _, status in rounds}))
    return [
        Figure(
            "argo rollouts: failed analysis, Degraded to our failure line",
            statistics.median(latency for latency, _ in rounds),
            None,
            1.0,
            "s",
            f"median of {REPEAT}; includes reading the AnalysisRun, the Job's pod, events and "
            f"log; status {statuses}",
        )
    ]
