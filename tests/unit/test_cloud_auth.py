"""Cloud credentials made in-process (deployer/cloud): SigV4, the plugins, each provider.

Providers get a fake HTTP function (``http=``) that records the requests and
answers like the cloud would; the real stand-ins are exercised end to end in
tests/integration/test_cloud_auth.py.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.actions import ActionsIO
from deployer.cloud import CloudEnv, TokenSource
from deployer.cloud.aws import AwsCredentials, ecr_password, ecr_registry, eks_token
from deployer.cloud.azure import AzureLogin
from deployer.cloud.azure import access_token as azure_token
from deployer.cloud.gcp import access_token as google_token
from deployer.cloud.http import Answer
from deployer.cloud.plugins import SUPPORTED, plugin_for_user, recognise, token_source
from deployer.cloud.registry import registry_login
from deployer.cloud.sigv4 import Credentials, authorization, canonical_request, sign_request
from deployer.config import load_config
from deployer.errors import ConfigError, CredentialsError

VECTORS = json.loads((Path(__file__).parent.parent / "data" / "sigv4-test-suite.json").read_text())
KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = 1_795_000_000.0  # a fixed clock


# -- SigV4 -------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["tests"], ids=lambda c: c["name"])
def test_sigv4_matches_the_aws_test_suite(case: dict[str, Any]) -> None:
    cfg = VECTORS["config"]
    body = case["body"].encode()
    creq, signed = canonical_request(
        case["method"],
        case["path"],
        [tuple(q) for q in case["query"]],
        [tuple(h) for h in case["headers"]],
        hashlib.sha256(body).hexdigest(),
    )
    assert creq == case["creq"]
    creds = Credentials(cfg["access_key"], cfg["secret_key"])
    _, header = authorization(creq, signed, creds, cfg["region"], cfg["service"], cfg["amz_date"])
    assert header == case["authz"]


def _botocore_presigned(
    region: str, cluster: str, token: str | None, now: datetime.datetime
) -> str:
    from unittest import mock

    import botocore.session

    session = botocore.session.Session()
    session.set_credentials(KEY_ID, SECRET, token)
    sts = session.create_client("sts", region_name=region)

    def add_cluster_header(request: Any, **_kwargs: Any) -> None:
        request.headers["x-k8s-aws-id"] = cluster

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        return str(
            sts.generate_presigned_url(
                "get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET"
            )
        )


@pytest.mark.parametrize(
    ("region", "token"),
    [("eu-west-1", None), ("us-east-1", "FQoGZXIvYXdzE+/=session"), ("cn-north-1", None)],
)
def test_eks_token_is_the_url_botocore_presigns(region: str, token: str | None) -> None:
    """The same presigned URL as the AWS CLI's signer, for the same inputs and clock."""
    now = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    expected = _botocore_presigned(region, "prod", token, now)
    made, expires = eks_token(Credentials(KEY_ID, SECRET, token), "prod", region, NOW)
    assert made.startswith("k8s-aws-v1.")
    encoded = made.removeprefix("k8s-aws-v1.")
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    assert url == expected
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"]
    assert query["X-Amz-SignedHeaders"] == ["host;x-k8s-aws-id"]
    assert urlsplit(url).hostname.startswith(f"sts.{region}.amazonaws.com")  # type: ignore[union-attr]
    assert expires == NOW + 14 * 60


def test_signed_request_is_what_botocore_signs() -> None:
    """The ECR call's Authorization header, against botocore's SigV4Auth."""
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    url = "https://api.ecr.eu-west-1.amazonaws.com/"
    body = b'{"registryIds": ["123456789012"]}'
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
    }
    now = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        SigV4Auth(BotoCredentials(KEY_ID, SECRET, "tok"), "ecr", "eu-west-1").add_auth(request)
    mine = sign_request(
        "POST", url, headers, body, Credentials(KEY_ID, SECRET, "tok"), "eu-west-1", "ecr", now
    )
    assert mine["authorization"] == request.headers["Authorization"]
    assert mine["x-amz-security-token"] == "tok"


# -- fakes -------------------------------------------------------------------------


