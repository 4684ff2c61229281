"""A local stand-in for the HTTP checks Flagger calls and the Prometheus it asks (test code).

Started by scripts/testenv/progressive-up.sh on loopback; its URL is
TEST_WEBHOOK_URL in .testenv/progressive.env. Only the standard library.

- ``GET|POST /pass`` → 200, ``/fail`` → 500: a webhook check that always
  passes or always fails (Flagger counts any status above 202 as a failure).
- ``GET|POST /gate/<name>`` → 200 while the gate is open, 403 while closed
  (the default), so a test decides when a check passes:
  ``POST /gate/<name>/open`` and ``POST /gate/<name>/close`` toggle it, and
  ``GET /gate/<name>/status`` says ``open`` or ``closed``.
- ``GET /calls`` → JSON list of the last 200 check calls (path, method, the
  JSON body Flagger sent: canary name, namespace, phase, metadata), newest
  last; ``DELETE /calls`` empties it.
- ``GET /api/v1/query`` → Prometheus's answer to ``vector(1)``, which is all
  Flagger asks at start-up (``-metrics-server`` points here, so it reports the
  metrics server online; canaries in the tests use webhooks, not metrics).
- ``GET /healthz`` → 200.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 1024
MAX_CALLS = 200
GATE_NAME_MAX = 63


class State:
    """Gates and the call log, shared by the request threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open_gates: set[str] = set()
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)


class Handler(BaseHTTPRequestHandler):
    state: State
    server_version = "deployer-webhook-standin"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.command} {self.path} {args[1:]}\n")

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def _check(self, path: str, status: int) -> None:
        with self.state.lock:
            self.state.calls.append(
                {"time": time.time(), "method": self.command, "path": path, "body": self._body()}
            )
        self._reply(status, {"status": status})

    def _route(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/healthz":
            self._reply(200, {"ok": True})
        elif path == "/pass":
            self._check(path, 200)
        elif path == "/fail":
            self._check(path, 500)
        elif parts[0] == "gate" and len(parts) in (2, 3) and 0 < len(parts[1]) <= GATE_NAME_MAX:
            self._gate(path, parts[1], parts[2] if len(parts) == 3 else "")
        elif path == "/calls" and self.command == "GET":
            with self.state.lock:
                self._reply(200, list(self.state.calls))
        elif path == "/calls" and self.command == "DELETE":
            with self.state.lock:
                self.state.calls.clear()
            self._reply(200, {"ok": True})
        elif path == "/api/v1/query":
            sample = {"metric": {}, "value": [time.time(), "1"]}
            data = {"resultType": "vector", "result": [sample]}
            self._reply(200, {"status": "success", "data": data})
        else:
            self._reply(404, {"error": f"no such path {path}"})

    def _gate(self, path: str, name: str, action: str) -> None:
        if action == "":
            with self.state.lock:
                is_open = name in self.state.open_gates
            self._check(path, 200 if is_open else 403)
        elif action in ("open", "close") and self.command == "POST":
            with self.state.lock:
                if action == "open":
                    self.state.open_gates.add(name)
                else:
                    self.state.open_gates.discard(name)
            self._reply(200, {"gate": name, "open": action == "open"})
        elif action == "status":
            with self.state.lock:
                is_open = name in self.state.open_gates
            self._reply(200, {"gate": name, "status": "open" if is_open else "closed"})
        else:
            self._reply(404, {"error": f"no such gate action {action}"})

    do_GET = do_POST = do_DELETE = _route


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    Handler.state = State()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    sys.stderr.write(f"webhook stand-in listening on http://127.0.0.1:{args.port}\n")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
