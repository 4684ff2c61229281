"""Stage 1: build the image with the Docker engine (legacy builder, the API's /build).

The engine reports a failed build inside the JSON stream, not as an HTTP error:
every line is checked for ``error``/``errorDetail``. The log is untrusted text
(a ``RUN echo ::add-mask::x`` is just output), so it is printed between
stop-commands markers.
"""

from __future__ import annotations

import collections
import io
import secrets
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import BuildError, DeployerError, engine_message, stream_error

__all__ = ["BuildResult", "DockerBuildAPI", "build_image", "context_archive"]

LOG_TAIL = 30
_CHUNK = 256 * 1024


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
    context = config.context.relative_to(config.workspace).as_posix()
    dockerfile = config.dockerfile.relative_to(config.workspace).as_posix()
    io.info(f"Building {references[0]} (context {context}, {dockerfile}) ...")
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
    step = ""
    image_id = ""
    error = ""
    try:
        archive, dockerfile_in_archive = context_archive(config.context, config.dockerfile)
        stream = docker.build(
            fileobj=archive,
            custom_context=True,
            dockerfile=dockerfile_in_archive,
            tag=references[0],
            buildargs=dict(config.build_args),
            labels=config.oci_labels(),
            target=config.target,
            rm=True,
            forcerm=True,
            decode=True,
        )
        with io.group(f"Build log: {references[0]}"), io.untrusted() as log:
            pending = ""  # the engine splits lines across chunks ("Step 1/2 : X", "\n")
            for chunk in stream:
                text = chunk.get("stream")
                if isinstance(text, str) and text:
                    *lines, pending = (pending + text).replace("\r\n", "\n").split("\n")
                    for line in lines:
                        log.write(line)
                        if line.strip():
                            tail.append(line.rstrip())
                        if line.startswith("Step "):
                            step = line.strip()
                aux = chunk.get("aux")
                if isinstance(aux, Mapping) and isinstance(aux.get("ID"), str):
                    image_id = aux["ID"]
                failure = stream_error(chunk)
                if failure and not error:
                    error = failure
                    log.write(error)
                    tail.append(error)
            if pending:
                log.write(pending)
                tail.append(pending.rstrip())
    except DeployerError:  # Cancelled arrives here from the signal handler
        raise
    except Exception as e:  # docker.errors.APIError, requests errors: the engine said no
        error = engine_message(e)
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
            raise BuildError(f"Tagging {reference} failed: {engine_message(e)}") from None
    duration = time.monotonic() - start
    io.info(f"Built {image_id[:19]} in {duration:.1f} s, tagged {', '.join(references)}")
    return BuildResult(image_id=image_id, references=tuple(references), duration=duration)


def _dockerignore(context: Path) -> list[str]:
    """The patterns of ``.dockerignore``, read as the docker CLI and docker-py read them."""
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_archive(context: Path, dockerfile: Path) -> tuple[Iterator[bytes], str]:
    """Stream the build context as a tar, honouring ``.dockerignore``.

    Returns the chunks and the Dockerfile's name inside the archive. The tar is
    produced while the engine reads it (docker-py would write it whole to a
    temporary file first), in GNU format (PAX headers cost as much as the data
    for small files). Which files go in is docker-py's own ``exclude_paths``, so
    the ``.dockerignore`` semantics are the SDK's. A Dockerfile outside the
    context is added under a random name, as docker-py and the CLI do.
    """
    from docker.utils.build import exclude_paths

    try:
        inside = dockerfile.relative_to(context).as_posix()
        extra: bytes | None = None
    except ValueError:
        inside = f".dockerfile.{secrets.token_hex(20)}"
        extra = dockerfile.read_bytes()
    names = sorted(exclude_paths(str(context), _dockerignore(context), dockerfile=inside))

    def chunks() -> Iterator[bytes]:
        buffer = io.BytesIO()
        with tarfile.open(mode="w|", fileobj=buffer, format=tarfile.GNU_FORMAT) as tar:
            for name in names:
                full = context / name
                try:
                    info = tar.gettarinfo(str(full), arcname=name)
                    if info.isfile():
                        with full.open("rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
                except OSError as e:
                    raise BuildError(
                        f"Cannot read {name} in the build context: {e.strerror}"
                    ) from None
                if buffer.tell() >= _CHUNK:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            if extra is not None:
                info = tarfile.TarInfo(inside)
                info.size = len(extra)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(extra))
        yield buffer.getvalue()

    return chunks(), inside
