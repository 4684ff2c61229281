"""A kubeconfig never chooses where a credential of the job goes (security audit, issue 17).

A ``KUBECONFIG`` file may lie in the workspace, which a pull request writes. Reading
its file keys only inside the workspace was not enough: the workspace holds the
job's own credential files (``.git/config`` with the checkout token, the files
the auth actions write). And every credential, the tokens the action makes for
EKS, GKE and AKS included, went to whatever ``server`` the kubeconfig named.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from deployer.actions import ActionsIO
from deployer.cluster import connect
from deployer.config import Config
from deployer.errors import ClusterError, ConfigError, CredentialsError
from tests.unit.test_cloud_auth import KEY_ID, SECRET
from tests.unit.test_kubeconfig_trust import eks_exec, job, kubeconfig

CHECKOUT_TOKEN = "ghs_checkoutToken0123456789abcdef"
GIT_CONFIG = (
    "[core]\n\trepositoryformatversion = 0\n"
    '[http "https://github.com/"]\n'
    f"\textraheader = AUTHORIZATION: basic {CHECKOUT_TOKEN}\n"
)
AKS_SERVER_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"


def workspace_with_credentials(tmp_path: Path) -> Path:
    """A workspace as actions/checkout and the auth actions leave it."""
    workspace = tmp_path / "ws"
    (workspace / ".git" / "modules" / "lib").mkdir(parents=True)
    (workspace / ".git" / "config").write_text(GIT_CONFIG)
    (workspace / ".git" / "modules" / "lib" / "config").write_text(GIT_CONFIG)
    (workspace / "gha-creds-0123abcd.json").write_text('{"type": "external_account"}')
    (workspace / "creds").mkdir()
    for name in ("google.json", "aws-token", "azure-token"):
        (workspace / "creds" / name).write_text(f"{name}-secret-value")
    (workspace / "token-link").symlink_to(".git/config")
    return workspace


def file_job(workspace: Path, user: dict[str, Any], cluster: dict[str, Any]) -> Config:
    path = workspace / "kubeconfig"
    path.write_text(kubeconfig(user, cluster))
    return job(
        workspace,
        KUBECONFIG=str(path),
        GOOGLE_APPLICATION_CREDENTIALS=str(workspace / "creds" / "google.json"),
        AWS_WEB_IDENTITY_TOKEN_FILE="creds/aws-token",
        AZURE_FEDERATED_TOKEN_FILE=str(workspace / "creds" / "azure-token"),
    )


# -- (a) a file key may not name a credential file of the job ------------------------------------


@pytest.mark.parametrize(
    ("where", "key", "value", "why"),
    [
        ("user", "tokenFile", ".git/config", "inside .git"),
        ("user", "client-key", ".git/config", "inside .git"),
        ("user", "client-certificate", ".git/modules/lib/config", "inside .git"),
        ("cluster", "certificate-authority", ".git/config", "inside .git"),
        ("user", "tokenFile", "token-link", "inside .git"),
        ("user", "tokenFile", "gha-creds-0123abcd.json", "written by a Google auth action"),
        ("user", "tokenFile", "creds/google.json", "named by GOOGLE_APPLICATION_CREDENTIALS"),
        ("user", "tokenFile", "./creds/aws-token", "named by AWS_WEB_IDENTITY_TOKEN_FILE"),
        ("user", "tokenFile", "creds/azure-token", "named by AZURE_FEDERATED_TOKEN_FILE"),
        ("user", "tokenFile", "kubeconfig", "named by KUBECONFIG"),
    ],
)
def test_a_kubeconfig_file_cannot_send_a_credential_file_of_the_job(
    tmp_path: Path, where: str, key: str, value: str, why: str
) -> None:
    """``tokenFile: .git/config`` (was: the checkout token sent as the bearer token)."""
    workspace = workspace_with_credentials(tmp_path)
    user: dict[str, Any] = {key: value} if where == "user" else {"token": "tok-123456"}
    cluster: dict[str, Any] = {"server": "https://127.0.0.1:6443"}
    if where == "cluster":
        cluster[key] = value
    out = io.StringIO()
    with pytest.raises(ClusterError) as caught:
        connect(file_job(workspace, user, cluster), ActionsIO(out, {}))
    message = caught.value.message
    assert f"{where} '{'u' if where == 'user' else 'c'}' {key} names '{value}'" in message
    assert f"a credential file of the job ({why}" in message
    assert CHECKOUT_TOKEN not in message + out.getvalue()
    assert "secret-value" not in message + out.getvalue()


def test_the_audit_repro_sends_no_checkout_token(tmp_path: Path) -> None:
    """tokenFile: .git/config and server: http://attacker.example (was: a warning only)."""
    workspace = workspace_with_credentials(tmp_path)
    config = file_job(
        workspace, {"tokenFile": ".git/config"}, {"server": "http://attacker.example"}
    )
    with pytest.raises(ClusterError, match="credential file of the job"):
        connect(config, ActionsIO(io.StringIO(), {}))


