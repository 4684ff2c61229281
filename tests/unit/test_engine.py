"""deployer.engine against a small Engine API served on a unix socket (real HTTP, real socket)."""

from __future__ import annotations

import base64
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from deployer.engine import Engine, EngineAPIError, connect, parse_info
from deployer.errors import EngineError


class _Handler(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[tuple[str, str], tuple[int, Any]]] = {}
    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def _answer(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers)))
        status, body = self.answers.get((self.command, self.path.split("?")[0]), (404, None))
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_DELETE = _answer

    def address_string(self) -> str:  # a unix socket has no client address
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, type[_Handler]]]:
    path = tmp_path / "docker.sock"
    handler = type("Handler", (_Handler,), {"answers": {}, "seen": []})
    server = _Server(str(path), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_connect_pings_once_and_asks_for_info_only_when_needed(
    served: tuple[str, type[_Handler]],
) -> None:
    host, handler = served
    handler.answers[("GET", "/_ping")] = (200, None)
    handler.answers[("GET", "/info")] = (
        200,
        {
            "ServerVersion": "29.8.1",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        },
    )
    engine = connect(host)
    assert [(m, p) for m, p, _ in handler.seen] == [("GET", "/_ping")]  # unversioned
    assert engine.info().containerd_store and engine.info().version == "29.8.1"
    assert [p for _, p, _ in handler.seen] == ["/_ping", "/info"]  # asked once


def test_distribution_sends_the_login_as_the_engine_expects(
    served: tuple[str, type[_Handler]],
) -> None:
    host, handler = served
    path = "/distribution/127.0.0.1:5000/web%40sha256:ab/json"
    handler.answers[("GET", path)] = (200, {"Descriptor": {"digest": "sha256:ab"}})
    auth = {"username": "bob", "password": "p/w+=", "serveraddress": "127.0.0.1:5000"}
    answer = Engine(host).inspect_distribution("127.0.0.1:5000/web@sha256:ab", auth_config=auth)
    assert answer == {"Descriptor": {"digest": "sha256:ab"}}
    [(_, sent, headers)] = handler.seen
    assert sent == path
    assert json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"])) == auth


def test_an_http_error_carries_the_engines_status_and_message(
    served: tuple[str, type[_Handler]],
) -> None:
    host, handler = served
    handler.answers[("DELETE", "/containers/gone")] = (404, {"message": "No such container: gone"})
    with pytest.raises(EngineAPIError) as caught:
        Engine(host).remove_container("gone", force=True, v=True)
    assert (caught.value.status, caught.value.explanation) == (404, "No such container: gone")
    assert handler.seen[0][1] == "/containers/gone?force=true&v=true"


def test_no_engine_and_a_bad_address_are_errors_for_people(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="Cannot reach the Docker engine at unix://"):
        connect(f"unix://{tmp_path}/none.sock")
    with pytest.raises(EngineError, match="not an engine address"):
        connect("ssh://build@host")


def test_the_classic_image_store_is_told_apart() -> None:
    assert not parse_info({"DriverStatus": [["Backing Filesystem", "extfs"]]}).containerd_store
    assert not parse_info({}).containerd_store
