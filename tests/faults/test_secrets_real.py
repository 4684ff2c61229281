"""The secret scan of tests/unit/test_secrets.py on a real run: engine, registry, cluster.

The kubeconfig input is the admin kubeconfig as base64 (its client-key-data is a
real private key); the registry password is the real one and is also handed to
the build as a build argument that a RUN step prints.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.helpers import create_deployment
from tests.integration.test_build_push import go, runner_env, services, workspace
from tests.integration.test_pipeline import cluster
from tests.unit.test_secrets import assert_no_leaks

pytestmark = pytest.mark.integration
__all__ = ["cluster", "services", "workspace"]  # fixtures used here


@pytest.mark.parametrize("repo", ["web", "fail-pull-web"])
def test_a_real_run_leaks_no_secret(
    services: dict[str, str],
    workspace: Path,
    cluster: tuple[k8s.ApiClient, str, str],
    capsys: pytest.CaptureFixture[str],
    repo: str,
) -> None:
    admin, namespace, kubeconfig_path = cluster
    kubeconfig = Path(kubeconfig_path).read_text()
    user = yaml.safe_load(kubeconfig)["users"][0]["user"]
    (workspace / "Dockerfile").write_text(
        (workspace / "Dockerfile").read_text()
        + f"ENV RUN_ID={uuid.uuid4().hex}\n"  # no cache hit: the RUN below prints again
        + 'ARG TOKEN\nRUN echo "token is $TOKEN" && echo "$TOKEN" | base64\n'
    )
    password = services["TEST_REGISTRY_PASSWORD"]
    env = runner_env(services, workspace, build_args=f"TOKEN={password}", container="app")
    env["INPUT_IMAGE"] = f"{services['TEST_REGISTRY']}/sec-{uuid.uuid4().hex[:8]}/{repo}"
    env["INPUT_KUBECONFIG"] = base64.b64encode(kubeconfig.encode()).decode()
    env["INPUT_NAMESPACE"] = namespace
    env["INPUT_DEPLOYMENTS"] = "web"
    env["INPUT_TIMEOUT"] = "60s"
    create_deployment(admin, namespace, "web", "127.0.0.1:5000/ok/web:1", replicas=1)
    code, log, outputs, summary = go(env)
    std = capsys.readouterr()
    assert code == (0 if repo == "web" else 1), log
    assert outputs["status"] == ("succeeded" if repo == "web" else "rolled-back")
    assert "token is ***" in log  # the build printed it: redacted
    secrets = {
        "registry password": password,
        "user:password": f"{services['TEST_REGISTRY_USERNAME']}:{password}",
        "client-key-data": user["client-key-data"],
        "client key (PEM)": base64.b64decode(user["client-key-data"]).decode(),
        "kubeconfig input (base64)": env["INPUT_KUBECONFIG"],
    }
    assert_no_leaks(
        {
            "log": log,
            "stdout": std.out,
            "stderr": std.err,
            "GITHUB_OUTPUT": Path(env["GITHUB_OUTPUT"]).read_text(),
            "GITHUB_STEP_SUMMARY": summary,
        },
        secrets,
    )