def test_a_file_of_its_own_in_the_workspace_is_still_read(tmp_path: Path) -> None:
    workspace = workspace_with_credentials(tmp_path)
    (workspace / "deploy-token").write_text("own-token-123456\n")
    config = file_job(workspace, {"tokenFile": "deploy-token"}, {"server": "https://127.0.0.1:1"})
    api, _ = connect(config, ActionsIO(io.StringIO(), {}))
    assert api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer own-token-123456"


# -- (b) no credential over plain http -----------------------------------------------------------

CREDENTIALED_USERS = {
    "token": {"token": "tok-123456"},
    "client certificate": {"client-certificate-data": "Zm9v", "client-key-data": "YmFy"},
    "password": {"username": "admin", "password": "pw-123456"},
    "eks": {"exec": eks_exec()},
    "gke": {"exec": {"command": "gke-gcloud-auth-plugin"}},
}


@pytest.mark.parametrize("user", CREDENTIALED_USERS.values(), ids=CREDENTIALED_USERS.keys())
def test_a_credential_never_goes_over_plain_http(tmp_path: Path, user: dict[str, Any]) -> None:
    """server: http://10.0.0.1:8080 with a credential (was: a warning, and the credential sent)."""
    text = kubeconfig(user, {"server": "http://10.0.0.1:8080"})
    with pytest.raises(ConfigError) as caught:
        job(tmp_path, INPUT_KUBECONFIG=text)
    [problem] = caught.value.problems
    assert problem.input == "kubeconfig"
    assert "is reached over plain http://" in problem.problem
    assert "use the API server's https:// address" in problem.problem
    (tmp_path / "kubeconfig").write_text(text)
    with pytest.raises(ClusterError, match="use the API server's https:// address"):
        connect(job(tmp_path, KUBECONFIG=str(tmp_path / "kubeconfig"), AWS_REGION="eu-west-1"))


def test_plain_http_to_a_loopback_server_is_a_warning(tmp_path: Path) -> None:
    summary = tmp_path / "summary"
    summary.write_text("")
    text = kubeconfig({"token": "tok-123456"}, {"server": "http://127.0.0.1:8080"})
    out = io.StringIO()
    connect(
        job(tmp_path, INPUT_KUBECONFIG=text), ActionsIO(out, {"GITHUB_STEP_SUMMARY": str(summary)})
    )
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("::warning")]
    assert len(warnings) == 1 and "title=Plain HTTP to the API server::" in warnings[0]
    assert "reached over plain http://" in summary.read_text()


def test_plain_http_without_a_credential_is_a_warning(tmp_path: Path) -> None:
    text = kubeconfig({}, {"server": "http://10.0.0.1:8080"})
    out = io.StringIO()
    connect(job(tmp_path, INPUT_KUBECONFIG=text), ActionsIO(out, {}))
    assert "title=Plain HTTP to the API server::" in out.getvalue()


# -- (c) a token the action makes goes only to its cloud's API servers --------------------------


def eks_job(tmp_path: Path, server: str) -> Config:
    return job(
        tmp_path,
        INPUT_KUBECONFIG=kubeconfig({"exec": eks_exec()}, {"server": server}),
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
    )


@pytest.mark.parametrize(
    "server",
    [
        "https://attacker.example",
        "https://0123ABCD.gr7.eu-west-1.eks.amazonaws.com.attacker.example",
        "https://eks.amazonaws.com",
        "https://10.0.0.1",
    ],
)
def test_an_eks_token_goes_only_to_an_eks_endpoint(tmp_path: Path, server: str) -> None:
    """The presigned STS token (was: sent to any server the kubeconfig named)."""
    with pytest.raises(ConfigError) as caught:
        eks_job(tmp_path, server)
    assert "goes only to an EKS API server (https://….eks.amazonaws.com)" in str(caught.value)
    (tmp_path / "kubeconfig").write_text(kubeconfig({"exec": eks_exec()}, {"server": server}))
    config = job(
        tmp_path,
        KUBECONFIG=str(tmp_path / "kubeconfig"),
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
    )
    with pytest.raises(ClusterError, match=r"goes only to an EKS API server"):
        connect(config)


