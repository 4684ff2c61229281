"""Cloud credentials made in-process: what the EKS, GKE and AKS plugins would do.

A kubeconfig from ``aws eks update-kubeconfig``, ``gcloud container clusters
get-credentials`` or ``az aks get-credentials`` + ``kubelogin convert-kubeconfig``
names a credential plugin to run. deployer never runs it (nor any command a
kubeconfig names): :mod:`deployer.cloud.plugins` recognises the standard ones and
makes their token here, from the credentials the usual auth actions put in the
job's environment.

    plugins.py   which plugin an ``exec`` entry is; the token source for it
    sigv4.py     AWS Signature Version 4 (presigned URLs, signed requests)
    aws.py       AWS credentials, the EKS token, ECR's registry password
    gcp.py       Google access tokens from Application Default Credentials
    azure.py     Entra ID tokens (client secret or federated client assertion)
    oidc.py      the runner's OIDC token (``permissions: id-token: write``)
    http.py      the one small HTTP client of this package (deadlines, caps)
    registry.py  the registry login from a cloud identity, when no password is given
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = ["CLOUD_ENV_PREFIXES", "CloudEnv", "TokenSource", "workspace_file"]

# The environment variables the auth actions set, and the standard overrides.
CLOUD_ENV_PREFIXES = ("AWS_", "AZURE_", "AAD_", "GOOGLE_", "ACTIONS_ID_TOKEN_REQUEST_")
CLOUD_ENV_NAMES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "GITHUB_RUN_ID")


class CloudEnv(Mapping[str, str]):
    """The job's cloud-credential variables; never shows their values in a repr."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = {k: v for k, v in (values or {}).items() if v}

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> CloudEnv:
        return cls(
            {
                k: v
                for k, v in env.items()
                if k.startswith(CLOUD_ENV_PREFIXES) or k in CLOUD_ENV_NAMES
            }
        )

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"CloudEnv({sorted(self._values)})"

    def ca_file(self, *names: str) -> str | None:
        """The CA bundle the first of ``names`` (or SSL_CERT_FILE) points at, if any."""
        for name in (*names, "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            if self.get(name):
                return self[name]
        return None


def workspace_file(path: str, variable: str, workspace: Path, max_bytes: int = 65536) -> bytes:
    """The content of a credential file an environment variable names, checked.

    It must be a regular file inside the workspace (where the auth actions write
    theirs) or a Kubernetes projected token under /var/run/secrets, and small; it is
    read like a manifest (:func:`deployer.manifests.read_inside`: links resolved first,
    the last one not followed, checked on the open descriptor, no blocking on a FIFO).
    Raises CredentialsError saying what is wrong (never the content).
    """
    from deployer.errors import CredentialsError
    from deployer.manifests import read_inside

    given, shown = Path(path), f"{variable} ({path})"
    roots = (workspace, Path("/var/run/secrets"), Path("/run/secrets"))
    try:
        return read_inside(
            given if given.is_absolute() else workspace / given,
            roots,
            shown,
            max_bytes,
            where="the workspace, where the auth actions write credential files",
        )
    except FileNotFoundError:
        raise CredentialsError(f"{shown} is not a file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL, a loop, outside, not regular
        raise CredentialsError(str(e).replace(f"'{shown}'", shown, 1)) from None


class TokenSource:
    """A bearer token made by ``fetch``, masked at once, made again before it expires.

    ``fetch`` returns (token, expiry as epoch seconds). Installed on a kubernetes
    ``Configuration``, it renews the token when less than ``margin`` seconds of it
    are left, so a rollout longer than a token's life keeps working.
    """

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        mask: Callable[[str], None],
        *,
        margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._mask = mask
        self._margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        with self._lock:
            if not self._token or self._expires - self._clock() < self._margin:
                token, expires = self._fetch()
                self._mask(token)
                self._token, self._expires = token, expires
            return self._token

    def install(self, configuration: object) -> None:
        """Make ``configuration`` send this token, renewed as needed."""

        def refresh(conf: object) -> None:
            conf.api_key["BearerToken"] = f"Bearer {self.token()}"  # type: ignore[attr-defined]

        refresh(configuration)
        configuration.refresh_api_key_hook = refresh  # type: ignore[attr-defined]
