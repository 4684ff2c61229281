"""Google: an OAuth2 access token from Application Default Credentials, via google-auth.

google-github-actions/auth writes a credentials file into the workspace and
points GOOGLE_APPLICATION_CREDENTIALS at it: a service-account key, or an
``external_account`` (workload identity federation) whose subject token is the
runner's OIDC token, fetched from a URL or read from a file. That is what
``gke-gcloud-auth-plugin`` would use; Artifact Registry and GCR accept the same
token as the password of user ``oauth2accesstoken``.

The file lies in the workspace, and google-auth sends credentials to whatever URLs
it names without checking them (a subject token to ``token_url``, the runner's
request token to ``credential_source.url`` with the file's own headers). So every
URL google-auth would call is checked first (:func:`check_endpoints`): https to a
Google host, the job's own OIDC endpoint for ``credential_source.url``, or a
loopback address (the tests' stand-ins). Redirects are not followed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deployer.cloud import workspace_file
from deployer.cloud.http import checked_url, is_loopback
from deployer.errors import CredentialsError

__all__ = ["SCOPES", "access_token", "check_endpoints", "is_google_registry"]

SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
)
_TIMEOUT = 20.0
_MISSING = (
    "No Google credentials for {what}: GOOGLE_APPLICATION_CREDENTIALS is not set. Add a "
    "step `uses: google-github-actions/auth@v2` (with workload_identity_provider and "
    "service_account, or credentials_json) before this one; it writes the credentials "
    "file into the workspace and sets the variable"
)


def is_google_registry(host: str) -> bool:
    """Artifact Registry (``<region>-docker.pkg.dev``) or Container Registry (``gcr.io``)."""
    return host.endswith("-docker.pkg.dev") or host == "gcr.io" or host.endswith(".gcr.io")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower()


def _google_host(host: str) -> bool:
    return host == "accounts.google.com" or host.endswith(".googleapis.com")


def _check_url(url: object, field: str, also: tuple[str, ...] | None = None) -> None:
    what = f"GOOGLE_APPLICATION_CREDENTIALS's {field}"
    if not isinstance(url, str):
        raise CredentialsError(f"{what} is not a URL")
    checked_url(url, what)  # https, or plain http to a loopback address
    host = (urlsplit(url).hostname or "").lower()
    if not (_google_host(host) or is_loopback(host) or _origin(url) in (also or ())):
        raise CredentialsError(
            f"{what} ({_origin(url)}) is not a Google endpoint (https://*.googleapis.com)"
            + (
                " nor the job's OIDC endpoint (ACTIONS_ID_TOKEN_REQUEST_URL)"
                if also is not None
                else ""
            )
            + "; deployer sends no credential elsewhere. Use the file "
            "google-github-actions/auth writes"
        )


def check_endpoints(info: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Every URL in a credentials file that google-auth would send a credential to.

    ``credential_source.url`` may also be the job's ACTIONS_ID_TOKEN_REQUEST_URL (what
    google-github-actions/auth writes for workload identity federation).
    """
    for field in ("token_uri", "token_url", "service_account_impersonation_url"):
        if info.get(field) is not None:
            _check_url(info[field], field)
    source = info.get("credential_source")
    if isinstance(source, Mapping) and source.get("url") is not None:
        oidc = env.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
        _check_url(source["url"], "credential_source.url", (_origin(oidc),) if oidc else ())


def _credentials(info: dict[str, Any], workspace: Path) -> Any:
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES)
    if kind == "external_account":
        source = info.get("credential_source")
        if not isinstance(source, Mapping) or not (source.get("url") or source.get("file")):
            raise CredentialsError(
                "GOOGLE_APPLICATION_CREDENTIALS is an external_account whose "
                "credential_source is neither 'url' nor 'file' (an 'executable' source "
                "would run a command, which deployer never does); use the file "
                "google-github-actions/auth writes"
            )
        if source.get("file"):
            workspace_file(str(source["file"]), "credential_source.file", workspace)
        from google.auth import identity_pool

        return identity_pool.Credentials.from_info(info, scopes=SCOPES)
    raise CredentialsError(
        f"GOOGLE_APPLICATION_CREDENTIALS holds credentials of type '{str(kind)[:40]}'; "
        "supported: service_account, external_account, authorized_user"
    )


def access_token(
    env: Mapping[str, str],
    workspace: Path,
    mask: Callable[[str], None],
    what: str = "the GKE cluster",
    session: Any = None,
) -> tuple[str, float]:
    """(access token, expiry as epoch seconds), the token masked before it is returned."""
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not path:
        raise CredentialsError(_MISSING.format(what=what))
    raw = workspace_file(path, "GOOGLE_APPLICATION_CREDENTIALS", workspace)
    try:
        info = json.loads(raw)
    except ValueError:
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS ({path}) is not JSON") from None
    if not isinstance(info, dict):
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS ({path}) is not a JSON object")
    if isinstance(info.get("private_key"), str):
        mask(info["private_key"])
    check_endpoints(info, env)
    creds = _credentials(info, workspace)

    import google.auth.exceptions
    import requests
    from google.auth.transport.requests import Request

    class _Bounded(Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = min(float(kwargs.get("timeout") or _TIMEOUT), _TIMEOUT)
            kwargs["allow_redirects"] = False  # a 3xx is an answer: the body is a credential
            return super().__call__(*args, **kwargs)

    own = session is None
    if own:
        session = requests.Session()
        ca = env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE")
        if ca:
            session.verify = ca
    try:
        creds.refresh(_Bounded(session))
    except google.auth.exceptions.GoogleAuthError as e:
        first = str(e.args[0] if e.args else e).splitlines()[0][:300]
        raise CredentialsError(f"Google refused the credentials for {what}: {first}") from None
    except requests.RequestException as e:
        raise CredentialsError(
            f"Cannot reach Google's token endpoint for {what}: {type(e).__name__}"
        ) from None
    finally:
        if own:
            session.close()
    token = str(creds.token or "")
    if not token:
        raise CredentialsError(f"Google answered without an access token for {what}")
    mask(token)
    expiry = creds.expiry
    from datetime import UTC

    expires = expiry.replace(tzinfo=UTC).timestamp() if expiry else time.time() + 3000
    return token, expires