@pytest.mark.parametrize(
    "server",
    [
        "https://0123ABCD.gr7.eu-west-1.eks.amazonaws.com",
        "https://0123abcd.yl4.cn-north-1.eks.amazonaws.com.cn",
        "https://127.0.0.1:6443",  # the tests' stand-in
    ],
)
def test_an_eks_endpoint_gets_its_token(tmp_path: Path, server: str) -> None:
    api, _ = connect(eks_job(tmp_path, server), ActionsIO(io.StringIO(), {}))
    assert api.configuration.get_api_key_with_prefix("BearerToken").startswith("Bearer k8s-aws-v1.")


def aks_user(server_id: str = AKS_SERVER_ID) -> dict[str, Any]:
    args = ["get-token", "--login", "spn", "--server-id", server_id, "--tenant-id", "t"]
    return {"exec": {"command": "kubelogin", "args": args}}


@pytest.mark.parametrize(
    "server", ["https://attacker.example", "https://x.azmk8s.io.attacker.example"]
)
def test_an_aks_token_goes_only_to_an_aks_endpoint(tmp_path: Path, server: str) -> None:
    with pytest.raises(ConfigError) as caught:
        job(tmp_path, INPUT_KUBECONFIG=kubeconfig(aks_user(), {"server": server}))
    assert "goes only to an AKS API server (https://….azmk8s.io, or Azure China's or " in str(
        caught.value
    )


def test_an_aks_token_is_only_for_aks(tmp_path: Path) -> None:
    """--server-id chose the token's audience (was: e.g. Microsoft Graph, for any server)."""
    server = {"server": "https://prod-dns-0123.hcp.westeurope.azmk8s.io:443"}
    for server_id in ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"):
        with pytest.raises(ConfigError) as caught:
            job(tmp_path, INPUT_KUBECONFIG=kubeconfig(aks_user(server_id), server))
        assert f"--server-id must be AKS's {AKS_SERVER_ID}" in str(caught.value)
        assert "graph" not in str(caught.value).lower()


@pytest.mark.parametrize(
    "server",
    [
        "https://prod-dns-0123.hcp.westeurope.azmk8s.io:443",
        "https://web-rg-19da35-90efab95.hcp.chinaeast2.cx.prod.service.azk8s.cn:443",
        "https://web-rg-19da35-90efab95.hcp.usgovvirginia.cx.aks.containerservice.azure.us:443",
        "https://127.0.0.1:6443",
    ],
)
def test_an_aks_endpoint_is_accepted(tmp_path: Path, server: str) -> None:
    config = job(tmp_path, INPUT_KUBECONFIG=kubeconfig(aks_user(), {"server": server}))
    with pytest.raises(CredentialsError, match="No Azure credentials"):  # past the check
        connect(config)


PLUGIN_USERS = {
    "eks": ({"exec": eks_exec()}, "https://0123abcd.gr7.eu-west-1.eks.amazonaws.com"),
    "aks": (aks_user(), "https://prod-dns-0123.hcp.westeurope.azmk8s.io:443"),
    "gke": ({"exec": {"command": "gke-gcloud-auth-plugin"}}, "https://34.1.2.3"),
}


@pytest.mark.parametrize("kind", PLUGIN_USERS)
@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("proxy-url", "http://proxy.attacker.example:3128", "sets proxy-url"),
        ("insecure-skip-tls-verify", True, "turns TLS verification off"),
    ],
)
def test_a_token_the_action_makes_takes_no_path_the_kubeconfig_chooses(
    tmp_path: Path, kind: str, field: str, value: Any, said: str
) -> None:
    """The host rule held, but a proxy-url of the attacker's (with its own CA in
    certificate-authority-data), or TLS off, still put the token in its hands."""
    user, server = PLUGIN_USERS[kind]
    cluster = {"server": server, field: value, "certificate-authority-data": "Zm9v"}
    with pytest.raises(ConfigError) as caught:
        job(tmp_path, INPUT_KUBECONFIG=kubeconfig(user, cluster))
    message = str(caught.value)
    assert said in message and "a token the action makes" in message
    assert "attacker" not in message


def test_a_loopback_proxy_is_accepted(tmp_path: Path) -> None:
    """As for a GKE private cluster reached through an IAP tunnel on the runner."""
    user, server = PLUGIN_USERS["gke"]
    cluster = {"server": server, "proxy-url": "http://localhost:8888"}
    job(tmp_path, INPUT_KUBECONFIG=kubeconfig(user, cluster))
