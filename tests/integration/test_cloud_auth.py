"""EKS, GKE and AKS kubeconfigs end to end: the whole pipeline against the real control plane.

The kubeconfigs are exactly what ``aws eks update-kubeconfig``, ``gcloud container
clusters get-credentials`` and ``kubelogin convert-kubeconfig`` write; their plugins
are not installed (nor run). deployer makes their tokens from the job's
environment, and the test API server judges them through the cloud stand-ins'
token webhook (testenv/cloud/standin.py; EKS tokens by their SigV4 signature),
which maps each cloud identity to the restricted Role in TEST_NAMESPACE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from deployer.cloud.registry import registry_login
from deployer.config import load_config
from tests.integration.cloud import (
    aks_kubeconfig,
    aws_env,
    aws_web_identity_env,
    azure_env,
    azure_federated_env,
    cloud_settings,
    eks_kubeconfig,
    gcp_env,
    gke_kubeconfig,
    oidc_env,
    whoami,
)
from tests.integration.test_build_push import go, registry_get, runner_env, services, workspace
from tests.integration.test_rollout import create_deployment, read
from tests.unit.test_actions import commands

pytestmark = pytest.mark.integration
__all__ = ["services", "workspace"]  # fixtures used here


@pytest.fixture
def web(kube_admin: k8s.ApiClient, test_namespace: str) -> Iterator[str]:
    """A Deployment of its own in TEST_NAMESPACE (the namespace the cloud identities may use)."""
    name = f"cloud-{uuid.uuid4().hex[:8]}"
    create_deployment(kube_admin, test_namespace, name, "127.0.0.1:5000/ok/web:1")
    yield name
    k8s.AppsV1Api(kube_admin).delete_namespaced_deployment(name, test_namespace)


def cloud_run(
    services: dict[str, str],
    workspace: Path,
    kubeconfig: Path,
    deployment: str,
    repo: str,
    cloud_env: dict[str, str],
    **inputs: str,
) -> dict[str, str]:
    env = runner_env(services, workspace, **inputs)
    env["INPUT_IMAGE"] = f"{services['TEST_REGISTRY']}/{repo}"
    env["INPUT_KUBECONFIG"] = kubeconfig.read_text()
    env["INPUT_NAMESPACE"] = cloud_settings()["TEST_NAMESPACE"]
    env["INPUT_DEPLOYMENTS"] = deployment
    env["INPUT_CONTAINER"] = "app"
    env["INPUT_TIMEOUT"] = "90s"
    env.update(cloud_env)
    return env


def roll_out_and_back(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    web: str,
    kubeconfig: Path,
    cloud_env: dict[str, str],
    **inputs: str,
) -> None:
    """A good release rolls out; a broken one is rolled back; both with the cloud token."""
    namespace = cloud_settings()["TEST_NAMESPACE"]
    tag = uuid.uuid4().hex[:8]
    env = cloud_run(services, workspace, kubeconfig, web, f"cloud-{tag}/web", cloud_env, **inputs)
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert outputs["status"] == "succeeded"
    live = read(kube_admin, namespace, web)
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == outputs["image"]
    good = live["spec"]["template"]

    broken = f"cloud-{tag}/fail-pull-web"
    env = cloud_run(services, workspace, kubeconfig, web, broken, cloud_env, **inputs)
    code, log, outputs, summary = go(env)
    assert code == 1
    assert outputs["status"] == "rolled-back", log
    assert read(kube_admin, namespace, web)["spec"]["template"] == good
    assert "ImagePullBackOff" in summary


@pytest.mark.parametrize("style", ["aws", "aws-iam-authenticator"])
def test_eks_kubeconfig_with_aws_env_credentials_rolls_out_and_back(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    web: str,
    tmp_path: Path,
    style: str,
) -> None:
    kubeconfig = eks_kubeconfig(tmp_path / "eks.kubeconfig", style=style)  # type: ignore[arg-type]
    roll_out_and_back(services, workspace, kube_admin, web, kubeconfig, aws_env())


def test_eks_with_the_runners_oidc_token_and_aws_role_arn(
    services: dict[str, str], workspace: Path, kube_admin: k8s.ApiClient, web: str, tmp_path: Path
) -> None:
    """No AWS keys at all: the job's OIDC token is exchanged for the role's credentials."""
    settings = cloud_settings()
    kubeconfig = eks_kubeconfig(tmp_path / "eks.kubeconfig")
    env = {**oidc_env(), "AWS_ENDPOINT_URL_STS": settings["TEST_STS_ENDPOINT"]}
    env = cloud_run(
        services,
        workspace,
        kubeconfig,
        web,
        f"cloud-{uuid.uuid4().hex[:8]}/web",
        env,
        aws_role_arn=settings["TEST_AWS_ROLE_ARN"],
    )
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert outputs["status"] == "succeeded"


@pytest.mark.parametrize("source", ["aws-web-identity-file", "azure-federated-token-file"])
def test_token_files_in_the_workspace_are_credentials_too(
    services: dict[str, str], workspace: Path, web: str, tmp_path: Path, source: str
) -> None:
    """AWS_WEB_IDENTITY_TOKEN_FILE (EKS) and AZURE_FEDERATED_TOKEN_FILE (AKS workloadidentity)."""
    if source.startswith("aws"):
        kubeconfig = eks_kubeconfig(tmp_path / "eks.kubeconfig")
        env = aws_web_identity_env(workspace)
    else:
        kubeconfig = aks_kubeconfig(tmp_path / "aks.kubeconfig", login="workloadidentity")
        env = azure_federated_env(workspace)
    repo = f"cloud-{uuid.uuid4().hex[:8]}/web"
    code, log, outputs, _ = go(cloud_run(services, workspace, kubeconfig, web, repo, env))
    assert code == 0, log
    assert outputs["status"] == "succeeded"


@pytest.mark.parametrize("kind", ["service_account", "external_account"])
def test_gke_kubeconfig_with_google_credentials_rolls_out_and_back(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    web: str,
    tmp_path: Path,
    kind: str,
) -> None:
    kubeconfig = gke_kubeconfig(tmp_path / "gke.kubeconfig")
    env = gcp_env(workspace, kind=kind)  # type: ignore[arg-type]
    if kind == "external_account":
        env.update(oidc_env())
    roll_out_and_back(services, workspace, kube_admin, web, kubeconfig, env)


@pytest.mark.parametrize("login", ["spn", "workloadidentity"])
def test_aks_kubeconfig_with_azure_credentials_rolls_out_and_back(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    web: str,
    tmp_path: Path,
    login: str,
) -> None:
    kubeconfig = aks_kubeconfig(tmp_path / "aks.kubeconfig", login=login)  # type: ignore[arg-type]
    env = azure_env(secret=True) if login == "spn" else {**azure_env(secret=False), **oidc_env()}
    roll_out_and_back(services, workspace, kube_admin, web, kubeconfig, env)


def _exec_kubeconfig(path: Path, marker: Path) -> Path:
    """An EKS kubeconfig whose exec "plugin" would create ``marker`` if it were run."""
    config = yaml.safe_load(eks_kubeconfig(path).read_text())
    config["users"][0]["user"]["exec"].update(
        command="/bin/sh", args=["-c", f"touch {marker}; echo '{{}}'"]
    )
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("source", ["input", "KUBECONFIG"])
def test_an_exec_command_that_would_create_a_file_is_refused_and_never_run(
    services: dict[str, str], workspace: Path, web: str, tmp_path: Path, source: str
) -> None:
    marker = tmp_path / "plugin-ran"
    kubeconfig = _exec_kubeconfig(tmp_path / "evil.kubeconfig", marker)
    repo = f"cloud-{uuid.uuid4().hex[:8]}/web"
    env = cloud_run(services, workspace, kubeconfig, web, repo, aws_env())
    if source == "KUBECONFIG":
        del env["INPUT_KUBECONFIG"]
        env["KUBECONFIG"] = str(kubeconfig)
    code, log, outputs, _ = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "'/bin/sh'" in error and "gke-gcloud-auth-plugin" in error
    if source == "input":
        assert "Invalid input 'kubeconfig'" in error
    assert not marker.exists()
    assert registry_get(services, f"/v2/{repo}/tags/list")[0] == 404  # nothing built or pushed


def test_missing_aws_credentials_name_the_variables_and_the_action(
    services: dict[str, str], workspace: Path, web: str, tmp_path: Path
) -> None:
    kubeconfig = eks_kubeconfig(tmp_path / "eks.kubeconfig")
    repo = f"cloud-{uuid.uuid4().hex[:8]}/web"
    env = cloud_run(services, workspace, kubeconfig, web, repo, {})
    code, log, outputs, summary = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    [error] = [c for c in commands(log) if c.startswith("::error")]
    for word in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "aws-actions/configure-aws-credentials",
    ):
        assert word in error
    assert "AWS_ACCESS_KEY_ID" in summary
    assert registry_get(services, f"/v2/{repo}/tags/list")[0] == 404


def test_ecr_login_from_aws_credentials_is_accepted_by_the_registry(
    services: dict[str, str], tmp_path: Path
) -> None:
    """GetAuthorizationToken at the ECR stand-in; the real registry takes the password."""
    import base64
    import urllib.request

    settings = cloud_settings()
    host = f"{settings['TEST_AWS_ACCOUNT_ID']}.dkr.ecr.{settings['TEST_AWS_REGION']}.amazonaws.com"
    config = load_config(
        {
            "INPUT_IMAGE": f"{host}/web",
            "GITHUB_WORKSPACE": str(tmp_path),
            "INPUT_BUILD": "false",
            **aws_env(),
        }
    )
    masked: list[str] = []
    login = registry_login(config, masked.append)
    assert login.registry_username == "AWS"
    password = login.registry_password.get_secret_value() if login.registry_password else ""
    assert password in masked
    # The same password opens the test registry (its user AWS has the ECR stand-in's password).
    request = urllib.request.Request(
        f"http://{services['TEST_REGISTRY']}/v2/",
        headers={"Authorization": "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback test registry
        assert answer.status == 200


def test_artifact_registry_login_is_a_google_access_token(tmp_path: Path) -> None:
    """oauth2accesstoken + the access token the Google stand-in issued for the key."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = {
        "INPUT_IMAGE": "europe-west1-docker.pkg.dev/deployer-test/apps/web",
        "GITHUB_WORKSPACE": str(workspace),
        "INPUT_BUILD": "false",
        **gcp_env(workspace),
    }
    masked: list[str] = []
    login = registry_login(load_config(env), masked.append)
    assert login.registry_username == "oauth2accesstoken"
    token = login.registry_password.get_secret_value() if login.registry_password else ""
    assert token in masked
    status, review = whoami(token)  # the same token the cluster accepts as that identity
    assert status == 201, review
    user = review["status"]["userInfo"]["username"]
    assert user.endswith(cloud_settings()["TEST_GCP_CLIENT_EMAIL"]), user
