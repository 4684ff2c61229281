"""Fault injection on loopback: a TCP proxy that can cut, reset, answer 500 or delay.

:class:`FaultProxy` listens on ``127.0.0.1:<free port>`` and forwards each
connection to ``target``. Faults apply per accepted connection, in order:

* ``reset`` connections are accepted and closed with RST (SO_LINGER 0);
* ``http_500`` connections read the request head and get ``500 Internal Server
  Error`` with ``Connection: close``;
* ``delay`` seconds are slept before each forwarded chunk (a slow link);
* :meth:`cut` closes the listener and every open connection (the server
  "stopped" from the client's view: connection refused); :meth:`restore` listens
  again on the same port (the server "restarted").

Also :class:`OwnRegistry`: a private ``docker-registry serve`` (CNCF distribution)
with its own htpasswd, data and port, for faults we must not cause on the shared one.
Everything binds to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["FaultProxy", "OwnRegistry", "free_port"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rst_close(sock: socket.socket) -> None:
    """Drop a connection at once. ``shutdown`` first: a bare ``close`` neither wakes a
    thread blocked in ``recv`` on it nor tells the peer anything."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A threaded TCP proxy in front of ``target`` (host, port) on loopback."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        assert target[0] in ("127.0.0.1", "localhost"), "loopback only"
        self.target = target
        self.port = port or free_port()
        self.reset = 0  # the next N connections are reset
        self.http_500 = 0  # the next N connections get a 500 answer
        self.delay = 0.0  # seconds before each forwarded chunk
        self.connections = 0  # accepted so far
        self.faulted = 0  # connections that got a fault
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FaultProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Stop listening and drop every open connection (RST)."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _rst_close(sock)

    def restore(self) -> None:
        """Listen again on the same port."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    stop = cut

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.cut()

    # -- connections -----------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                if self.reset > 0:
                    self.reset -= 1
                    self.faulted += 1
                    fault = "reset"
                elif self.http_500 > 0:
                    self.http_500 -= 1
                    self.faulted += 1
                    fault = "500"
                else:
                    fault = ""
                    self._open.add(client)
            if fault == "reset":
                _rst_close(client)
            elif fault == "500":
                threading.Thread(target=self._answer_500, args=(client,), daemon=True).start()
            else:
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    @staticmethod
    def _answer_500(client: socket.socket) -> None:
        with client:
            client.settimeout(5)
            head = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            body = b'{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}'
            with contextlib.suppress(OSError):
                client.sendall(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            self._drop(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._stopping.is_set() and client not in self._open:
                _rst_close(upstream)
                return
            self._open.add(upstream)
        threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
        self._pipe(upstream, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            self._drop(source)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()


class OwnRegistry:
    """A private registry: ``docker-registry serve`` on its own port, data and htpasswd.

    Started and stopped by the test that owns it, never the shared one of make env-up.
    """

    USERNAME = "faults"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.password = "faults-" + secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        htpasswd = self.dir / "htpasswd"
        if not htpasswd.exists():
            line = subprocess.run(
                ["htpasswd", "-Bbn", self.USERNAME, self.password],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            htpasswd.write_text(line + "\n")
        text = (ROOT / "testenv" / "registry" / "config.yml").read_text()
        for key, value in {
            "@DATA_DIR@": str(self.dir / "data"),
            "@ADDR@": self.address,
            "@HTPASSWD@": str(htpasswd),
            "@HTTP_SECRET@": secrets.token_hex(16),
        }.items():
            text = text.replace(key, value)
        path = self.dir / "config.yml"
        path.write_text(text)
        return path

    def start(self) -> OwnRegistry:
        if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
            raise RuntimeError("docker-registry/htpasswd missing: run scripts/install-deps.sh")
        config = self._config()
        log = (self.dir / "registry.log").open("ab")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: see {self.dir / 'registry.log'}")
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1)
            except urllib.error.HTTPError as e:
                e.close()
                if e.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("own registry did not answer within 20 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
