"""Stage 2: the digest counts only when the registry holds it.

BuildKit pushes while it builds (``buildx build --push``, see build.py) and reports
the digest it pushed: a manifest, or an image index for several platforms or
attestations. Here that digest is read back from the registry, through the
engine's distribution endpoint, and must come back with a manifest or index media
type before ``image`` (``repo@digest``) is reported and rolled out. With
``build: false`` the digest is the registry's answer for the first tag, or the
digest given in ``image`` once the registry confirms it holds it. Transient
registry errors are retried with a capped backoff (build.py re-runs the push the
same way); an authentication error is not retried.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import DeployerError, PushError, RegistryAuthError, engine_message

if TYPE_CHECKING:
    from deployer.build import BuildResult

__all__ = [
    "ATTEMPTS",
    "MEDIA_TYPES",
    "DockerPushAPI",
    "PushResult",
    "classify",
    "resolve_digest",
    "verify_push",
    "with_retries",
]

ATTEMPTS = 4
BACKOFF_SECONDS = (1.0, 2.0, 4.0)
# No new attempt once this much time went by: an engine call that failed slowly has
# already retried on its own (the engine retries each layer upload for about 50 s),
# and four of those would keep a dead registry's run busy for four minutes.
RETRY_BUDGET_SECONDS = 30.0
backoff_sleep: Callable[[float], None] = time.sleep  # the wait between attempts (tests replace it)
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_AUTH_HINTS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
    "403 forbidden",
)
_TRANSIENT_HINTS = (
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway",
    "connection reset",
    "connection refused",
    "broken pipe",
    "eof",
    "timeout",
    "i/o timeout",
    "tls handshake",
    "received unexpected http status: 5",
    "unexpected status: 5",
    "unexpected status from",
    "too many requests",
    "no route to host",
)


class DockerPushAPI(Protocol):
    """The part of ``docker.APIClient`` this stage uses."""

    def inspect_distribution(self, image: str, **kwargs: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class PushResult:
    """What the registry holds now."""

    digest: str
    image: str  # repository@digest, what the cluster deploys
    references: tuple[str, ...]
    duration: float
    pushed: bool
    media_type: str = ""


class Transient(Exception):
    """A failure worth another attempt; ``seconds`` is what the failing attempt cost."""

    def __init__(self, message: str, seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


def _auth_config(config: Config) -> dict[str, str] | None:
    if not config.registry_username or not config.registry_password:
        return None
    return {
        "username": config.registry_username,
        "password": config.registry_password.get_secret_value(),
        "serveraddress": config.registry,
    }


def classify(config: Config, message: str, action: str) -> Exception:
    """A registry failure → RegistryAuthError, Transient (retry) or PushError."""
    lowered = message.lower()
    if any(hint in lowered for hint in _AUTH_HINTS):
        who = (
            f"user '{config.registry_username}'" if config.registry_username else "anonymous access"
        )
        return RegistryAuthError(
            f"Registry {config.registry} refused {who} while {action}: {message.strip()}. "
            "Check registry-username and registry-password (a `docker login` in an earlier "
            "step is not visible inside this action)"
        )
    if any(hint in lowered for hint in _TRANSIENT_HINTS):
        return Transient(message.strip())
    return PushError(
        f"{action.capitalize()} failed at registry {config.registry}: {message.strip()}"
    )


def with_retries(
    config: Config,
    io: ActionsIO,
    action: str,
    attempt: Callable[[], str],
    sleep: Callable[[float], None] | None,
) -> str:
    """``attempt()`` until it does not raise Transient: at most ATTEMPTS, within the budget.

    The budget counts the failed attempts' cost (``Transient.seconds`` when the
    attempt knows it, e.g. only the push part of a build, else wall time) and the
    waits between them.
    """
    sleep = sleep or backoff_sleep
    spent = 0.0
    for number in range(1, ATTEMPTS + 1):
        began = time.monotonic()
        try:
            return attempt()
        except Transient as e:
            spent += e.seconds if e.seconds is not None else time.monotonic() - began
            delay = BACKOFF_SECONDS[min(number, len(BACKOFF_SECONDS)) - 1]
            if number == ATTEMPTS or spent + delay > RETRY_BUDGET_SECONDS:
                tries = f"{number} attempt{'s' if number > 1 else ''}"
                raise PushError(
                    f"{action.capitalize()} failed at registry {config.registry} after "
                    f"{tries} ({spent:.0f} s): {e}"
                ) from None
            io.warning(
                f"{action.capitalize()}: {e}; trying again in {delay:.0f} s ({number}/{ATTEMPTS})"
            )
            sleep(delay)
            spent += delay
    raise AssertionError("unreachable")  # pragma: no cover


def _engine_call(config: Config, action: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except DeployerError:
        raise
    except Exception as e:  # docker.errors.APIError, requests errors
        raise classify(config, engine_message(e), action) from None


def _read_back(
    config: Config, docker: DockerPushAPI, reference: str, action: str
) -> tuple[str, str]:
    """The digest and media type the registry answers for ``reference``."""
    answer = _engine_call(
        config,
        action,
        lambda: docker.inspect_distribution(reference, auth_config=_auth_config(config)),
    )
    descriptor = answer.get("Descriptor") if isinstance(answer, Mapping) else None
    digest = descriptor.get("digest") if isinstance(descriptor, Mapping) else None
    media_type = descriptor.get("mediaType", "") if isinstance(descriptor, Mapping) else ""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise PushError(f"Registry {config.registry} returned no digest for {reference}")
    if media_type not in MEDIA_TYPES:
        raise PushError(
            f"Registry {config.registry} holds {reference} as '{str(media_type)[:80]}', "
            "not an image manifest or index"
        )
    return digest, media_type


def _read_back_with_retries(
    config: Config,
    docker: DockerPushAPI,
    io: ActionsIO,
    reference: str,
    action: str,
    sleep: Callable[[float], None] | None,
) -> tuple[str, str]:
    """:func:`_read_back` under the bounded retries of :func:`with_retries`."""
    media: list[str] = []

    def attempt() -> str:
        digest, media_type = _read_back(config, docker, reference, action)
        media.append(media_type)
        return digest

    return with_retries(config, io, action, attempt, sleep), media[-1]


def verify_push(
    config: Config,
    docker: DockerPushAPI,
    io: ActionsIO,
    build: BuildResult,
    *,
    sleep: Callable[[float], None] | None = None,
) -> PushResult:
    """Read the digest BuildKit pushed back from the registry; only then does it count."""
    start = time.monotonic()
    if not _DIGEST_RE.match(build.digest):
        raise PushError(f"BuildKit reported no digest for the push of {config.image.repository}")
    image = config.image.with_digest(build.digest)
    action = f"reading back {image}"
    verified, media_type = _read_back_with_retries(config, docker, io, image, action, sleep)
    if verified != build.digest:
        raise PushError(
            f"Registry {config.registry} holds {verified} for {image}, not the pushed digest"
        )
    kind = "index" if "index" in media_type or "list" in media_type else "manifest"
    io.info(f"The registry holds {image} (an image {kind})")
    duration = build.push_seconds + time.monotonic() - start
    return PushResult(
        build.digest, image, build.references, duration, pushed=True, media_type=media_type
    )


def resolve_digest(
    config: Config,
    docker: DockerPushAPI,
    io: ActionsIO,
    *,
    sleep: Callable[[float], None] | None = None,
) -> PushResult:
    """For ``build: false``: the digest the registry holds for the first tag, or the
    digest given in ``image`` once the registry confirms it holds it."""
    start = time.monotonic()
    if config.image_digest:
        reference = config.image.with_digest(config.image_digest)
        action = f"checking that the registry holds {reference}"
    else:
        reference = config.image.reference(config.tags[0])
        action = f"resolving {reference}"
    digest, media_type = _read_back_with_retries(config, docker, io, reference, action, sleep)
    if config.image_digest and digest != config.image_digest:
        raise PushError(f"Registry {config.registry} answered {digest} for {reference}")
    image = config.image.with_digest(digest)
    io.info(f"{reference} is {image}" if not config.image_digest else f"The registry holds {image}")
    return PushResult(
        digest,
        image,
        tuple(config.tag_references),
        time.monotonic() - start,
        pushed=False,
        media_type=media_type,
    )