class FakeHttp:
    """Answers by URL prefix and records every request."""

    def __init__(self, answers: Mapping[str, Answer | list[Answer]]) -> None:
        self.answers = {k: list(v) if isinstance(v, list) else [v] for k, v in answers.items()}
        self.requests: list[tuple[str, str, dict[str, str], bytes | None]] = []

    def __call__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        ca_file: str | None,
    ) -> Answer:
        self.requests.append((method, url, dict(headers), body))
        for prefix, answers in self.answers.items():
            if url.startswith(prefix):
                return answers.pop(0) if len(answers) > 1 else answers[0]
        raise AssertionError(f"unexpected request to {url}")

    def form(self, index: int) -> dict[str, str]:
        return dict(parse_qsl((self.requests[index][3] or b"").decode()))


def sts_answer(key: str = "ASIATEMP") -> Answer:
    secret, token = "temp-secret-xyz", "temp-token-abc"
    body = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult><Credentials>
    <AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
    <SessionToken>{token}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>
  </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"""
    return Answer(200, body.encode())


OIDC_URL = "https://oidc.test/idtoken?api-version=2.0"
OIDC = {"ACTIONS_ID_TOKEN_REQUEST_URL": OIDC_URL, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req-token-1"}


# -- AWS credentials -----------------------------------------------------------------


def test_missing_aws_credentials_name_the_variables_and_the_action(tmp_path: Path) -> None:
    creds = AwsCredentials({}, tmp_path, "eu-west-1", lambda _s: None, what="EKS cluster prod")
    with pytest.raises(CredentialsError) as caught:
        creds.get()
    message = caught.value.message
    for word in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "aws-actions/configure-aws-credentials",
        "aws-role-arn",
        "id-token: write",
        "EKS cluster prod",
    ):
        assert word in message


def test_static_aws_credentials_are_masked(tmp_path: Path) -> None:
    masked: list[str] = []
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": "st"}
    creds = AwsCredentials(env, tmp_path, "eu-west-1", masked.append).get()
    assert (creds.access_key, creds.secret_key, creds.token) == (KEY_ID, SECRET, "st")
    assert SECRET in masked and "st" in masked


def test_web_identity_file_is_exchanged_at_the_sts_override(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("web-identity-jwt\n")
    env = {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/deploy",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "token"),
        "AWS_ENDPOINT_URL_STS": "https://sts.test:1234",
        "GITHUB_RUN_ID": "42",
    }
    http = FakeHttp({"https://sts.test:1234/": sts_answer()})
    masked: list[str] = []
    creds = AwsCredentials(env, tmp_path, "eu-west-1", masked.append, http=http).get()
    assert (creds.access_key, creds.secret_key, creds.token) == (
        "ASIATEMP",
        "temp-secret-xyz",
        "temp-token-abc",
    )
    method, url, headers, _ = http.requests[0]
    assert (method, url) == ("POST", "https://sts.test:1234/")
    assert "authorization" not in {h.lower() for h in headers}  # an unsigned call
    form = http.form(0)
    assert form["Action"] == "AssumeRoleWithWebIdentity"
    assert form["WebIdentityToken"] == "web-identity-jwt"
    assert form["RoleArn"] == "arn:aws:iam::123456789012:role/deploy"
    assert form["RoleSessionName"] == "deployer-42"
    assert {"web-identity-jwt", "temp-secret-xyz", "temp-token-abc"} <= set(masked)


def test_web_identity_file_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("x")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/d",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(outside),
    }
    with pytest.raises(
        CredentialsError, match=r"AWS_WEB_IDENTITY_TOKEN_FILE .* outside the workspace"
    ):
        AwsCredentials(env, workspace, "eu-west-1", lambda _s: None, http=FakeHttp({})).get()


def test_role_input_uses_the_runners_oidc_token(tmp_path: Path) -> None:
    http = FakeHttp(
        {
            OIDC_URL: Answer(200, b'{"value": "github-oidc-jwt"}'),
            "https://sts.eu-west-1.amazonaws.com/": sts_answer(),
        }
    )
    role = "arn:aws:iam::123456789012:role/gha"
    creds = AwsCredentials(
        OIDC, tmp_path, "eu-west-1", lambda _s: None, oidc_role_arn=role, http=http
    ).get()
    assert creds.access_key == "ASIATEMP"
    _method, url, headers, _ = http.requests[0]
    assert url == OIDC_URL + "&audience=sts.amazonaws.com"
    assert headers["Authorization"] == "Bearer req-token-1"
    assert http.form(1)["WebIdentityToken"] == "github-oidc-jwt"
    assert http.form(1)["RoleArn"] == role


def test_role_input_without_id_token_permission_says_what_to_add(tmp_path: Path) -> None:
    creds = AwsCredentials(
        {}, tmp_path, "eu-west-1", lambda _s: None, oidc_role_arn="arn:aws:iam::1:role/x"
    )
    with pytest.raises(CredentialsError, match="permissions: id-token: write"):
        creds.get()


def test_kubeconfig_role_is_assumed_with_a_signed_call(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    http = FakeHttp({"https://sts.eu-west-1.amazonaws.com/": sts_answer(key="ASIAROLE")})
    creds = AwsCredentials(
        env,
        tmp_path,
        "eu-west-1",
        lambda _s: None,
        assume_role_arn="arn:aws:iam::1:role/admin",
        http=http,
    ).get()
    assert creds.access_key == "ASIAROLE"
    headers = http.requests[0][2]
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert "/eu-west-1/sts/aws4_request" in headers["authorization"]
    assert http.form(0)["Action"] == "AssumeRole"


def test_sts_refusal_is_a_clear_error_without_the_token(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("secret-jwt-value")
    refusal = b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>"
    http = FakeHttp({"https://sts.eu-west-1.amazonaws.com/": Answer(403, refusal)})
    env = {
        "AWS_ROLE_ARN": "arn:aws:iam::1:role/r",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "t"),
    }
    with pytest.raises(CredentialsError) as caught:
        AwsCredentials(env, tmp_path, "eu-west-1", lambda _s: None, http=http).get()
    assert "AccessDenied: Not authorized" in caught.value.message
    assert "secret-jwt-value" not in caught.value.message


def test_ecr_password_from_get_authorization_token() -> None:
    token = base64.b64encode(b"AWS:ecr-password-123").decode()
    answer = json.dumps({"authorizationData": [{"authorizationToken": token}]}).encode()
    http = FakeHttp({"https://ecr.test/": Answer(200, answer)})
    env = {"AWS_ENDPOINT_URL_ECR": "https://ecr.test"}
    password = ecr_password(
        Credentials(KEY_ID, SECRET), "123456789012", "eu-west-1", env, NOW, http
    )
    assert password == "ecr-password-123"
    _, _, headers, body = http.requests[0]
    assert headers["x-amz-target"] == "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
    assert "/eu-west-1/ecr/aws4_request" in headers["authorization"]
    assert json.loads(body or b"") == {"registryIds": ["123456789012"]}


def test_ecr_registry_hosts() -> None:
    assert ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == (
        "123456789012",
        "eu-west-1",
    )
    assert ecr_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn") == (
        "123456789012",
        "cn-north-1",
    )
    assert ecr_registry("ghcr.io") is None
    assert ecr_registry("public.ecr.aws") is None


# -- plugins -------------------------------------------------------------------------


def test_aws_eks_get_token_entry() -> None:
    plugin = recognise(
        {
            "command": "aws",
            "args": [
                "--region",
                "eu-west-1",
                "eks",
                "get-token",
                "--cluster-name",
                "prod",
                "--output",
                "json",
                "--role-arn",
                "arn:aws:iam::1:role/r",
            ],
            "env": [{"name": "AWS_PROFILE", "value": "x"}],
        }
    )
    assert (plugin.kind, plugin.cluster, plugin.region, plugin.role_arn) == (
        "eks",
        "prod",
        "eu-west-1",
        "arn:aws:iam::1:role/r",
    )


def test_aws_iam_authenticator_entry() -> None:
    plugin = recognise(
        {
            "command": "/usr/local/bin/aws-iam-authenticator",
            "args": ["token", "-i", "prod", "-r", "arn:aws:iam::1:role/r"],
        }
    )
    assert (plugin.kind, plugin.cluster, plugin.role_arn) == (
        "eks",
        "prod",
        "arn:aws:iam::1:role/r",
    )


def test_gke_and_kubelogin_entries() -> None:
    assert (
        recognise({"command": "gke-gcloud-auth-plugin", "provideClusterInfo": True}).kind == "gke"
    )
    plugin = recognise(
        {
            "command": "kubelogin",
            "args": [
                "get-token",
                "--login",
                "workloadidentity",
                "--server-id",
                "6dae42f8-4368-4678-94ff-3960e28e3630",
                "--client-id",
                "c",
                "--tenant-id",
                "t",
            ],
        }
    )
    assert plugin.kind == "aks" and plugin.azure is not None
    assert (plugin.azure.mode, plugin.azure.server_id, plugin.azure.client_id) == (
        "workloadidentity",
        "6dae42f8-4368-4678-94ff-3960e28e3630",
        "c",
    )


@pytest.mark.parametrize("mode", ["azurecli", "devicecode", "msi", "interactive"])
def test_kubelogin_modes_a_container_cannot_use_say_which_to_use(mode: str) -> None:
    with pytest.raises(ValueError, match=f"--login {mode}") as caught:
        recognise({"command": "kubelogin", "args": ["get-token", "-l", mode, "--server-id", "s"]})
    assert "--login workloadidentity" in str(caught.value) and "--login spn" in str(caught.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"command": "sh", "args": ["-c", "touch /tmp/pwned"]},
        {"command": "aws", "args": ["s3", "cp", "x", "y"]},
        {"command": "gcloud", "args": ["config", "config-helper"]},
        {"command": "kubectl-oidc_login", "args": ["get-token"]},
    ],
)
def test_any_other_exec_command_is_refused_naming_it_and_the_supported_ones(
    entry: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="which deployer does not run") as caught:
        recognise(entry)
    assert entry["command"] in str(caught.value)
    assert SUPPORTED in str(caught.value)


def test_auth_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="auth-provider 'oidc'"):
        plugin_for_user({"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}})
    assert plugin_for_user({"token": "static"}) is None


# -- token refresh -------------------------------------------------------------------


def test_token_source_masks_each_token_and_renews_before_expiry() -> None:
    clock = [1000.0]
    made: list[str] = []

    def fetch() -> tuple[str, float]:
        made.append(f"token-{len(made)}")
        return made[-1], clock[0] + 900

    masked: list[str] = []
    source = TokenSource(fetch, masked.append, margin=300, clock=lambda: clock[0])
    from kubernetes.client import Configuration

    conf = Configuration()
    source.install(conf)
    assert conf.get_api_key_with_prefix("BearerToken") == "Bearer token-0"
    clock[0] += 500  # 400 s left: still good
    assert conf.get_api_key_with_prefix("BearerToken") == "Bearer token-0"
    clock[0] += 200  # 200 s left: renewed before the next request
    assert conf.get_api_key_with_prefix("BearerToken") == "Bearer token-1"
    assert masked == ["token-0", "token-1"]


def test_eks_token_source_renews_across_a_long_rollout(tmp_path: Path) -> None:
    """A rollout longer than an EKS token's 14 minutes keeps sending a valid token."""
    clock = [NOW]
    env = {
        "INPUT_IMAGE": "ghcr.io/a/b",
        "INPUT_BUILD": "false",
        "GITHUB_WORKSPACE": str(tmp_path),
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "eu-west-1",
    }
    config = load_config(env)
    plugin = recognise({"command": "aws", "args": ["eks", "get-token", "--cluster-name", "prod"]})
    source = token_source(plugin, config, lambda _s: None, clock=lambda: clock[0])
    first = source.token()
    clock[0] += 20 * 60
    second = source.token()
    assert first != second

    def signed_at(token: str) -> str:
        encoded = token.removeprefix("k8s-aws-v1.")
        url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        return parse_qs(urlsplit(url).query)["X-Amz-Date"][0]

    assert signed_at(second) == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW + 20 * 60))


