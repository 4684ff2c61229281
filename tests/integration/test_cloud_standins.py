"""The cloud stand-ins judge credentials like EKS, GKE and AKS, through the real API server.

Tokens are made here the way the clouds' own tools make them (botocore, the AWS
CLI's signer, as a test-only oracle; service-account assertions signed with the
key file's private key; Entra's client-credentials grant), sent to the test API
server as bearer tokens, and the API server's answer is checked: who it says
the caller is (SelfSubjectReview) and what RBAC lets that caller do. Wrongly
signed, expired or foreign tokens must get 401, as from the real clouds.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.conftest import need_service
from tests.integration.cloud import (
    aws_web_identity_env,
    can_i,
    cloud_settings,
    eks_token_botocore,
    gcp_env,
    github_oidc_token,
    http,
    whoami,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return cloud_settings()


def _eks(env: dict[str, str], **kwargs: Any) -> str:
    kwargs.setdefault("cluster", env["TEST_EKS_CLUSTER"])
    kwargs.setdefault("region", env["TEST_AWS_REGION"])
    return eks_token_botocore(
        kwargs.pop("access_key", env["TEST_AWS_ACCESS_KEY_ID"]),
        kwargs.pop("secret_key", env["TEST_AWS_SECRET_ACCESS_KEY"]),
        **kwargs,
    )


def _user(token: str) -> dict[str, Any]:
    status, body = whoami(token)
    assert status == 201, (status, body)
    return dict(body["status"]["userInfo"])


def _refused(token: str) -> None:
    status, body = whoami(token)
    assert status == 401, (status, body)


def _assert_restricted_deployer(token: str, namespace: str) -> None:
    """RBAC gives the cloud identity the restricted Role, in the test namespace only."""
    assert can_i(token, "patch", "deployments", namespace)
    assert can_i(token, "watch", "pods", namespace, group="")
    assert not can_i(token, "create", "deployments", namespace)
    assert not can_i(token, "patch", "deployments", "default")


# -- EKS ------------------------------------------------------------------------------------


def test_eks_token_presigned_by_botocore_is_the_restricted_deployer(env: dict[str, str]) -> None:
    token = _eks(env)
    user = _user(token)
    assert user["username"] == "eks:deployer"
    assert env["TEST_CLOUD_GROUP"] in user["groups"]
    assert user["extra"]["arn"] == [f"arn:aws:iam::{env['TEST_AWS_ACCOUNT_ID']}:user/deployer"]
    _assert_restricted_deployer(token, env["TEST_NAMESPACE"])


def test_eks_token_for_the_global_sts_endpoint_is_accepted(env: dict[str, str]) -> None:
    token = _eks(env, region="us-east-1", host="sts.amazonaws.com")
    assert _user(token)["username"] == "eks:deployer"


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("signed with another secret key", {"secret_key": "A" * 40}),
        ("unknown access key id", {"access_key": "AKIAIOSFODNN7EXAMPLE"}),
        ("made for another cluster", {"cluster": "someone-elses-cluster"}),
        ("x-k8s-aws-id header not signed", {"sign_cluster_header": False}),
        ("expiry longer than 60 s", {"expires": 900}),
        ("not an STS host", {"host": "sts.eu-west-1.amazonaws.com.example.net"}),
        ("region of another host", {"host": "sts.us-west-2.amazonaws.com", "region": "us-west-2"}),
        ("session token with a long-term key", {"session_token": "FwoGZXIvYXdzEXAMPLE"}),
    ],
)
def test_eks_token_refused(env: dict[str, str], case: str, changes: dict[str, Any]) -> None:
    _refused(_eks(env, **changes))


def test_eks_token_expires_15_minutes_after_signing(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.auth

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda: now - dt.timedelta(minutes=14)
    )
    assert _user(_eks(env))["username"] == "eks:deployer"
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda: now - dt.timedelta(minutes=16)
    )
    _refused(_eks(env))


def test_eks_token_must_be_unpadded_base64url_of_the_url(env: dict[str, str]) -> None:
    token = _eks(env)
    url = base64.urlsafe_b64decode(token.removeprefix("k8s-aws-v1.") + "==")
    _refused("k8s-aws-v1." + base64.b64encode(url).decode())  # standard alphabet, padded
    tampered = url.decode().replace("Version=2011-06-15", "Version=2011-06-15&X-Amz-Expires=60")
    _refused("k8s-aws-v1." + base64.urlsafe_b64encode(tampered.encode()).decode().rstrip("="))


def _botocore_client(service: str, env: dict[str, str], **credentials: str | None) -> Any:
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = env["TEST_STS_ENDPOINT" if service == "sts" else "TEST_ECR_ENDPOINT"]
    session = botocore.session.get_session()
    if not credentials:
        return session.create_client(
            service,
            region_name=env["TEST_AWS_REGION"],
            endpoint_url=endpoint,
            config=Config(signature_version=UNSIGNED),
        )
    return session.create_client(
        service, region_name=env["TEST_AWS_REGION"], endpoint_url=endpoint, **credentials
    )


def _assume_role_with_web_identity(env: dict[str, str], audience: str) -> dict[str, Any]:
    sts = _botocore_client("sts", env)
    answer = sts.assume_role_with_web_identity(
        RoleArn=env["TEST_AWS_ROLE_ARN"],
        RoleSessionName="github-actions-1",
        WebIdentityToken=github_oidc_token(audience),
    )
    return dict(answer)


def test_runner_oidc_token_gives_role_credentials_for_eks_and_ecr(env: dict[str, str]) -> None:
    answer = _assume_role_with_web_identity(env, "sts.amazonaws.com")
    role_name = env["TEST_AWS_ROLE_ARN"].rsplit("/", 1)[1]
    assert answer["AssumedRoleUser"]["Arn"].endswith(f":assumed-role/{role_name}/github-actions-1")
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert creds["Expiration"].timestamp() > time.time() + 3000

    temporary = {
        "access_key": creds["AccessKeyId"],
        "secret_key": creds["SecretAccessKey"],
        "session_token": creds["SessionToken"],
    }
    user = _user(_eks(env, **temporary))
    assert user["username"] == f"eks:{role_name}:github-actions-1"
    _refused(_eks(env, **{**temporary, "session_token": None}))

    ecr = _botocore_client(
        "ecr",
        env,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    data = ecr.get_authorization_token()["authorizationData"][0]
    user_name, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user_name == env["TEST_ECR_REGISTRY_PASSWORD_USER"] == "AWS"
    # The registry takes that password: an ECR-style login really works.
    registry = need_service("TEST_REGISTRY")["TEST_REGISTRY"]
    status, _ = http(
        f"http://{registry}/v2/",
        headers={"Authorization": "Basic " + data["authorizationToken"]},
    )
    assert status == 200
    status, _ = http(
        f"http://{registry}/v2/",
        headers={
            "Authorization": "Basic " + base64.b64encode(b"AWS:" + password[::-1].encode()).decode()
        },
    )
    assert status == 401


def test_botocore_web_identity_token_file_flow_gets_credentials_eks_accepts(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's own AWS_WEB_IDENTITY_TOKEN_FILE provider, through AWS_ENDPOINT_URL_STS."""
    import botocore.session

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name, value in aws_web_identity_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    credentials = botocore.session.get_session().get_credentials().get_frozen_credentials()
    assert credentials.access_key.startswith("ASIA")
    token = _eks(
        env,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
    )
    assert _user(token)["username"].startswith(f"eks:{env['TEST_AWS_ROLE_ARN'].rsplit('/', 1)[1]}:")


