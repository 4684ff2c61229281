"""Google: an OAuth2 access token from Application Default Credentials, via google-auth.

google-github-actions/auth writes a credentials file into the workspace and
points GOOGLE_APPLICATION_CREDENTIALS at it: a service-account key, or an
``external_account`` (workload identity federation) whose subject token is the
runner's OIDC token, fetched from a URL or read from a file. That is what
``gke-gcloud-auth-plugin`` would use; Artifact Registry and GCR accept the same
token as the password of user ``oauth2accesstoken``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deployer.cloud import workspace_file
from deployer.errors import CredentialsError

__all__ = ["SCOPES", "access_token", "is_google_registry"]

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
    creds = _credentials(info, workspace)

    import google.auth.exceptions
    import requests
    from google.auth.transport.requests import Request

    class _Bounded(Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = min(float(kwargs.get("timeout") or _TIMEOUT), _TIMEOUT)
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
