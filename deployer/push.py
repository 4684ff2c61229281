"""Stage 2: push every tag and take the digest the registry answered with.

The engine reports push failures inside the JSON stream. A push counts only when
the stream ends with the registry's digest (``aux.Digest``) and the manifest can
be read back by that digest. Transient registry errors are retried with a capped
backoff; an authentication error is not retried.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import (
    DeployerError,
    PushError,
    RegistryAuthError,
    engine_message,
    stream_error,
)

__all__ = ["ATTEMPTS", "DockerPushAPI", "PushResult", "push_image", "resolve_digest"]

ATTEMPTS = 4
BACKOFF_SECONDS = (1.0, 2.0, 4.0)
# No new attempt once this much time went by: an engine call that failed slowly has
# already retried on its own (the engine retries each layer upload for about 50 s),
# and four of those would keep a dead registry's run busy for four minutes.
RETRY_BUDGET_SECONDS = 30.0
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
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
    "too many requests",
)


class DockerPushAPI(Protocol):
    """The part of ``docker.APIClient`` this stage uses."""

    def push(self, repository: str, **kwargs: Any) -> Iterable[Mapping[str, Any]]: ...

    def inspect_distribution(self, image: str, **kwargs: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class PushResult:
    """What the registry holds now."""

    digest: str
    image: str  # repository@digest, what the cluster deploys
    references: tuple[str, ...]
    duration: float
    pushed: bool


class _Transient(Exception):
    """A failure worth another attempt."""


def _auth_config(config: Config) -> dict[str, str] | None:
    if not config.registry_username or not config.registry_password:
        return None
    return {
        "username": config.registry_username,
        "password": config.registry_password.get_secret_value(),
        "serveraddress": config.registry,
    }


def _classify(config: Config, message: str, action: str) -> Exception:
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
        return _Transient(message.strip())
    return PushError(
        f"{action.capitalize()} failed at registry {config.registry}: {message.strip()}"
    )


def _with_retries(
    config: Config,
    io: ActionsIO,
    action: str,
    attempt: Callable[[], str],
    sleep: Callable[[float], None] | None,
) -> str:
    sleep = sleep or time.sleep
    started = time.monotonic()
    for number in range(1, ATTEMPTS + 1):
        try:
            return attempt()
        except _Transient as e:
            delay = BACKOFF_SECONDS[min(number, len(BACKOFF_SECONDS)) - 1]
            spent = time.monotonic() - started
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
    raise AssertionError("unreachable")  # pragma: no cover


def _engine_call(config: Config, action: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except DeployerError:
        raise
    except Exception as e:  # docker.errors.APIError, requests errors
        raise _classify(config, engine_message(e), action) from None


def _push_once(config: Config, docker: DockerPushAPI, io: ActionsIO, tag: str) -> str:
    reference = config.image.reference(tag)
    digest = ""

    def run() -> None:
        nonlocal digest
        stream = docker.push(
            config.image.repository,
            tag=tag,
            auth_config=_auth_config(config),
            stream=True,
            decode=True,
        )
        failure = ""
        # Read to the end even after an error: the engine ends the stream right after
        # it, and a stream left half-read keeps its connection open.
        for chunk in stream:
            error = stream_error(chunk)
            if error:
                failure = failure or error
                continue
            aux = chunk.get("aux")
            if isinstance(aux, Mapping) and isinstance(aux.get("Digest"), str):
                digest = aux["Digest"]
            status = chunk.get("status")
            if isinstance(status, str) and "id" not in chunk:
                io.info(f"  {status}")
        if failure:
            raise _classify(config, failure, f"pushing {reference}")

    _engine_call(config, f"pushing {reference}", run)
    if not _DIGEST_RE.match(digest):
        raise _Transient(f"the push of {reference} ended without a digest from the registry")
    return digest


def _read_back(config: Config, docker: DockerPushAPI, reference: str, action: str) -> str:
    answer = _engine_call(
        config,
        action,
        lambda: docker.inspect_distribution(reference, auth_config=_auth_config(config)),
    )
    descriptor = answer.get("Descriptor") if isinstance(answer, Mapping) else None
    digest = descriptor.get("digest") if isinstance(descriptor, Mapping) else None
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise PushError(f"Registry {config.registry} returned no digest for {reference}")
    return digest


def push_image(
    config: Config,
    docker: DockerPushAPI,
    io: ActionsIO,
    *,
    sleep: Callable[[float], None] | None = None,
) -> PushResult:
    """Push every tag; return the digest the registry answered with, verified by reading it back."""
    start = time.monotonic()
    digests: dict[str, str] = {}
    with io.group(f"Push {config.image.repository}"):
        for tag in config.tags:
            digests[tag] = _with_retries(
                config,
                io,
                f"pushing {config.image.reference(tag)}",
                lambda tag=tag: _push_once(config, docker, io, tag),  # type: ignore[misc]
                sleep,
            )
    distinct = set(digests.values())
    if len(distinct) != 1:
        raise PushError(f"The registry answered different digests for the tags: {digests}")
    digest = distinct.pop()
    image = config.image.with_digest(digest)
    verified = _with_retries(
        config,
        io,
        f"reading back {image}",
        lambda: _read_back(config, docker, image, f"reading back {image}"),
        sleep,
    )
    if verified != digest:
        raise PushError(
            f"Registry {config.registry} holds {verified} for {image}, not the pushed digest"
        )
    duration = time.monotonic() - start
    io.info(f"Pushed {image} ({len(config.tags)} tag(s)) in {duration:.1f} s")
    return PushResult(digest, image, tuple(config.tag_references), duration, pushed=True)


def resolve_digest(
    config: Config,
    docker: DockerPushAPI,
    io: ActionsIO,
    *,
    sleep: Callable[[float], None] | None = None,
) -> PushResult:
    """For ``build: false``: the digest the registry holds for the first tag."""
    start = time.monotonic()
    reference = config.image.reference(config.tags[0])
    action = f"resolving {reference}"
    digest = _with_retries(
        config, io, action, lambda: _read_back(config, docker, reference, action), sleep
    )
    image = config.image.with_digest(digest)
    io.info(f"{reference} is {image}")
    return PushResult(
        digest, image, tuple(config.tag_references), time.monotonic() - start, pushed=False
    )