def test_web_identity_token_for_another_audience_is_refused(env: dict[str, str]) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        _assume_role_with_web_identity(env, "api://AzureADTokenExchange")
    assert refused.value.response["Error"]["Code"] == "InvalidIdentityToken"


def test_ecr_refuses_a_request_signed_with_another_key(env: dict[str, str]) -> None:
    from botocore.exceptions import ClientError

    ecr = _botocore_client(
        "ecr", env, aws_access_key_id=env["TEST_AWS_ACCESS_KEY_ID"], aws_secret_access_key="B" * 40
    )
    with pytest.raises(ClientError) as refused:
        ecr.get_authorization_token()
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_oidc_endpoint_needs_the_request_token(env: dict[str, str]) -> None:
    url = env["TEST_OIDC_REQUEST_URL"] + "&audience=sts.amazonaws.com"
    assert http(url)[0] == 401
    assert http(url, headers={"Authorization": "Bearer not-the-token"})[0] == 401


# -- GKE ------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sa_assertion(key_file: dict[str, Any], private_key: rsa.RSAPrivateKey, **claims: Any) -> str:
    """The JWT-bearer assertion google-auth makes from a service-account key file."""
    now = int(time.time())
    body = {
        "iss": key_file["client_email"],
        "aud": key_file["token_uri"],
        "iat": now,
        "exp": now + 3600,
        "scope": "https://www.googleapis.com/auth/cloud-platform "
        "https://www.googleapis.com/auth/userinfo.email",
        **claims,
    }
    head = _b64url(
        json.dumps({"alg": "RS256", "typ": "JWT", "kid": key_file["private_key_id"]}).encode()
    )
    payload = _b64url(json.dumps(body).encode())
    signature = private_key.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{payload}.{_b64url(signature)}"


