"""Helpers shared by the test modules, so no test module imports another.

- Cluster fixtures and helpers for the test control plane (``settings``,
  ``admin``, ``namespace``, ``create_deployment``/``create_workload``, ``read``,
  ``Run`` for one ``roll_out`` call with captured output).
- :class:`ScriptedApi`: a fake of :class:`deployer.cluster.Kube` that answers a
  script of requests in order, for unit tests of the judge and the undo.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from deployer.actions import ActionsIO
from deployer.cluster import Resource, Response, connect
from deployer.config import load_config
from deployer.rollout import RolloutResult, roll_out
from tests.conftest import need_service

REGISTRY = "127.0.0.1:5000"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def ref(repo: str, seed: str) -> str:
    return f"{REGISTRY}/{repo}@{digest(seed)}"


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    return need_service("KUBECONFIG", "TEST_NAMESPACE")


@pytest.fixture(scope="module")
def admin(settings: dict[str, str]) -> k8s.ApiClient:
    return kube_config.new_client_from_config(config_file=settings["KUBECONFIG"])


@pytest.fixture
def namespace(admin: k8s.ApiClient) -> Iterator[str]:
    name = f"rollout-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def create_deployment(
    admin: k8s.ApiClient,
    namespace: str,
    name: str,
    image: str,
    *,
    replicas: int = 2,
    containers: list[dict[str, Any]] | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers or [{"name": "app", "image": image}]},
            },
        },
    }
    apps = k8s.AppsV1Api(admin)
    apps.create_namespaced_deployment(namespace, body)
    if wait:
        wait_complete(admin, namespace, name)
    return read(admin, namespace, name)


def read(admin: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace)
    data: dict[str, Any] = admin.sanitize_for_serialization(obj)
    return data


def wait_complete(admin: k8s.ApiClient, namespace: str, name: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d = read(admin, namespace, name)
        s = d.get("status") or {}
        if (
            s.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and s.get("updatedReplicas", 0) == d["spec"]["replicas"]
            and s.get("availableReplicas", 0) == d["spec"]["replicas"]
            and s.get("replicas", 0) == d["spec"]["replicas"]
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not become available in {timeout} s")


class Run:
    """One roll_out call with captured output."""

    def __init__(
        self,
        tmp_path: Path,
        kubeconfig: str,
        *,
        environ: dict[str, str] | None = None,
        **inputs: str,
    ) -> None:
        env = {
            "INPUT_IMAGE": f"{REGISTRY}/web",
            "INPUT_BUILD": "false",
            "INPUT_TIMEOUT": "60s",
            "GITHUB_WORKSPACE": str(tmp_path),
            "GITHUB_SHA": "abc1234def5678",
            "GITHUB_REPOSITORY": "acme/web",
            "GITHUB_RUN_ID": "42",
            "KUBECONFIG": kubeconfig,
        }
        for key, value in inputs.items():
            env["INPUT_" + key.upper().replace("_", "-")] = value
        env.update(environ or {})  # e.g. DEPLOYER_KUSTOMIZE, as the action image sets it
        self.config = load_config(env)
        self.out = io.StringIO()
        summary = tmp_path / "summary.md"
        self.summary = summary
        self.io = ActionsIO(
            out=self.out,
            env={"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(summary)},
        )

    def __call__(self, image: str) -> RolloutResult:
        api, _ = connect(self.config)
        try:
            return roll_out(self.config, image, api, self.io, threading.Event())
        finally:
            api.close()

    @property
    def log(self) -> str:
        return self.out.getvalue()


def create_workload(
    admin: k8s.ApiClient,
    namespace: str,
    kind: str,
    name: str,
    image: str,
    *,
    replicas: int = 2,
    wait: bool = True,
    **spec: Any,
) -> dict[str, Any]:
    """Create a StatefulSet or DaemonSet (``kind``: statefulset | daemonset) running ``image``."""
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": {"statefulset": "StatefulSet", "daemonset": "DaemonSet"}[kind],
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            **spec,
        },
    }
    apps = k8s.AppsV1Api(admin)
    if kind == "statefulset":
        body["spec"].setdefault("serviceName", name)
        body["spec"]["replicas"] = replicas
        apps.create_namespaced_stateful_set(namespace, body)
    else:
        apps.create_namespaced_daemon_set(namespace, body)
    if wait:
        wait_workload(admin, namespace, kind, name)
    return read_workload(admin, namespace, kind, name)


def read_workload(admin: k8s.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    apps = k8s.AppsV1Api(admin)
    reader = {
        "deployment": apps.read_namespaced_deployment,
        "statefulset": apps.read_namespaced_stateful_set,
        "daemonset": apps.read_namespaced_daemon_set,
    }[kind]
    data: dict[str, Any] = admin.sanitize_for_serialization(reader(name, namespace))
    return data


def wait_workload(
    admin: k8s.ApiClient, namespace: str, kind: str, name: str, timeout: float = 60
) -> dict[str, Any]:
    """Wait until kubectl rollout status would say the workload is rolled out."""
    from deployer.rollout.kinds import KINDS

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        obj = read_workload(admin, namespace, kind, name)
        if KINDS[kind].status(obj).state == "complete":
            return obj
        time.sleep(0.2)
    raise AssertionError(f"{kind}/{name} did not roll out in {timeout} s")


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


# -- a scripted fake API for unit tests ---------------------------------------------------


class ScriptedApi:
    """Answers requests from a script, in order, and records them.

    Each step is ``(method, plural, answer)``; ``answer`` is a dict (the JSON
    body) or a :class:`Response` (a status the caller said it expects). A request
    that is not the next step fails the test.
    """

    def __init__(self, *steps: tuple[str, str, Any]) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, resource: Resource, **kwargs: Any) -> Any:
        self.calls.append((method, resource.plural, kwargs))
        assert self.steps, f"unexpected request {method} {resource.plural}"
        want_method, want_plural, answer = self.steps.pop(0)
        assert (method, resource.plural) == (want_method, want_plural), self.calls[-1]
        if isinstance(answer, Response):
            assert answer.status in kwargs.get("expect", frozenset()), answer
        return answer

    @property
    def done(self) -> bool:
        return not self.steps