# -- Azure -------------------------------------------------------------------------------


def test_azure_spn_client_credentials(tmp_path: Path) -> None:
    http = FakeHttp(
        {"https://login.test/": Answer(200, b'{"access_token": "aad-token", "expires_in": 3599}')}
    )
    env = {
        "AZURE_CLIENT_ID": "cid",
        "AZURE_TENANT_ID": "tid",
        "AZURE_CLIENT_SECRET": "csecret",
        "AZURE_AUTHORITY_HOST": "https://login.test/",
    }
    masked: list[str] = []
    token, expires = azure_token(
        AzureLogin("spn", "server-app"), env, tmp_path, masked.append, http, clock=lambda: NOW
    )
    assert (token, expires) == ("aad-token", NOW + 3599)
    assert http.requests[0][1] == "https://login.test/tid/oauth2/v2.0/token"
    form = http.form(0)
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "scope": "server-app/.default",
        "client_secret": "csecret",
    }
    assert "aad-token" in masked


def test_azure_workload_identity_with_the_runners_oidc_token(tmp_path: Path) -> None:
    http = FakeHttp(
        {
            OIDC_URL: Answer(200, b'{"value": "gh-jwt"}'),
            "https://login.microsoftonline.com/": Answer(
                200, b'{"access_token": "aad-token", "expires_in": 3599}'
            ),
        }
    )
    env = {"AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid", **OIDC}
    azure_token(AzureLogin("workloadidentity", "srv"), env, tmp_path, lambda _s: None, http)
    assert http.requests[0][1].endswith("&audience=api%3A%2F%2FAzureADTokenExchange")
    form = http.form(1)
    assert form["client_assertion"] == "gh-jwt"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form


