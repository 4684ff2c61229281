"""Azure: an Entra ID access token for an AKS cluster, as ``kubelogin get-token`` makes it.

Client-credentials grant for scope ``<server-id>/.default`` at
``$AZURE_AUTHORITY_HOST/<tenant>/oauth2/v2.0/token``, authenticated by a client
secret (``--login spn``) or a client assertion (``--login workloadidentity``): the
token in AZURE_FEDERATED_TOKEN_FILE, else the runner's OIDC token with audience
``api://AzureADTokenExchange``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from deployer.cloud import workspace_file
from deployer.cloud.http import Http, checked_url, send
from deployer.cloud.oidc import AZURE_AUDIENCE, github_id_token, has_id_token
from deployer.errors import CredentialsError

__all__ = ["AUTHORITIES", "AzureLogin", "access_token"]

AUTHORITIES = {
    "azurepubliccloud": "https://login.microsoftonline.com/",
    "azurechinacloud": "https://login.chinacloudapi.cn/",
    "azureusgovernmentcloud": "https://login.microsoftonline.us/",
}


class AzureLogin:
    """What a kubelogin entry says: mode, server id, and its client/tenant/secret if any."""

    def __init__(
        self,
        mode: str,
        server_id: str,
        client_id: str = "",
        tenant_id: str = "",
        environment: str = "",
        client_secret: str = "",
    ) -> None:
        self.mode = mode
        self.server_id = server_id
        self.client_id = client_id
        self.tenant_id = tenant_id
        self.environment = environment
        self.client_secret = client_secret

    def __repr__(self) -> str:
        return f"AzureLogin(mode={self.mode!r}, server_id={self.server_id!r})"


def _missing(names: str) -> CredentialsError:
    return CredentialsError(
        f"No Azure credentials for the AKS cluster: set {names} in the job's environment "
        "(env: at the job or step), and for workload identity give the job "
        "`permissions: id-token: write`"
    )


def _credential(
    login: AzureLogin,
    env: Mapping[str, str],
    workspace: Path,
    mask: Callable[[str], None],
    http: Http,
) -> dict[str, str]:
    """The form fields that prove who we are: a client secret (spn) or an assertion."""
    if login.mode == "spn":
        secret = (
            login.client_secret
            or env.get("AZURE_CLIENT_SECRET")
            or env.get("AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", "")
        )
        if not secret:
            raise _missing("AZURE_CLIENT_SECRET (kubelogin --login spn uses a client secret)")
        return {"client_secret": secret}
    # workloadidentity
    if env.get("AZURE_FEDERATED_TOKEN_FILE"):
        raw = workspace_file(
            env["AZURE_FEDERATED_TOKEN_FILE"], "AZURE_FEDERATED_TOKEN_FILE", workspace
        )
        assertion = raw.decode("utf-8", "replace").strip()
        mask(assertion)
    elif has_id_token(env):
        assertion = github_id_token(env, AZURE_AUDIENCE, mask, http)
    else:
        raise _missing(
            "AZURE_FEDERATED_TOKEN_FILE, or give the job `permissions: id-token: write` "
            "so the runner's OIDC token is used,"
        )
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


def _token_answer(
    answer_status: int, body: bytes, client_id: str, tenant_id: str
) -> dict[str, Any]:
    """Entra ID's JSON answer, or the error that names what it said."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if answer_status != 200 or not data.get("access_token"):
        code = str(data.get("error") or f"HTTP {answer_status}")[:80]
        description = str(data.get("error_description") or "").splitlines()[0:1]
        detail = f": {description[0][:300]}" if description else ""
        raise CredentialsError(
            f"Entra ID refused a token for the AKS cluster (client {client_id}, tenant "
            f"{tenant_id}): {code}{detail}"
        )
    return data


def access_token(
    login: AzureLogin,
    env: Mapping[str, str],
    workspace: Path,
    mask: Callable[[str], None],
    http: Http = send,
    clock: Callable[[], float] = time.time,
) -> tuple[str, float]:
    """(access token, expiry as epoch seconds), the token masked before it is returned."""
    client_id = (
        login.client_id
        or env.get("AZURE_CLIENT_ID")
        or env.get("AAD_SERVICE_PRINCIPAL_CLIENT_ID", "")
    )
    tenant_id = login.tenant_id or env.get("AZURE_TENANT_ID", "")
    if not client_id or not tenant_id:
        raise _missing("AZURE_CLIENT_ID and AZURE_TENANT_ID")
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "scope": f"{login.server_id}/.default",
        **_credential(login, env, workspace, mask, http),
    }
    authority = AUTHORITIES.get(login.environment.lower(), AUTHORITIES["azurepubliccloud"])
    if env.get("AZURE_AUTHORITY_HOST"):  # the job's (a kubeconfig never chooses it): https
        authority = checked_url(env["AZURE_AUTHORITY_HOST"], "AZURE_AUTHORITY_HOST")
    url = f"{authority.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    now = clock()
    answer = http("POST", url, headers, urlencode(form).encode(), env.get("SSL_CERT_FILE"))
    data = _token_answer(answer.status, answer.body, client_id, tenant_id)
    token = str(data["access_token"])
    mask(token)
    try:
        lifetime = float(data.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    return token, now + lifetime
