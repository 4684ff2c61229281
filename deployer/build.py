"""Stage 1: build the image with the Docker engine (legacy builder, the API's /build).

The engine reports a failed build inside the JSON stream, not as an HTTP error:
every line is checked for ``error``/``errorDetail``. The log is untrusted text
(a ``RUN echo ::add-mask::x`` is just output), so it is printed between
stop-commands markers.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import BuildError, DeployerError

__all__ = ["BuildResult", "DockerBuildAPI", "build_image"]

LOG_TAIL = 30


class DockerBuildAPI(Protocol):
    """The part of ``docker.APIClient`` this stage uses."""

    def build(self, **kwargs: Any) -> Iterable[Mapping[str, Any]]: ...

    def tag(self, image: str, repository: str, tag: str | None = None) -> bool: ...


@dataclass(frozen=True)
class BuildResult:
    """What the build produced."""

    image_id: str
    references: tuple[str, ...]
    duration: float


def build_image(config: Config, docker: DockerBuildAPI, io: ActionsIO) -> BuildResult:
    """Build ``config.context`` and tag it with every reference in ``config.tags``."""
    references = config.tag_references
    io.info(f"Building {references[0]} from {config.context.name or '.'} ...")
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
    step = ""
    image_id = ""
    error = ""
    try:
        stream = docker.build(
            path=str(config.context),
            dockerfile=str(config.dockerfile),
            tag=references[0],
            buildargs=dict(config.build_args),
            labels=config.oci_labels(),
            target=config.target,
            rm=True,
            forcerm=True,
            decode=True,
        )
        with io.group(f"Build log: {references[0]}"), io.untrusted() as log:
            for chunk in stream:
                text = chunk.get("stream")
                if isinstance(text, str) and text:
                    log.write(text)
                    for line in text.splitlines():
                        if line.strip():
                            tail.append(line.rstrip())
                        if line.startswith("Step "):
                            step = line.strip()
                aux = chunk.get("aux")
                if isinstance(aux, Mapping) and isinstance(aux.get("ID"), str):
                    image_id = aux["ID"]
                if ("error" in chunk or "errorDetail" in chunk) and not error:
                    detail = chunk.get("errorDetail")
                    message = detail.get("message") if isinstance(detail, Mapping) else None
                    error = str(message or chunk.get("error") or "unknown build error")
                    log.write(error)
                    tail.append(error)
    except DeployerError:  # Cancelled arrives here from the signal handler
        raise
    except Exception as e:  # docker.errors.APIError, requests errors: the engine said no
        error = _engine_message(e)
    if error:
        where = f" at {step}" if step else ""
        raise BuildError(
            f"Building {references[0]} failed{where}: {error.strip()}",
            details="\n".join(tail),
        )
    if not image_id:
        raise BuildError(
            f"Building {references[0]} ended without an image ID from the engine",
            details="\n".join(tail),
        )
    for reference in references[1:]:
        repository, _, tag = reference.rpartition(":")
        try:
            docker.tag(image_id, repository, tag)
        except Exception as e:
            raise BuildError(f"Tagging {reference} failed: {_engine_message(e)}") from None
    duration = time.monotonic() - start
    io.info(f"Built {image_id[:19]} in {duration:.1f} s, tagged {', '.join(references)}")
    return BuildResult(image_id=image_id, references=tuple(references), duration=duration)


def _engine_message(error: Exception) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error)