def test_azure_refusal_names_the_error_not_the_secret(tmp_path: Path) -> None:
    refusal = b'{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\\r\\nTrace ID: x"}'
    http = FakeHttp({"https://login.microsoftonline.com/": Answer(401, refusal)})
    env = {
        "AZURE_CLIENT_ID": "cid",
        "AZURE_TENANT_ID": "tid",
        "AZURE_CLIENT_SECRET": "csecret-value",
    }
    with pytest.raises(CredentialsError) as caught:
        azure_token(AzureLogin("spn", "srv"), env, tmp_path, lambda _s: None, http)
    assert "invalid_client: AADSTS7000215" in caught.value.message
    assert "csecret-value" not in caught.value.message


def test_azure_without_ids_names_the_variables(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="AZURE_CLIENT_ID and AZURE_TENANT_ID"):
        azure_token(AzureLogin("spn", "srv"), {}, tmp_path, lambda _s: None, FakeHttp({}))


# -- Google ------------------------------------------------------------------------------


def test_google_without_credentials_names_the_auth_action(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="google-github-actions/auth"):
        google_token({}, tmp_path, lambda _s: None)


def test_google_executable_credential_source_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    creds = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"executable": {"command": f"touch {marker}"}},
    }
    (tmp_path / "gha-creds.json").write_text(json.dumps(creds))
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "gha-creds.json"),
        "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1",
    }
    with pytest.raises(CredentialsError, match="executable"):
        google_token(env, tmp_path, lambda _s: None)
    assert not marker.exists()