def _google_grant(key_file: dict[str, Any], assertion: str) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    status, body = http(key_file["token_uri"], data=urllib.parse.urlencode(form).encode())
    return status, json.loads(body)


def test_gke_service_account_key_gives_an_access_token_the_cluster_accepts(
    env: dict[str, str],
) -> None:
    key_file = json.loads(Path(env["TEST_GCP_CREDENTIALS_FILE"]).read_text())
    assert key_file["type"] == "service_account"
    private_key = serialization.load_pem_private_key(key_file["private_key"].encode(), None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    status, answer = _google_grant(key_file, _sa_assertion(key_file, private_key))
    assert status == 200, answer
    assert answer["token_type"] == "Bearer" and 3000 < answer["expires_in"] <= 3600
    token = answer["access_token"]
    assert _user(token)["username"] == f"gke:{env['TEST_GCP_CLIENT_EMAIL']}"
    _assert_restricted_deployer(token, env["TEST_NAMESPACE"])

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, answer = _google_grant(key_file, _sa_assertion(key_file, other_key))
    assert (status, answer["error"]) == (400, "invalid_grant")
    expired = _sa_assertion(
        key_file, private_key, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600
    )
    assert _google_grant(key_file, expired)[0] == 400
    wrong_audience = _sa_assertion(key_file, private_key, aud="https://oauth2.example.com/token")
    assert _google_grant(key_file, wrong_audience)[0] == 400


def test_gke_refuses_access_tokens_it_did_not_issue(env: dict[str, str]) -> None:
    _refused("ya29.c.b0AXv0zTOmadeUpToken")


def test_gke_workload_identity_federation_file(env: dict[str, str]) -> None:
    """Follow the external_account file as google-auth does: OIDC token, then STS exchange."""
    config = json.loads(Path(env["TEST_GCP_EXTERNAL_ACCOUNT_FILE"]).read_text())
    assert config["type"] == "external_account"
    source = config["credential_source"]
    status, body = http(source["url"], headers=source["headers"])
    assert status == 200
    subject_token = json.loads(body)[source["format"]["subject_token_field_name"]]
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": config["audience"],
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": subject_token,
        "subject_token_type": config["subject_token_type"],
    }
    status, body = http(config["token_url"], data=urllib.parse.urlencode(form).encode())
    assert status == 200, body
    user = _user(json.loads(body)["access_token"])
    assert user["username"].startswith("gke:principal://iam.googleapis.com/projects/")
    # A token for another audience (here AWS's) is not exchanged.
    form["subject_token"] = github_oidc_token("sts.amazonaws.com")
    assert http(config["token_url"], data=urllib.parse.urlencode(form).encode())[0] == 400


# -- AKS ------------------------------------------------------------------------------------


def _entra(env: dict[str, str], **form: str) -> tuple[int, dict[str, Any]]:
    url = f"{env['TEST_AZURE_AUTHORITY_HOST'].rstrip('/')}/{env['TEST_AZURE_TENANT_ID']}/oauth2/v2.0/token"
    fields = {
        "grant_type": "client_credentials",
        "client_id": env["TEST_AZURE_CLIENT_ID"],
        "scope": f"{env['TEST_AZURE_SERVER_ID']}/.default",
        **form,
    }
    status, body = http(url, data=urllib.parse.urlencode(fields).encode())
    return status, json.loads(body)


