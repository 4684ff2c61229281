"""What reaches buildx through its environment, and what must not.

Nothing secret goes on buildx's command line (other processes can read argv), so:

- every build-arg value goes through buildx's environment: ``--build-arg NAME``
  without ``=`` makes buildx read ``$NAME`` (docker/buildx ``listToMap``:
  ``os.LookupEnv(k)``, any name, dots and dashes included). A build-arg named
  like a variable buildx itself reads (``BUILDX_CONFIG``, ``HTTPS_PROXY``,
  ``SSL_CERT_FILE``, ...) would therefore reconfigure buildx: such names are an
  input error (:func:`reserved_build_arg`);
- credentials inside cache entries move to the variables buildx fills them from
  when the entry lacks them (``type=gha``: ``ACTIONS_RUNTIME_TOKEN``;
  ``type=s3``: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN``): :func:`cache_credentials`. ``type=azblob`` (``secret_access_key``,
  a SAS in ``account_url``) and ``type=gha``'s ``ghtoken`` (a GitHub token for the
  GitHub API) have no such variable, so they are an input error. Every one of them
  is masked before anything prints (:data:`CACHE_SECRET_KEYS`, :func:`cache_secrets`).

Cache entries are CSV, as buildx parses them (``csv.NewReader``): a quoted field
``"dest=/github/file_commands"`` is the field ``dest=/github/file_commands``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "CACHE_SECRET_KEYS",
    "cache_credentials",
    "cache_fields",
    "cache_secrets",
    "format_cache_fields",
    "reserved_build_arg",
]

# Variables buildx, the docker CLI code in it, or the Go runtime read from buildx's
# environment (compared case-insensitively: Go reads http_proxy too).
_BUILDX_PREFIXES = (
    "BUILDX_",
    "DOCKER_",
    "BUILDKIT_",
    "ACTIONS_",
    "OTEL_",
    "XDG_",
    "LD_",
    "SSL_CERT_",
)
_BUILDX_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "USER",
        "SHELL",
        "KUBECONFIG",
        "SSH_AUTH_SOCK",  # --ssh default
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "FTP_PROXY",
        "REQUEST_METHOD",  # Go's proxy code ignores HTTP_PROXY under CGI
        "GODEBUG",
        "GOGC",
        "GOMAXPROCS",
        "GOMEMLIMIT",
        "GOTRACEBACK",
        "EXPERIMENTAL_BUILDKIT_SOURCE_POLICY",
    }
)
# BuildKit's own build arguments: read by the Dockerfile frontend, not by buildx.
_BUILDKIT_ARGS = frozenset(
    {
        "BUILDKIT_CACHE_MOUNT_NS",
        "BUILDKIT_CONTEXT_KEEP_GIT_DIR",
        "BUILDKIT_DOCKERFILE_CHECK",
        "BUILDKIT_INLINE_CACHE",
        "BUILDKIT_MULTI_PLATFORM",
        "BUILDKIT_SANDBOX_HOSTNAME",
        "BUILDKIT_SYNTAX",
    }
)
# A cache entry's credential attributes → the variable buildx reads instead, per type.
_CACHE_CREDENTIALS = {
    "gha": {"token": "ACTIONS_RUNTIME_TOKEN"},
    "s3": {
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
    },
}
# Attributes of any cache entry that hold a secret: masked before anything prints (buildx's
# cache backends: gha token, ghtoken; s3 access_key_id, secret_access_key, session_token;
# azblob secret_access_key, and a SAS as account_url's query).
CACHE_SECRET_KEYS = (
    "token",
    "ghtoken",
    "secret",
    "access_key_id",
    "secret_access_key",
    "session_token",
)


def reserved_build_arg(name: str, *, s3_cache: bool) -> bool:
    """Whether a build-arg ``name`` would reconfigure buildx (see the module).

    With a ``type=s3`` cache buildx also loads the AWS SDK's configuration from its
    environment, so ``AWS_*`` is reserved too.
    """
    upper = name.upper()
    if upper in _BUILDKIT_ARGS:
        return False
    return (
        upper in _BUILDX_NAMES
        or upper.startswith(_BUILDX_PREFIXES)
        or (s3_cache and upper.startswith("AWS_"))
    )


def cache_fields(entry: str) -> list[tuple[str, str]]:
    """A cache entry's ``key=value`` fields, parsed as CSV like buildx; keys lower-cased.

    Raises ValueError for what buildx's CSV reader would refuse or read otherwise (a
    quote inside a field).
    """
    try:
        row = next(csv.reader([entry], strict=True), [])
    except csv.Error:
        raise ValueError("is not valid CSV, as buildx reads it") from None
    if any('"' in field for field in row):
        raise ValueError("has a quote inside a field, which buildx does not read the same")
    fields = []
    for field in row:
        key, _, value = field.partition("=")
        fields.append((key.strip().lower(), value.strip()))
    return fields


def format_cache_fields(fields: Iterable[tuple[str, str]]) -> str:
    """Fields back to one entry, quoted where CSV needs it."""
    rows: list[str] = []
    for key, value in fields:
        field = f"{key}={value}"
        rows.append(f'"{field}"' if "," in field else field)
    return ",".join(rows)


def cache_credentials(entry: str) -> tuple[str, dict[str, str]]:
    """``entry`` without its credentials, and the variables that carry them to buildx.

    Raises ValueError for a credential buildx can only take on its command line.
    """
    fields = cache_fields(entry)
    kind = dict(fields).get("type", "")
    moved = _CACHE_CREDENTIALS.get(kind, {})
    env = {moved[key]: value for key, value in fields if key in moved}
    given = dict(fields)
    if kind == "gha" and given.get("ghtoken"):
        raise ValueError(
            "(type=gha) carries a ghtoken, which buildx takes only on its command line; "
            "leave it out (it only spares the cache API's rate limit)"
        )
    if kind == "azblob" and (
        given.get("secret_access_key") or urlsplit(given.get("account_url", "")).query
    ):
        raise ValueError(
            "(type=azblob) carries a key or a SAS, which buildx takes only on its "
            "command line; use type=registry or type=gha"
        )
    kept = [(key, value) for key, value in fields if key not in moved]
    return (format_cache_fields(kept) if env else entry), env


def cache_secrets(fields: Iterable[tuple[str, str]]) -> list[str]:
    """The secrets in a cache entry's fields: :data:`CACHE_SECRET_KEYS`, an account_url's SAS."""
    found = []
    for key, value in fields:
        if key in CACHE_SECRET_KEYS:
            found.append(value)
        elif key == "account_url":
            try:
                found.append(urlsplit(value).query)
            except ValueError:
                found.append(value)
    return [value for value in found if value]
