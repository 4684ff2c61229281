"""How fast the cluster is put back (issue 16), against the test control plane.

1. Signal → everything put back: a rollout in its own process (the pipeline's
   signal handling) gets SIGINT while it waits; the figure is the time until the
   ConfigMap and the Deployment are back as they were, seen by an admin client
   polling every 20 ms (p50 and max over 10 runs; target p50 <= 2 s; the runner
   kills at 10 s).
2. Failure detected → everything restored: a run with 1 Deployment + 3
   ConfigMaps (changed) + 1 Service (created) whose pods crash-loop; the figure
   is from the failure's ``::error`` line to the end of the rollback (config put
   back, the undo verified, the Service deleted). Target <= 3 s.
"""

from __future__ import annotations

import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from bench.common import Figure
from deployer.actions import ActionsIO
from deployer.cluster import connect
from deployer.config import load_config
from deployer.rollout import roll_out

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
ROUNDS = 10

APP = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings-{i}}}
data: {{greeting: {greeting}}}
"""
DEPLOYMENT = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: "{registry}/web"
        envFrom: [{{configMapRef: {{name: settings-0}}}}]
"""
SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
"""


def _manifests(workspace: Path, name: str, configs: int, service: bool) -> None:
    text = "".join(APP.format(i=i, greeting="bonjour") for i in range(configs))
    text += DEPLOYMENT.format(name=name, registry=REGISTRY)
    if service:
        text += SERVICE.format(name=name)
    (workspace / "app.yaml").write_text(text)


def _existing(cluster: Any, name: str, configs: int, image: str) -> dict[str, Any]:
    core = k8s.CoreV1Api(cluster.admin)
    for i in range(configs):
        body = {"metadata": {"name": f"settings-{i}"}, "data": {"greeting": "hello"}}
        try:
            core.create_namespaced_config_map(cluster.namespace, body)
        except k8s.ApiException as e:
            if e.status != 409:
                raise
            core.replace_namespaced_config_map(f"settings-{i}", cluster.namespace, body)
    cluster.create(name, image)
    cluster.wait_complete(name)
    template: dict[str, Any] = cluster.admin.sanitize_for_serialization(
        cluster.apps.read_namespaced_deployment(name, cluster.namespace)
    )["spec"]["template"]
    return template


def _put_back(cluster: Any, name: str, template: dict[str, Any]) -> bool:
    core = k8s.CoreV1Api(cluster.admin)
    data = core.read_namespaced_config_map("settings-0", cluster.namespace).data
    live = cluster.admin.sanitize_for_serialization(
        cluster.apps.read_namespaced_deployment(name, cluster.namespace)
    )
    return bool(data == {"greeting": "hello"} and live["spec"]["template"] == template)


def _signal_round(cluster: Any, kubeconfig: str, round_: int, ref: Any) -> float:
    name = f"sig-{round_}"
    workspace = Path(tempfile.mkdtemp())
    template = _existing(cluster, name, 1, ref("web", "start"))
    _manifests(workspace, name, 1, service=False)
    env = {
        **os.environ,
        "INPUT_IMAGE": f"{REGISTRY}/web",
        "INPUT_BUILD": "false",
        "INPUT_NAMESPACE": cluster.namespace,
        "INPUT_MANIFESTS": "app.yaml",
        "INPUT_TIMEOUT": "120s",
        "GITHUB_WORKSPACE": str(workspace),
        "KUBECONFIG": kubeconfig,
        "PYTHONPATH": str(ROOT),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.rollout_child", ref("never-ready-web", name)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if f"deployment/{name}: updated" in line:
            break
    signalled = time.monotonic()
    child.send_signal(signal.SIGINT)
    end = signalled + 10
    while not _put_back(cluster, name, template) and time.monotonic() < end:
        time.sleep(0.02)
    took = time.monotonic() - signalled
    child.communicate(timeout=30)
    return took


class _Failure(io.StringIO):
    """The log, noting when the failure's ::error line is written."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def write(self, text: str) -> int:
        if self.at is None and "::error title=Rollout of" in text:
            self.at = time.monotonic()
        return super().write(text)


def _restore_round(cluster: Any, kubeconfig: str, ref: Any) -> tuple[float, str]:
    name = "restore"
    workspace = Path(tempfile.mkdtemp())
    _existing(cluster, name, 3, ref("web", "start"))
    _manifests(workspace, name, 3, service=True)
    config = load_config(
        {
            "INPUT_IMAGE": f"{REGISTRY}/web",
            "INPUT_BUILD": "false",
            "INPUT_NAMESPACE": cluster.namespace,
            "INPUT_MANIFESTS": "app.yaml",
            "INPUT_TIMEOUT": "120s",
            "GITHUB_WORKSPACE": str(workspace),
            "KUBECONFIG": kubeconfig,
        }
    )
    api, _ = connect(config)
    log = _Failure()
    result = roll_out(
        config, ref("crash-loop-web", "restore"), api, ActionsIO(log), threading.Event()
    )
    done = time.monotonic()
    api.close()
    if log.at is None:
        raise RuntimeError(f"restore round: no failure ({result.status})")
    return done - log.at, result.status


def figures(cluster: Any, kubeconfig: str, ref: Any) -> list[Figure]:
    """The two figures of the module docstring."""
    rounds = [_signal_round(cluster, kubeconfig, i, ref) for i in range(ROUNDS)]
    took, status = _restore_round(cluster, kubeconfig, ref)
    return [
        Figure(
            "rollback: SIGINT to everything put back (p50)",
            statistics.median(rounds),
            None,
            2.0,
            "s",
            f"max {max(rounds):.2f} s over {ROUNDS} runs; a ConfigMap and a Deployment in a "
            "process of their own, put back without waiting (the runner kills at 10 s)",
        ),
        Figure(
            "rollback: failure detected to everything restored",
            took,
            None,
            3.0,
            "s",
            f"status {status}; 1 Deployment + 3 ConfigMaps put back + 1 Service deleted; "
            "from the ::error line to the end of the rollback, the undo verified",
        ),
    ]
