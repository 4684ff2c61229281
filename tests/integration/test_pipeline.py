"""The whole pipeline, build → push → roll out, on the real engine, registry and cluster."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from tests.conftest import need_service
from tests.helpers import create_deployment, read
from tests.integration.test_build_push import go, registry_get, runner_env, services, workspace
from tests.unit.test_actions import commands

pytestmark = pytest.mark.integration
__all__ = ["services", "workspace"]  # fixtures used here


@pytest.fixture
def cluster() -> Iterator[tuple[k8s.ApiClient, str, str]]:
    settings = need_service("KUBECONFIG")
    admin = kube_config.new_client_from_config(config_file=settings["KUBECONFIG"])
    namespace = f"pipeline-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    yield admin, namespace, settings["KUBECONFIG"]
    core.delete_namespace(namespace)
    admin.close()


def deploy_env(
    services: dict[str, str],
    workspace: Path,
    kubeconfig: str,
    namespace: str,
    repo: str,
    **inputs: str,
) -> dict[str, str]:
    env = runner_env(services, workspace, **inputs)
    env["INPUT_IMAGE"] = f"{services['TEST_REGISTRY']}/{repo}"
    env["INPUT_KUBECONFIG"] = Path(kubeconfig).read_text()
    env["INPUT_NAMESPACE"] = namespace
    env["INPUT_DEPLOYMENTS"] = "web"
    env["INPUT_TIMEOUT"] = "90s"
    return env


def test_build_push_and_roll_out(
    services: dict[str, str], workspace: Path, cluster: tuple[k8s.ApiClient, str, str]
) -> None:
    admin, namespace, kubeconfig = cluster
    repo = f"it-{uuid.uuid4().hex[:8]}/web"
    old = f"{services['TEST_REGISTRY']}/{repo}:old"
    create_deployment(admin, namespace, "web", old)
    code, log, outputs, summary = go(deploy_env(services, workspace, kubeconfig, namespace, repo))
    assert code == 0, log
    assert outputs["status"] == "succeeded"
    live = read(admin, namespace, "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == outputs["image"]
    assert outputs["image"].endswith("@" + outputs["digest"])
    assert json.loads(outputs["revision"]) == {"web": 2}
    [deployment] = json.loads(outputs["deployments"])
    assert deployment["previous-image"] == old
    assert deployment["result"] == "succeeded"
    assert "| ✅ succeeded | `deployment/web` | 2 |" in summary
    assert f"`deployment/web` in `{namespace}`" in summary


def test_failing_rollout_is_rolled_back_and_fails_the_step(
    services: dict[str, str], workspace: Path, cluster: tuple[k8s.ApiClient, str, str]
) -> None:
    admin, namespace, kubeconfig = cluster
    repo = f"it-{uuid.uuid4().hex[:8]}/fail-pull-web"
    before = create_deployment(admin, namespace, "web", "127.0.0.1:5000/ok/web:1")
    code, log, outputs, summary = go(
        deploy_env(services, workspace, kubeconfig, namespace, repo, container="app")
    )
    assert code == 1
    assert outputs["status"] == "rolled-back"
    after = read(admin, namespace, "web")
    assert after["spec"]["template"] == before["spec"]["template"]
    errors = [c for c in commands(log) if c.startswith("::error")]
    assert any("ImagePullBackOff" in e for e in errors), errors
    assert "ImagePullBackOff" in summary
    lead = summary.split("\n\n")[1]  # the line under the title: what happened, what runs now
    assert lead.startswith("**`deployment/web`**: `ImagePullBackOff`"), summary
    assert "rolled back to `127.0.0.1:5000/ok/web:1`" in lead


def test_wrong_deployment_name_builds_and_pushes_nothing(
    services: dict[str, str], workspace: Path, cluster: tuple[k8s.ApiClient, str, str]
) -> None:
    _admin, namespace, kubeconfig = cluster
    repo = f"it-{uuid.uuid4().hex[:8]}/web"
    env = deploy_env(services, workspace, kubeconfig, namespace, repo)
    env["INPUT_DEPLOYMENTS"] = "no-such-web"
    code, log, outputs, _ = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    assert "Input 'deployments'" in next(c for c in commands(log) if c.startswith("::error"))
    assert "Build log" not in log
    assert registry_get(services, f"/v2/{repo}/tags/list")[0] == 404