def test_google_credentials_outside_the_workspace_are_refused(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text("{}")
    (tmp_path / "ws").mkdir()
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "key.json")}
    with pytest.raises(CredentialsError, match="outside the workspace"):
        google_token(env, tmp_path / "ws", lambda _s: None)


# -- the registry login ----------------------------------------------------------------


def _config(tmp_path: Path, image: str, **env: str) -> Any:
    base = {"INPUT_IMAGE": image, "GITHUB_WORKSPACE": str(tmp_path), "INPUT_BUILD": "false"}
    return load_config({**base, **env})


def test_ecr_image_without_password_logs_in_as_aws(tmp_path: Path) -> None:
    token = base64.b64encode(b"AWS:ecr-pass-456").decode()
    http = FakeHttp(
        {
            "https://ecr.test/": Answer(
                200, json.dumps({"authorizationData": [{"authorizationToken": token}]}).encode()
            )
        }
    )
    config = _config(
        tmp_path,
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web",
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_ENDPOINT_URL_ECR="https://ecr.test",
    )
    masked: list[str] = []
    logged_in = registry_login(config, masked.append, http)
    assert logged_in.registry_username == "AWS"
    assert logged_in.registry_password.get_secret_value() == "ecr-pass-456"
    assert "ecr-pass-456" in masked
    assert config.registry_password is None  # a new Config; the input one is untouched


def test_ecr_image_without_any_credentials_says_what_to_set(tmp_path: Path) -> None:
    config = _config(tmp_path, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web")
    with pytest.raises(CredentialsError, match="aws-actions/configure-aws-credentials"):
        registry_login(config, lambda _s: None, FakeHttp({}))


def test_a_given_password_or_another_registry_is_left_alone(tmp_path: Path) -> None:
    given = _config(
        tmp_path,
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web",
        **{"INPUT_REGISTRY-USERNAME": "AWS", "INPUT_REGISTRY-PASSWORD": "pw"},
    )
    assert registry_login(given, lambda _s: None, FakeHttp({})) is given
    ghcr = _config(
        tmp_path, "ghcr.io/acme/web", AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET
    )
    assert registry_login(ghcr, lambda _s: None, FakeHttp({})) is ghcr


# -- the kubeconfig input and KUBECONFIG ---------------------------------------------------


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "clusters": [
                {
                    "name": "c",
                    "cluster": cluster
                    or {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Zm9v"},
                }
            ],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


def _load(tmp_path: Path, text: str) -> Any:
    return load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(tmp_path),
            "INPUT_KUBECONFIG": text,
        }
    )


