"""The runner's OIDC token for this job (``permissions: id-token: write``).

The runner passes ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN
to container actions when the job may have one; ``GET $URL&audience=<aud>``
with the request token as bearer answers ``{"value": "<JWT>"}``. The request token
mints tokens for any audience: the URL must come from the job's environment (never
from a kubeconfig) and be https.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from urllib.parse import quote

from deployer.cloud.http import Http, checked_url, send
from deployer.errors import CredentialsError

__all__ = ["AWS_AUDIENCE", "AZURE_AUDIENCE", "github_id_token", "has_id_token"]

AWS_AUDIENCE = "sts.amazonaws.com"
AZURE_AUDIENCE = "api://AzureADTokenExchange"


def has_id_token(env: Mapping[str, str]) -> bool:
    return bool(
        env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    )


def github_id_token(
    env: Mapping[str, str], audience: str, mask: Callable[[str], None], http: Http = send
) -> str:
    """The job's OIDC token for ``audience``, masked before it is returned."""
    if not has_id_token(env):
        raise CredentialsError(
            "The job's OIDC token is not available (no ACTIONS_ID_TOKEN_REQUEST_URL): "
            "give the job `permissions: id-token: write`"
        )
    url = checked_url(env["ACTIONS_ID_TOKEN_REQUEST_URL"], "ACTIONS_ID_TOKEN_REQUEST_URL")
    url += ("&" if "?" in url else "?") + "audience=" + quote(audience, safe="")
    headers = {
        "Authorization": f"Bearer {env['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}",
        "Accept": "application/json",
    }
    answer = http("GET", url, headers, None, env.get("SSL_CERT_FILE"))
    if answer.status != 200:
        raise CredentialsError(
            f"The runner refused an OIDC token for audience {audience} (HTTP {answer.status})"
        )
    try:
        token = json.loads(answer.body)["value"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError("The runner's OIDC token answer has no 'value'") from None
    if not isinstance(token, str) or not token:
        raise CredentialsError("The runner's OIDC token answer has no 'value'")
    mask(token)
    return token
