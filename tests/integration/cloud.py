"""Helpers for tests against the cloud identity stand-ins (testenv/cloud/standin.py).

The stand-ins judge credentials the way EKS, GKE and AKS do, and the test API
server (``TEST_CLOUD_SERVER``) sends every bearer token it does not know to them
(token webhook); see docs/cluster.md, "Cloud credentials". This module gives:

- :func:`cloud_settings`: the ``TEST_*`` settings (``need_service``: fails under
  CI, skips on a laptop when the stand-ins are not up);
- :func:`eks_kubeconfig`, :func:`gke_kubeconfig`, :func:`aks_kubeconfig`: kubeconfigs
  for the test API server whose ``user`` is exactly what ``aws eks
  update-kubeconfig`` (or eksctl's ``aws-iam-authenticator``),
  ``gcloud container clusters get-credentials`` and ``az aks get-credentials``
  followed by ``kubelogin convert-kubeconfig -l spn|workloadidentity`` write;
- :func:`aws_env`, :func:`aws_web_identity_env`, :func:`gcp_env`, :func:`azure_env`,
  :func:`azure_federated_env`, :func:`oidc_env`: the
  job environment the usual auth actions (aws-actions/configure-aws-credentials,
  google-github-actions/auth, azure/login) and the runner would give;
- :func:`whoami`: the user the API server sees for a bearer token
  (SelfSubjectReview), and :func:`github_oidc_token`.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Literal

import yaml

from tests.conftest import need_service

# The contract with the stand-ins' cloud.env (scripts/testenv/cloud-up.sh).
CLOUD_SETTINGS = (
    "TEST_AWS_ACCESS_KEY_ID",
    "TEST_AWS_SECRET_ACCESS_KEY",
    "TEST_AWS_REGION",
    "TEST_AWS_ACCOUNT_ID",
    "TEST_EKS_CLUSTER",
    "TEST_AWS_ROLE_ARN",
    "TEST_STS_ENDPOINT",
    "TEST_ECR_ENDPOINT",
    "TEST_ECR_REGISTRY_PASSWORD_USER",
    "TEST_GCP_CREDENTIALS_FILE",
    "TEST_GCP_EXTERNAL_ACCOUNT_FILE",
    "TEST_GCP_CLIENT_EMAIL",
    "TEST_OIDC_SUBJECT",
    "TEST_AZURE_AUTHORITY_HOST",
    "TEST_AZURE_TENANT_ID",
    "TEST_AZURE_CLIENT_ID",
    "TEST_AZURE_CLIENT_SECRET",
    "TEST_AZURE_SERVER_ID",
    "TEST_OIDC_REQUEST_URL",
    "TEST_OIDC_REQUEST_TOKEN",
    "TEST_CLOUD_SERVER",
    "TEST_CLOUD_CA_FILE",
    "TEST_CLOUD_GROUP",
    "TEST_NAMESPACE",
)
AKS_INSTALL_HINT = (
    "\nkubelogin is not installed which is required to connect to AAD enabled cluster.\n\n"
    "To learn more, please go to https://aka.ms/aks/kubelogin\n"
)
GKE_INSTALL_HINT = (
    "Install gke-gcloud-auth-plugin for use with kubectl by following\n"
    "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin"
)


def cloud_settings() -> dict[str, str]:
    """The stand-ins' settings from .testenv/env (fail under CI, skip on a laptop)."""
    return need_service(*CLOUD_SETTINGS)