def test_an_unknown_exec_plugin_in_the_input_is_an_input_error(tmp_path: Path) -> None:
    text = kubeconfig({"exec": {"command": "sh", "args": ["-c", f"touch {tmp_path}/ran"]}})
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    [problem] = caught.value.problems
    assert problem.input == "kubeconfig"
    assert "credential plugin 'sh'" in problem.problem and SUPPORTED in problem.problem
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("user", "tokenFile"),
        ("user", "client-key"),
        ("user", "client-certificate"),
        ("cluster", "certificate-authority"),
    ],
)
def test_file_references_in_the_input_are_refused(tmp_path: Path, where: str, key: str) -> None:
    """``tokenFile: /etc/hostname`` used to become the bearer token."""
    user: dict[str, Any] = {"token": "t"}
    cluster: dict[str, Any] = {"server": "https://127.0.0.1:6443"}
    (user if where == "user" else cluster)[key] = "/etc/hostname"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, kubeconfig(user, cluster))
    assert f"names a file ({key})" in caught.value.problems[0].problem


def test_token_file_is_allowed_in_a_kubeconfig_file(tmp_path: Path) -> None:
    from deployer.cluster import connect

    (tmp_path / "token").write_text("file-token-1")
    path = tmp_path / "config"
    path.write_text(kubeconfig({"tokenFile": "token"}))  # relative to the file, as kubectl
    config = load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(tmp_path),
            "KUBECONFIG": str(path),
        }
    )
    api, _ = connect(config)
    assert api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer file-token-1"


def test_an_exec_command_in_kubeconfig_file_is_never_run(tmp_path: Path) -> None:
    """The client library ran it while loading; now it is refused, nothing runs."""
    from deployer.cluster import connect
    from deployer.errors import ClusterError

    marker = tmp_path / "ran"
    path = tmp_path / "config"
    path.write_text(
        kubeconfig(
            {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": "sh",
                    "args": ["-c", f"touch {marker}"],
                }
            }
        )
    )
    config = load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(tmp_path),
            "KUBECONFIG": str(path),
        }
    )
    with pytest.raises(ClusterError) as caught:
        connect(config)
    assert f"KUBECONFIG ({path})" in caught.value.message and "'sh'" in caught.value.message
    assert not marker.exists()


def test_eks_kubeconfig_without_aws_credentials_fails_before_any_request(tmp_path: Path) -> None:
    from deployer.cluster import connect

    text = kubeconfig(
        {
            "exec": {
                "command": "aws",
                "args": ["--region", "eu-west-1", "eks", "get-token", "--cluster-name", "prod"],
            }
        }
    )
    with pytest.raises(CredentialsError, match="AWS_ACCESS_KEY_ID"):
        connect(_load(tmp_path, text))


def test_eks_kubeconfig_connects_with_a_masked_token(tmp_path: Path) -> None:
    from deployer.cluster import connect

    text = kubeconfig(
        {
            "exec": {
                "command": "aws",
                "args": ["--region", "eu-west-1", "eks", "get-token", "--cluster-name", "prod"],
            }
        }
    )
    config = load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(tmp_path),
            "INPUT_KUBECONFIG": text,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }
    )
    out = io.StringIO()
    api, _ = connect(config, ActionsIO(out, {}))
    header = api.configuration.get_api_key_with_prefix("BearerToken")
    assert header.startswith("Bearer k8s-aws-v1.")
    assert f"::add-mask::{header.removeprefix('Bearer ')}" in out.getvalue().splitlines()


def test_server_url_credentials_are_masked_and_kept_out_of_errors(tmp_path: Path) -> None:
    from deployer.cluster import DEPLOYMENTS, ApiTransport, Kube, connect
    from deployer.errors import ClusterError
    from deployer.pipeline import mask_secrets

    text = kubeconfig({"token": "t0k3n-value"}, {"server": "https://admin:s3rver-pass@127.0.0.1:1"})
    env = {
        "INPUT_IMAGE": "ghcr.io/a/b",
        "INPUT_BUILD": "false",
        "GITHUB_WORKSPACE": str(tmp_path),
        "INPUT_KUBECONFIG": text,
    }
    out = io.StringIO()
    mask_secrets(ActionsIO(out, {}), env)
    assert "::add-mask::s3rver-pass" in out.getvalue().splitlines()
    api, _ = connect(load_config(env))
    with pytest.raises(ClusterError) as caught:
        Kube(ApiTransport(api), deadline=time.monotonic() + 2, backoff=0.01).request(
            "GET", DEPLOYMENTS, verb="list", namespace="x"
        )
    assert "s3rver-pass" not in caught.value.message and "admin:" not in caught.value.message
    assert "https://127.0.0.1:1" in caught.value.message