def test_aks_client_secret_gives_a_token_the_cluster_accepts(env: dict[str, str]) -> None:
    status, answer = _entra(env, client_secret=env["TEST_AZURE_CLIENT_SECRET"])
    assert status == 200, answer
    token = answer["access_token"]
    assert _user(token)["username"] == f"aks:{env['TEST_AZURE_CLIENT_ID']}"
    _assert_restricted_deployer(token, env["TEST_NAMESPACE"])

    status, answer = _entra(env, client_secret="not-the-secret")
    assert (status, answer["error"]) == (401, "invalid_client")
    assert "AADSTS7000215" in answer["error_description"]


def test_aks_runner_oidc_token_as_client_assertion(env: dict[str, str]) -> None:
    jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    status, answer = _entra(
        env,
        client_assertion_type=jwt_bearer,
        client_assertion=github_oidc_token("api://AzureADTokenExchange"),
    )
    assert status == 200, answer
    assert _user(answer["access_token"])["username"] == f"aks:{env['TEST_AZURE_CLIENT_ID']}"
    status, answer = _entra(
        env,
        client_assertion_type=jwt_bearer,
        client_assertion=github_oidc_token("sts.amazonaws.com"),
    )
    assert status == 401, answer


def test_aks_token_for_another_resource_is_refused_by_the_cluster(env: dict[str, str]) -> None:
    status, answer = _entra(
        env,
        client_secret=env["TEST_AZURE_CLIENT_SECRET"],
        scope="https://management.azure.com/.default",
    )
    assert status == 200, answer
    _refused(answer["access_token"])


@pytest.mark.parametrize("kind", ["service_account", "external_account"])
def test_google_auth_library_gets_tokens_the_cluster_accepts(
    env: dict[str, str], kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth (what gke-gcloud-auth-plugin's Application Default Credentials are)
    talks to the stand-ins unchanged, through the files google-github-actions/auth writes."""
    pytest.importorskip("google.auth", reason="google-auth is the product's GKE dependency")
    import google.auth
    import google.auth.transport.requests

    for name, value in gcp_env(tmp_path, kind=kind).items():  # type: ignore[arg-type]
        monkeypatch.setenv(name, value)
    credentials, project = google.auth.default(
        scopes=[
            "https://www.googleapis.com/auth/cloud-platform",
            "https://www.googleapis.com/auth/userinfo.email",
        ]
    )
    credentials.refresh(google.auth.transport.requests.Request())
    assert project == "deployer-test"
    username = _user(credentials.token)["username"]
    if kind == "service_account":
        assert username == f"gke:{env['TEST_GCP_CLIENT_EMAIL']}"
    else:
        assert username.endswith("/subject/" + env["TEST_OIDC_SUBJECT"])


def test_an_ecr_password_pushes_to_the_test_registry(env: dict[str, str], tmp_path: Path) -> None:
    """The password GetAuthorizationToken hands out really pushes (user AWS in the htpasswd)."""
    import uuid

    import docker

    services = need_service("DOCKER_HOST", "TEST_REGISTRY")
    ecr = _botocore_client(
        "ecr",
        env,
        aws_access_key_id=env["TEST_AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["TEST_AWS_SECRET_ACCESS_KEY"],
    )
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    username, _, password = base64.b64decode(token).decode().partition(":")

    (tmp_path / "hello.txt").write_text(f"{uuid.uuid4()}\n")  # a new layer: a real blob upload
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    repository = f"{services['TEST_REGISTRY']}/cloud-standin-ecr"
    client = docker.DockerClient(base_url=services["DOCKER_HOST"], timeout=120)
    image, _ = client.images.build(path=str(tmp_path), tag=f"{repository}:t", rm=True)
    try:
        lines = list(
            client.api.push(
                repository,
                tag="t",
                stream=True,
                decode=True,
                auth_config={"username": username, "password": password},
            )
        )
        assert not [line for line in lines if "error" in line], lines
        assert any(
            str(line.get("aux", {}).get("Digest", "")).startswith("sha256:") for line in lines
        )
        refused = list(
            client.api.push(
                repository,
                tag="t",
                stream=True,
                decode=True,
                auth_config={"username": username, "password": password + "x"},
            )
        )
        assert any("error" in line for line in refused), refused
    finally:
        client.images.remove(image.id, force=True)
        client.close()
