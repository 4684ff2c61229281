"""A stand-in for the GitHub REST API's issue comments, on a loopback port, for tests.

It answers as api.github.com does (what deployer.github uses): list a pull request's
comments page by page (``per_page``, ``page``, a ``Link`` header whose next URL uses
GitHub's ``/repositories/<id>/…`` form), create one, update one. It checks the
``Authorization: Bearer`` token, records every call, and can be told to refuse
(403 as a token without ``pull-requests: write`` gets it), to fail the first
requests with 502, or to answer with a redirect to another host.

Started by the tests themselves (``with GitHubStandin() as github: …``); also runs
alone: ``python -m tests.github_standin`` prints its URL.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "ghs_standin0123456789abcdefghijklmnopqrstu"
REPOSITORY = "acme/web"
REPOSITORY_ID = 4711
FORBIDDEN = {
    "message": "Resource not accessible by integration",
    "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
    "status": "403",
}
_LIST = re.compile(
    r"^/(?:repos/(?P<repo>[^/]+/[^/]+)|repositories/(?P<id>\d+))/issues/(?P<n>\d+)/comments$"
)
_ONE = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)$")


@dataclass
class Call:
    method: str
    path: str
    authorization: str
    body: Any


@dataclass
class State:
    token: str = TOKEN
    forbid_writes: bool = False  # 403 on POST/PATCH, as a read-only token gets
    fail_first: int = 0  # answer this many requests with 502 first
    redirect: bool = False  # answer everything with a 301 to another host
    delete_after_listing: bool = False  # our comments vanish once listed (deleted meanwhile)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    next_id: int = 1000

    def add_comment(self, number: int, body: str, login: str = "someone") -> dict[str, Any]:
        self.next_id += 1
        comment = {
            "id": self.next_id,
            "body": body,
            "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
            "html_url": f"https://github.com/{REPOSITORY}/pull/{number}#issuecomment-{self.next_id}",
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def ours(self, number: int) -> list[dict[str, Any]]:
        return [
            c for c in self.comments.get(number, []) if c["body"].startswith("<!-- deployer-plan ")
        ]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _answer(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self.server.lock:
            state.calls.append(
                Call(self.command, self.path, self.headers.get("Authorization", ""), body)
            )
            if state.redirect:
                return self._answer(301, {}, {"Location": "https://elsewhere.example/steal"})
            if state.fail_first > 0:
                state.fail_first -= 1
                return self._answer(502, {"message": "Server Error"})
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._answer(401, {"message": "Bad credentials"})
            self._route(state, body)

    def _route(self, state: State, body: Any) -> None:
        url = urlsplit(self.path)
        listing = _LIST.match(url.path)
        one = _ONE.match(url.path)
        if listing and listing["repo"] not in (None, REPOSITORY):
            return self._answer(404, {"message": "Not Found"})
        if listing and self.command == "GET":
            return self._list(state, int(listing["n"]), parse_qs(url.query))
        if state.forbid_writes and self.command in ("POST", "PATCH"):
            return self._answer(403, FORBIDDEN)
        if listing and self.command == "POST":
            return self._answer(
                201, state.add_comment(int(listing["n"]), body["body"], "github-actions[bot]")
            )
        if one and self.command == "PATCH":
            for comments in state.comments.values():
                for comment in comments:
                    if comment["id"] == int(one["id"]):
                        comment["body"] = body["body"]
                        return self._answer(200, comment)
        return self._answer(404, {"message": "Not Found"})

    def _list(self, state: State, number: int, query: dict[str, list[str]]) -> None:
        per_page = min(100, int(query.get("per_page", ["30"])[0]))
        page = int(query.get("page", ["1"])[0])
        comments = state.comments.get(number, [])
        chunk = comments[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(comments):
            host, port = self.server.server_address[:2]
            url = (
                f"http://{host}:{port}/repositories/{REPOSITORY_ID}/issues/{number}/comments"
                f"?per_page={per_page}&page={page + 1}"
            )
            headers["Link"] = f'<{url}>; rel="next"'
        self._answer(200, chunk, headers)
        if state.delete_after_listing:
            state.comments[number] = [c for c in comments if c not in state.ours(number)]

    do_GET = do_POST = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.lock = threading.Lock()


class GitHubStandin:
    """``with GitHubStandin() as github:`` → ``github.url``, ``github.state``."""

    def __init__(self) -> None:
        self.state = State()
        self._server = _Server(self.state)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GitHubStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


if __name__ == "__main__":
    with GitHubStandin() as standin:
        print(standin.url, flush=True)
        threading.Event().wait()