def test_kubeconfig_from_the_environment_is_masked_like_the_input(tmp_path: Path) -> None:
    from deployer.pipeline import mask_secrets

    key = base64.b64encode(b"-----BEGIN KEY-----\nsecret-key-body\n-----END KEY-----\n").decode()
    path = tmp_path / "config"
    path.write_text(kubeconfig({"token": "env-kubeconfig-token", "client-key-data": key}))
    out = io.StringIO()
    mask_secrets(ActionsIO(out, {}), {"KUBECONFIG": str(path)})
    masks = out.getvalue().splitlines()
    assert "::add-mask::env-kubeconfig-token" in masks
    assert f"::add-mask::{key}" in masks
    assert "::add-mask::secret-key-body" in masks


def test_kubeconfig_from_the_environment_load_error_is_redacted(tmp_path: Path) -> None:
    from deployer.cluster import connect
    from deployer.errors import ClusterError

    path = tmp_path / "config"
    path.write_text(
        kubeconfig({"token": "t", "client-certificate-data": "not-base64-env-secret-123"})
    )
    config = load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(tmp_path),
            "KUBECONFIG": str(path),
        }
    )
    with pytest.raises(ClusterError) as caught:
        connect(config)
    assert "KUBECONFIG" in caught.value.message
    assert "env-secret-123" not in caught.value.message


def test_insecure_skip_tls_verify_warns_once_in_log_and_summary(tmp_path: Path) -> None:
    from deployer.cluster import connect

    text = kubeconfig(
        {"token": "t"}, {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
    )
    summary = tmp_path / "summary"
    summary.write_text("")
    out = io.StringIO()
    connect(_load(tmp_path, text), ActionsIO(out, {"GITHUB_STEP_SUMMARY": str(summary)}))
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("::warning")]
    assert len(warnings) == 1 and "insecure-skip-tls-verify" in warnings[0]
    assert summary.read_text().count("insecure-skip-tls-verify") == 1


def test_cloud_env_never_shows_its_values() -> None:
    env = CloudEnv.from_environ({"AWS_SECRET_ACCESS_KEY": "hidden-value", "PATH": "/bin"})
    assert "hidden-value" not in repr(env)
    assert dict(env) == {"AWS_SECRET_ACCESS_KEY": "hidden-value"}


def test_mask_secrets_masks_cloud_secrets_of_the_environment() -> None:
    from deployer.pipeline import mask_secrets

    out = io.StringIO()
    mask_secrets(
        ActionsIO(out, {}),
        {
            "AWS_SECRET_ACCESS_KEY": "aws-secret-1",
            "AWS_SESSION_TOKEN": "aws-session-1",
            "AZURE_CLIENT_SECRET": "az-secret-1",
        },
    )
    masks = out.getvalue().splitlines()
    for value in ("aws-secret-1", "aws-session-1", "az-secret-1"):
        assert f"::add-mask::{value}" in masks


def test_role_arn_input_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, "ghcr.io/a/b", **{"INPUT_AWS-ROLE-ARN": "my-role"})
    assert caught.value.problems[0].input == "aws-role-arn"
    ok = _config(
        tmp_path, "ghcr.io/a/b", **{"INPUT_AWS-ROLE-ARN": "arn:aws:iam::123456789012:role/gha"}
    )
    assert ok.aws_role_arn == "arn:aws:iam::123456789012:role/gha"


