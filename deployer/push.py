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
from typing import Any, Protocol

from deployer.actions import ActionsIO
from deployer.build import BuildResult
from deployer.config import Config
from deployer.errors import DeployerError, PushError, engine_message
from deployer.registry import classify, with_retries

__all__ = [
    "MEDIA_TYPES",
    "DockerPushAPI",
    "PushResult",
    "resolve_digest",
    "verify_images",
    "verify_push",
]

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
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


def _auth_config(config: Config) -> dict[str, str] | None:
    if not config.registry_username or not config.registry_password:
        return None
    return {
        "username": config.registry_username,
        "password": config.registry_password.get_secret_value(),
        "serveraddress": config.registry,
    }


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


def verify_images(
    config: Config,
    docker: DockerPushAPI,
    io: ActionsIO,
    *,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Each ``images`` entry must be in its registry, as an image, with that digest.

    Read through the engine like the pushed image, with the configured credentials
    only when the image is on their registry (else anonymously: a credential never
    goes to another registry). Raises :class:`PushError` for the first that is not.
    """
    from deployer.config import split_image

    for reference in config.images:
        repository, _, digest = reference.partition("@")
        registry = split_image(repository).registry
        scoped = config
        if registry != config.registry:
            scoped = config.model_copy(
                update={"registry": registry, "registry_username": None, "registry_password": None}
            )
        action = f"checking that the registry holds {reference} (input 'images')"
        found, _media = _read_back_with_retries(scoped, docker, io, reference, action, sleep)
        if found != digest:
            raise PushError(f"Registry {registry} answered {found} for {reference}")
        io.info(f"The registry holds {reference} (input 'images')")
