"""The Docker engine, through its API: what it offers, and the few calls the stages make.

Stages get an :class:`Engine` from :func:`connect` (pipeline.py) and use:

* :attr:`Engine.api_version` — the engine's own API version, from the ping's
  ``API-Version`` header (build.py: named contexts need 1.42);
* :meth:`Engine.info` — asked only when a build needs more than the engine's
  own BuildKit classically offers, once: the engine's version and whether its
  images live in containerd (Docker 29's default), in which case that BuildKit
  can export caches and build several platforms too (build.py);
* :meth:`Engine.inspect_distribution` — the registry's answer for a reference,
  asked through the engine with the run's login (push.py);
* :meth:`Engine.remove_container`, :meth:`Engine.remove_volume` — a builder's
  leftovers (buildx.py).

Requests carry no API version: the engine answers in its own, so Docker 20.10
(API 1.41) and Docker 29 (which refuses clients below its minimum version) are
each spoken to as they are; nothing is pinned and nothing is negotiated, which
saves a ``/version`` request: connecting is one ``/_ping``. The fields read
here are the same in every API version since 1.30. Not the docker SDK:
importing it (with requests) costs about 0.15 s on every run.

Every call has a timeout and every answer a size cap. An HTTP error becomes
:class:`EngineAPIError` (status and the engine's message), for the caller to
classify; a connection that fails at :func:`connect` is an :class:`EngineError`.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.errors import EngineError

__all__ = ["DEFAULT_HOST", "Engine", "EngineAPIError", "EngineInfo", "connect"]

DEFAULT_HOST = "unix:///var/run/docker.sock"  # the socket the runner mounts
READ_TIMEOUT = 120.0  # seconds for one engine call (a slow registry behind /distribution)
MAX_ANSWER = 8 << 20  # bytes of one answer that are read (an /info is a few KiB)
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"


class EngineAPIError(Exception):
    """The engine answered a request with an HTTP error."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}")
        self.status = status
        self.explanation = explanation  # what errors.engine_message shows


@dataclass(frozen=True)
class EngineInfo:
    """What the engine said about itself (``GET /info``)."""

    version: str
    # Images in containerd: the docker driver exports caches and builds several platforms.
    containerd_store: bool


def parse_info(answer: Mapping[str, Any]) -> EngineInfo:
    status = answer.get("DriverStatus") or []
    containerd = any(
        isinstance(pair, list) and pair[:2] == ["driver-type", CONTAINERD_SNAPSHOTTER]
        for pair in status
    )
    return EngineInfo(str(answer.get("ServerVersion") or "unknown"), containerd)


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.0 request; status, headers (lower-case names) and body.

    HTTP/1.0, so the engine answers without chunked encoding and closes the
    connection after the body: the answer is everything up to EOF, at most
    MAX_ANSWER bytes. (http.client would cost ~15 ms of imports on every run.)
    """
    sock.sendall(request)
    received = bytearray()
    while len(received) <= MAX_ANSWER:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, sep, body = bytes(received).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(None, 2)
    if not sep or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise OSError(f"the engine's answer is not HTTP: {head[:80]!r}")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    try:
        return int(status_line[1]), headers, body[:MAX_ANSWER]
    except ValueError:
        raise OSError(f"the engine's answer has no status: {head[:80]!r}") from None


class Engine:
    """A Docker Engine API client for ``unix://PATH`` or ``tcp://HOST:PORT`` (plain HTTP)."""

    def __init__(self, host: str, timeout: float = READ_TIMEOUT) -> None:
        self.host = host
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(host)
        if parsed.scheme == "unix" and parsed.path:
            self._unix: str | None = parsed.path
            self._netloc = ""
        elif parsed.scheme in ("tcp", "http") and parsed.hostname:
            self._unix = None
            self._netloc = f"{parsed.hostname}:{parsed.port or 2375}"
        else:
            raise EngineError(
                f"DOCKER_HOST {host!r} is not an engine address the action can use: "
                "unix:///path/to/docker.sock or tcp://host:port"
            )
        self._info: EngineInfo | None = None
        self.api_version: str | None = None  # the engine's own, from its ping's API-Version

    def _connect(self) -> socket.socket:
        if self._unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self._unix
        else:
            host, _, port = self._netloc.rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            address = (host.strip("[]"), int(port))
        try:
            sock.settimeout(self.timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; its JSON answer (None when empty). OSError when the engine is away."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        lines = [f"{method} {path} HTTP/1.0", "Host: docker", "User-Agent: deployer"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        with self._connect() as sock:
            status, head, body = _exchange(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        self.api_version = head.get("api-version") or self.api_version
        try:
            answer = json.loads(body) if body.strip() else None
        except ValueError:
            answer = None
        if status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else None
            text = str(message or body[:500].decode("utf-8", "replace").strip() or "no message")
            raise EngineAPIError(status, text)
        return answer

    def info(self) -> EngineInfo:
        """What the engine offers (``GET /info``, asked once)."""
        if self._info is None:
            answer = self.request("GET", "/info")
            self._info = parse_info(answer if isinstance(answer, dict) else {})
        return self._info

    def inspect_distribution(
        self, image: str, auth_config: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        """What the registry holds for ``image`` (``Descriptor``: digest, mediaType, size)."""
        headers = {}
        if auth_config:
            encoded = base64.urlsafe_b64encode(json.dumps(dict(auth_config)).encode())
            headers["X-Registry-Auth"] = encoded.decode()
        answer = self.request("GET", f"/distribution/{_quote(image)}/json", headers=headers)
        return answer if isinstance(answer, dict) else {}

    def remove_container(self, container: str, *, force: bool = False, v: bool = False) -> None:
        query = {"force": str(force).lower(), "v": str(v).lower()}
        self.request("DELETE", f"/containers/{_quote(container)}", query=query)

    def remove_volume(self, name: str, *, force: bool = False) -> None:
        self.request("DELETE", f"/volumes/{_quote(name)}", query={"force": str(force).lower()})

    def close(self) -> None:
        """Nothing to release: every request has its own connection."""


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="/:")


def connect(host: str | None) -> Engine:
    """The engine at ``host`` (DOCKER_HOST) or the mounted socket, once it answered a ping."""
    engine = Engine(host or DEFAULT_HOST)
    try:
        engine.request("GET", "/_ping")
    except (OSError, EngineAPIError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise EngineError(
            f"Cannot reach the Docker engine at {engine.host}: {reason}. The action needs the "
            "runner's Docker socket (Linux runners mount /var/run/docker.sock), or DOCKER_HOST "
            "pointing at an engine"
        ) from None
    return engine