def test_kubeconfig_lists_are_merged_as_kubectl_does(tmp_path: Path) -> None:
    """KUBECONFIG=a:b: the first file's current-context, each name from its first file."""
    from deployer.cluster import connect

    first = yaml.safe_load(kubeconfig({"token": "first-token"}))
    first["users"][0]["name"] = "other"  # context x's user 'u' comes from the second file
    second = yaml.safe_load(kubeconfig({"token": "second-token"}))
    second["current-context"] = "y"
    (tmp_path / "a").write_text(yaml.safe_dump(first))
    (tmp_path / "b").write_text(yaml.safe_dump(second))
    paths = f"{tmp_path / 'a'}:{tmp_path / 'missing'}:{tmp_path / 'b'}"
    config = load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(tmp_path),
            "KUBECONFIG": paths,
        }
    )
    api, _ = connect(config)
    assert api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer second-token"


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    exec_entry=st.dictionaries(
        st.sampled_from(["command", "args", "env", "apiVersion", "provideClusterInfo"]),
        _VALUES,
    )
    | _VALUES,
    command=st.sampled_from(
        ["aws", "aws-iam-authenticator", "kubelogin", "gke-gcloud-auth-plugin", "sh"]
    ),
)
def test_any_exec_entry_is_a_plugin_or_a_value_error(exec_entry: Any, command: str) -> None:
    """Whatever the exec entry holds, checking it never raises anything but ValueError."""
    if isinstance(exec_entry, dict) and "command" not in exec_entry:
        exec_entry["command"] = command
    text = kubeconfig({"exec": exec_entry})
    try:
        from deployer.kubeconfig import check_input_kubeconfig

        check_input_kubeconfig(text)
    except ValueError:
        pass


def test_an_ecr_push_without_aws_credentials_stops_before_the_build(tmp_path: Path) -> None:
    """The pipeline fills the registry login before the build; nothing is built without one."""
    from deployer.pipeline import run
    from tests.unit.test_actions import commands
    from tests.unit.test_pipeline import FakeEngine

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {
        "GITHUB_WORKSPACE": str(tmp_path),
        "INPUT_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web",
    }
    engine = FakeEngine()
    out = io.StringIO()
    assert run(env, out, make_docker=lambda _c: engine) == 1
    [error] = [c for c in commands(out.getvalue()) if c.startswith("::error")]
    assert "ECR registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com" in error
    assert "aws-actions/configure-aws-credentials" in error
    assert not [call for call in engine.calls if call[0] == "build"]


def test_every_file_of_a_kubeconfig_list_is_masked(tmp_path: Path) -> None:
    from deployer.pipeline import mask_secrets

    (tmp_path / "a").write_text(kubeconfig({"token": "token-of-file-a"}))
    second = yaml.safe_load(kubeconfig({"token": "token-of-file-b"}))
    second["users"][0]["name"] = "v"
    (tmp_path / "b").write_text(yaml.safe_dump(second))
    out = io.StringIO()
    mask_secrets(ActionsIO(out, {}), {"KUBECONFIG": f"{tmp_path / 'a'}:{tmp_path / 'b'}"})
    masks = out.getvalue().splitlines()
    assert "::add-mask::token-of-file-a" in masks
    assert "::add-mask::token-of-file-b" in masks


def test_a_cloud_token_is_masked_before_anything_and_leaks_nowhere(tmp_path: Path) -> None:
    """A run whose EKS token reaches the API server (here: nothing listens) and fails."""
    from deployer.pipeline import run
    from tests.unit.test_secrets import assert_no_leaks

    files = tmp_path / "files"
    files.mkdir()
    (files / "output").touch()
    (files / "summary").touch()
    text = kubeconfig(
        {"exec": {"command": "aws", "args": ["eks", "get-token", "--cluster-name", "prod"]}},
        {"server": "https://127.0.0.1:1", "certificate-authority-data": "Zm9v"},
    )
    env = {
        "GITHUB_WORKSPACE": str(tmp_path),
        "GITHUB_OUTPUT": str(files / "output"),
        "GITHUB_STEP_SUMMARY": str(files / "summary"),
        "INPUT_IMAGE": "ghcr.io/acme/web",
        "INPUT_BUILD": "false",
        "INPUT_DEPLOYMENTS": "web",
        "INPUT_TIMEOUT": "3s",
        "INPUT_KUBECONFIG": text,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": "session-token-value",
        "AWS_REGION": "eu-west-1",
    }
    out = io.StringIO()
    assert run(env, out) == 1
    log = out.getvalue()
    tokens = [
        line.removeprefix("::add-mask::")
        for line in log.splitlines()
        if line.startswith("::add-mask::k8s-aws-v1.")
    ]
    assert tokens, log
    texts = {
        "log": "\n".join(line for line in log.splitlines() if not line.startswith("::add-mask::")),
        "output": (files / "output").read_text(),
        "summary": (files / "summary").read_text(),
    }
    secrets = {"EKS token": tokens[0], "secret key": SECRET, "session token": "session-token-value"}
    assert_no_leaks(texts, secrets)
    assert "::error" in texts["log"]