def _kubeconfig(path: Path, name: str, user: dict[str, Any], env: dict[str, str]) -> Path:
    ca = base64.b64encode(Path(env["TEST_CLOUD_CA_FILE"]).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "clusters": [
            {
                "cluster": {"certificate-authority-data": ca, "server": env["TEST_CLOUD_SERVER"]},
                "name": name,
            }
        ],
        "contexts": [
            {
                "context": {"cluster": name, "user": name, "namespace": env["TEST_NAMESPACE"]},
                "name": name,
            }
        ],
        "current-context": name,
        "kind": "Config",
        "preferences": {},
        "users": [{"name": name, "user": user}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def eks_kubeconfig(
    path: Path,
    *,
    style: Literal["aws", "aws-iam-authenticator"] = "aws",
    role_arn: str | None = None,
    cluster: str | None = None,
) -> Path:
    """A kubeconfig as ``aws eks update-kubeconfig --name C --region R [--role-arn A]``
    writes it (or, with ``style="aws-iam-authenticator"``, as eksctl does)."""
    env = cloud_settings()
    region, account = env["TEST_AWS_REGION"], env["TEST_AWS_ACCOUNT_ID"]
    cluster = cluster or env["TEST_EKS_CLUSTER"]
    exec_: dict[str, Any]
    if style == "aws":
        args = [
            "--region",
            region,
            "eks",
            "get-token",
            "--cluster-name",
            cluster,
            "--output",
            "json",
        ]
        if role_arn:
            args += ["--role-arn", role_arn]
        exec_ = {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "args": args,
            "command": "aws",
        }
    else:
        args = ["token", "-i", cluster] + (["-r", role_arn] if role_arn else [])
        exec_ = {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "args": args,
            "command": "aws-iam-authenticator",
            "env": [
                {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
                {"name": "AWS_DEFAULT_REGION", "value": region},
            ],
            "provideClusterInfo": False,
        }
    name = f"arn:aws:eks:{region}:{account}:cluster/{cluster}"
    return _kubeconfig(path, name, {"exec": exec_}, env)


def gke_kubeconfig(path: Path) -> Path:
    """A kubeconfig as ``gcloud container clusters get-credentials`` writes it."""
    env = cloud_settings()
    exec_ = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "gke-gcloud-auth-plugin",
        "installHint": GKE_INSTALL_HINT,
        "provideClusterInfo": True,
    }
    return _kubeconfig(path, "gke_deployer-test_europe-west1_deployer-test", {"exec": exec_}, env)


def aks_kubeconfig(
    path: Path,
    *,
    login: Literal["spn", "workloadidentity", "azurecli", "devicecode"] = "spn",
    with_ids: bool = True,
) -> Path:
    """A kubeconfig as ``az aks get-credentials`` + ``kubelogin convert-kubeconfig -l LOGIN``
    write it; ``with_ids=False`` leaves client and tenant ids to AZURE_CLIENT_ID/TENANT_ID."""
    env = cloud_settings()
    args = [
        "get-token",
        "--environment",
        "AzurePublicCloud",
        "--server-id",
        env["TEST_AZURE_SERVER_ID"],
    ]
    if with_ids:
        args += [
            "--client-id",
            env["TEST_AZURE_CLIENT_ID"],
            "--tenant-id",
            env["TEST_AZURE_TENANT_ID"],
        ]
    args += ["--login", login]
    exec_ = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "args": args,
        "command": "kubelogin",
        "env": None,
        "installHint": AKS_INSTALL_HINT,
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": False,
    }
    return _kubeconfig(path, "clusterUser_deployer-rg_deployer-test", {"exec": exec_}, env)


def aws_env(*, session_token: str | None = None) -> dict[str, str]:
    """What aws-actions/configure-aws-credentials puts in the job environment, plus
    the endpoint overrides that send the AWS calls to the stand-ins."""
    env = cloud_settings()
    out = {
        "AWS_ACCESS_KEY_ID": env["TEST_AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["TEST_AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": env["TEST_AWS_REGION"],
        "AWS_DEFAULT_REGION": env["TEST_AWS_REGION"],
        "AWS_ENDPOINT_URL_STS": env["TEST_STS_ENDPOINT"],
        "AWS_ENDPOINT_URL_ECR": env["TEST_ECR_ENDPOINT"],
    }
    if session_token:
        out["AWS_SESSION_TOKEN"] = session_token
    return out


def aws_web_identity_env(workspace: Path) -> dict[str, str]:
    """Web identity from a token file (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), the
    file holding a runner OIDC token for ``sts.amazonaws.com`` (valid 5 min)."""
    env = cloud_settings()
    token_file = workspace / "aws-web-identity-token"
    token_file.write_text(github_oidc_token("sts.amazonaws.com"))
    token_file.chmod(0o600)
    return {
        "AWS_ROLE_ARN": env["TEST_AWS_ROLE_ARN"],
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_REGION": env["TEST_AWS_REGION"],
        "AWS_DEFAULT_REGION": env["TEST_AWS_REGION"],
        "AWS_ENDPOINT_URL_STS": env["TEST_STS_ENDPOINT"],
        "AWS_ENDPOINT_URL_ECR": env["TEST_ECR_ENDPOINT"],
    }


def azure_federated_env(workspace: Path) -> dict[str, str]:
    """kubelogin's workloadidentity mode: AZURE_FEDERATED_TOKEN_FILE holding a runner
    OIDC token for ``api://AzureADTokenExchange`` (valid 5 min)."""
    token_file = workspace / "azure-identity-token"
    token_file.write_text(github_oidc_token("api://AzureADTokenExchange"))
    token_file.chmod(0o600)
    return {**azure_env(secret=False), "AZURE_FEDERATED_TOKEN_FILE": str(token_file)}


def gcp_env(
    workspace: Path, *, kind: Literal["service_account", "external_account"] = "service_account"
) -> dict[str, str]:
    """google-github-actions/auth: a ``gha-creds-*.json`` in the workspace and
    GOOGLE_APPLICATION_CREDENTIALS naming it (a copy; the file is the same)."""
    env = cloud_settings()
    source = env[
        "TEST_GCP_CREDENTIALS_FILE"
        if kind == "service_account"
        else "TEST_GCP_EXTERNAL_ACCOUNT_FILE"
    ]
    target = workspace / "gha-creds-0123456789abcdef.json"
    shutil.copyfile(source, target)
    target.chmod(0o600)
    project = json.loads(target.read_text()).get("project_id", "deployer-test")
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(target),
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(target),
        "GOOGLE_GHA_CREDS_PATH": str(target),
        "CLOUDSDK_CORE_PROJECT": project,
        "GOOGLE_CLOUD_PROJECT": project,
    }


def azure_env(*, secret: bool = True) -> dict[str, str]:
    """The environment for kubelogin's spn mode (client secret) or, with
    ``secret=False``, for the GitHub OIDC token as client assertion."""
    env = cloud_settings()
    out = {
        "AZURE_CLIENT_ID": env["TEST_AZURE_CLIENT_ID"],
        "AZURE_TENANT_ID": env["TEST_AZURE_TENANT_ID"],
        "AZURE_AUTHORITY_HOST": env["TEST_AZURE_AUTHORITY_HOST"],
    }
    if secret:
        out["AZURE_CLIENT_SECRET"] = env["TEST_AZURE_CLIENT_SECRET"]
    return out


def oidc_env() -> dict[str, str]:
    """What the runner gives a container action of a job with ``id-token: write``."""
    env = cloud_settings()
    return {
        "ACTIONS_ID_TOKEN_REQUEST_URL": env["TEST_OIDC_REQUEST_URL"],
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": env["TEST_OIDC_REQUEST_TOKEN"],
    }


def http(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    method: str | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one HTTP request; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, bytes(error.read())


def github_oidc_token(audience: str | None) -> str:
    """An ID token from the runner's OIDC endpoint stand-in, as a container action asks for it."""
    env = cloud_settings()
    url = env["TEST_OIDC_REQUEST_URL"]
    if audience is not None:
        url += "&audience=" + urllib.parse.quote(audience, safe="")
    status, body = http(url, headers={"Authorization": f"Bearer {env['TEST_OIDC_REQUEST_TOKEN']}"})
    assert status == 200, (status, body[:200])
    return str(json.loads(body)["value"])


def whoami(token: str) -> tuple[int, dict[str, Any]]:
    """The API server's answer to a SelfSubjectReview made with ``token``: (status, body).

    200 with ``status.userInfo`` (username, groups) when the token authenticates;
    401 when the API server (through the stand-ins' webhook) refuses it.
    """
    env = cloud_settings()
    context = ssl.create_default_context(cafile=env["TEST_CLOUD_CA_FILE"])
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    status, body = http(
        env["TEST_CLOUD_SERVER"] + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=json.dumps(review).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        context=context,
    )
    return status, json.loads(body) if body.startswith(b"{") else {}


def can_i(token: str, verb: str, resource: str, namespace: str, group: str = "apps") -> bool:
    """SelfSubjectAccessReview with ``token``: may this user do it (RBAC)?"""
    env = cloud_settings()
    context = ssl.create_default_context(cafile=env["TEST_CLOUD_CA_FILE"])
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": verb,
                "resource": resource,
                "group": group,
                "namespace": namespace,
            }
        },
    }
    status, body = http(
        env["TEST_CLOUD_SERVER"] + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        data=json.dumps(review).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        context=context,
    )
    assert status == 201, (status, body[:300])
    return bool(json.loads(body)["status"].get("allowed"))


def eks_token_botocore(
    access_key: str,
    secret_key: str,
    *,
    cluster: str,
    region: str,
    session_token: str | None = None,
    expires: int = 60,
    sign_cluster_header: bool = True,
    host: str | None = None,
) -> str:
    """An EKS token made by botocore, the AWS CLI's signer (a test-only oracle):
    ``k8s-aws-v1.`` + unpadded base64url of the presigned GetCallerIdentity URL."""
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = host or f"sts.{region}.amazonaws.com"
    headers = {"x-k8s-aws-id": cluster} if sign_cluster_header else {}
    request = AWSRequest(
        method="GET",
        url=f"https://{host}/?Action=GetCallerIdentity&Version=2011-06-15",
        headers=headers,
    )
    SigV4QueryAuth(
        Credentials(access_key, secret_key, session_token), "sts", region, expires
    ).add_auth(request)
    url = request.prepare().url
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
