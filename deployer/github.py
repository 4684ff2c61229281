"""The pull request's plan comment: all of deployer's I/O with the GitHub REST API.

One comment per job holds the dry run's plan and is updated in place on every run:
it is found again by a hidden marker at its start that names the workflow, the job,
the step and the deploy target (cluster and namespace, so the legs of a matrix keep
one comment each). Comments are listed page by page (at most :data:`MAX_PAGES`).

The token goes only to ``GITHUB_API_URL`` (from the runner: trusted), over https
(plain http only to a loopback address, for tests), in a header, never in a URL or
the log; redirects are not followed; every request has a timeout and the whole
comment a deadline (:data:`BUDGET_SECONDS`), retried at most :data:`ATTEMPTS` times.
A refused comment never fails the run: the plan is in the summary and the outputs.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from deployer.actions import ActionsIO, cut_markdown
from deployer.clock import SYSTEM_CLOCK, Clock
from deployer.config import GitHubContext
from deployer.errors import GitHubError
from deployer.markdown import code

__all__ = [
    "BUDGET_SECONDS",
    "COMMENT_CHARS",
    "GitHub",
    "PullRequest",
    "comment_marker",
    "comment_plan",
    "plan_comment",
    "pull_request_of",
]

API_VERSION = "2022-11-28"
COMMENT_CHARS = 65_536  # GitHub refuses a longer comment body
PER_PAGE = 50  # a page of comments is at most ~13 MB (65,536 characters each)
MAX_PAGES = 40  # 2,000 comments looked at for our marker
MAX_BODY_BYTES = 16 * 1024 * 1024
ATTEMPTS = 3
BUDGET_SECONDS = 30.0  # for the whole comment: listing, then writing
REQUEST_SECONDS = 10.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_EVENTS = ("pull_request", "pull_request_target")
_EVENT_BYTES = 32 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
_NEXT = re.compile(r'<([^<>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True)
class PullRequest:
    """The pull request a run is for."""

    number: int
    read_only: bool  # a pull_request event from a fork: the token cannot write


def pull_request_of(github: GitHubContext) -> PullRequest | None:
    """The pull request of a ``pull_request``/``pull_request_target`` run, else None.

    The runner writes the event payload; only the number and the head repository
    are read (a fork's ``pull_request`` run gets a read-only token and no secrets).
    """
    if github.event_name not in _EVENTS or not github.event_path:
        return None
    try:
        with open(github.event_path, "rb") as fh:
            event = json.loads(fh.read(_EVENT_BYTES))
        pr = event["pull_request"]
        number = pr["number"]
        head = (pr.get("head") or {}).get("repo") or {}
        base = (pr.get("base") or {}).get("repo") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        return None
    fork = head.get("full_name") != base.get("full_name") or bool(head.get("fork"))
    return PullRequest(number, read_only=fork and github.event_name == "pull_request")


def comment_marker(github: GitHubContext, target: str) -> str:
    """The hidden first line that finds this job's comment again (only hex inside)."""
    identity = "\0".join([github.workflow, github.job, github.action, target])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"<!-- deployer-plan {digest} -->"


def plan_comment(marker: str, github: GitHubContext, plan: str, failure: str = "") -> str:
    """The comment: the marker, a title, the plan (or why there is none), where it came from.

    ``plan`` is the rendered (inert, redacted) plan; ``failure`` the run's error, shown
    in a code span so the comment never shows a stale plan for a newer commit.
    """
    commit = code(github.sha[:7]) if github.sha else "this commit"
    run = f"[run {github.run_id}]({github.run_url})" if github.run_url else "the run"
    where = code(f"{github.workflow} / {github.job}", limit=120)
    if failure:
        title = f"### ❌ No deploy plan for {commit} ({where})"
        body = f"The dry run failed: {code(failure, limit=1_000)}. The log of {run} says more."
    else:
        title = f"### 📝 Deploy plan for {commit} ({where})"
        body = plan
    foot = f"<sub>From {run}; this comment is updated by every run of the job.</sub>"
    room = COMMENT_CHARS - len(marker) - len(title) - len(foot) - 16
    if len(body) > room:  # the plan is capped at 64 KiB, which can be more characters
        body = cut_markdown(body, room)
    return "\n\n".join([marker, title, body.rstrip(), foot]) + "\n"


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    data: Any


class GitHub:
    """A minimal GitHub REST client: one token, one API URL, retries in one budget."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        cancel: threading.Event | None = None,
        budget: float = BUDGET_SECONDS,
    ) -> None:
        parts = urlsplit(api_url.rstrip("/"))
        loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK
        if not parts.hostname or not (parts.scheme == "https" or loopback):
            raise GitHubError(
                f"GITHUB_API_URL {api_url[:100]!r} is not an https URL: the token is not sent there"
            )
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._base = parts.path
        self._token = token
        self._clock = clock
        self._cancel = cancel or threading.Event()
        self._deadline = clock.monotonic() + budget

    # -- the comment -------------------------------------------------------------------

    def find_comment(self, repository: str, number: int, marker: str) -> dict[str, Any] | None:
        """The first comment on the pull request that starts with ``marker``."""
        query = urlencode({"per_page": PER_PAGE})
        url: str | None = f"{self._base}/repos/{repository}/issues/{number}/comments?{query}"
        for _ in range(MAX_PAGES):
            if url is None:
                return None
            answer = self.request("GET", url)
            for comment in answer.data if isinstance(answer.data, list) else []:
                body = comment.get("body") if isinstance(comment, dict) else None
                if isinstance(body, str) and body.startswith(marker):
                    return dict(comment)
            url = self._next_page(answer.headers.get("link", ""))
        return None

    def upsert_comment(
        self, repository: str, number: int, marker: str, body: str
    ) -> tuple[str, str]:
        """Update this job's comment, or create it; ("updated" | "created", its URL)."""
        found = self.find_comment(repository, number, marker)
        answer: _Answer | None = None
        verb = "updated"
        if found is not None and isinstance(found.get("id"), int):
            path = f"{self._base}/repos/{repository}/issues/comments/{found['id']}"
            try:
                answer = self.request("PATCH", path, {"body": body})
            except GitHubError as e:
                if e.status != 404:
                    raise  # 404: deleted since it was listed, so make it again
        if answer is None:
            path = f"{self._base}/repos/{repository}/issues/{number}/comments"
            answer = self.request("POST", path, {"body": body})
            verb = "created"
        url = answer.data.get("html_url", "") if isinstance(answer.data, dict) else ""
        return verb, str(url)

    def _next_page(self, link: str) -> str | None:
        """The next page's path, only if it is on the same API server (the token goes there)."""
        found = _NEXT.search(link)
        if not found:
            return None
        parts = urlsplit(found[1])
        same = (parts.scheme, parts.hostname, parts.port) == (self._scheme, self._host, self._port)
        if not same or not parts.path.startswith(self._base + "/"):
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    # -- one request -------------------------------------------------------------------

    def request(self, method: str, path: str, body: object = None) -> _Answer:
        """Send one request, retried on 429/5xx, a rate limit and dropped connections."""
        problem = ""
        for attempt in range(ATTEMPTS):
            remaining = self._deadline - self._clock.monotonic()
            if remaining <= 0:
                break
            try:
                answer = self._send(method, path, body, min(REQUEST_SECONDS, remaining))
            except (OSError, http.client.HTTPException) as e:
                problem = f"cannot reach {self._host}: {type(e).__name__}"
            else:
                if not _retried(answer):
                    return _checked(answer, method)
                problem = f"{answer.status} {_message(answer)}"
            pause = min(2.0**attempt, max(0.0, self._deadline - self._clock.monotonic()))
            if attempt + 1 < ATTEMPTS and self._clock.wait(self._cancel, pause):
                raise GitHubError("cancelled before GitHub answered")
        raise GitHubError(f"GitHub did not answer {method} in time: {problem or 'no time left'}")

    def _send(self, method: str, path: str, body: object, timeout: float) -> _Answer:
        connection: http.client.HTTPConnection
        if self._scheme == "https":
            context = ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token}",
            "User-Agent": "deployer",
            "X-GitHub-Api-Version": API_VERSION,
        }
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read(MAX_BODY_BYTES + 1)
            found = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        if len(data) > MAX_BODY_BYTES:
            raise GitHubError(f"GitHub's answer to {method} was larger than 16 MiB")
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return _Answer(response.status, found, parsed)


def _message(answer: _Answer) -> str:
    data = answer.data
    text = data.get("message", "") if isinstance(data, dict) else ""
    return str(text)[:300]


def _retried(answer: _Answer) -> bool:
    if answer.status in (429, 500, 502, 503, 504):
        return True
    limited = answer.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in answer.headers
    return answer.status == 403 and limited  # a secondary rate limit, not a refusal


def _checked(answer: _Answer, method: str) -> _Answer:
    if 200 <= answer.status < 300:
        return answer
    if 300 <= answer.status < 400:
        raise GitHubError(
            f"GitHub answered {method} with a redirect ({answer.status}); it is not followed "
            "with the token"
        )
    raise GitHubError(f"{answer.status} {_message(answer)}".strip(), status=answer.status)


_FORK = (
    "This pull request comes from a fork: GitHub gives its pull_request runs a read-only "
    "token and no secrets, so the plan is not posted as a comment."
)


def _advice(error: GitHubError) -> str:
    if error.status == 403:
        return (
            f"GitHub refused to write the comment ({error.message}): give the job "
            "`permissions: pull-requests: write` (a fork's pull_request run only gets a "
            "read-only token). The plan is in the job summary and the plan output."
        )
    if error.status == 401:
        return (
            f"GitHub did not accept github-token ({error.message}); pass ${{{{ github.token }}}}."
        )
    if error.status == 404:
        return (
            f"GitHub found no such pull request for this token ({error.message}); the token "
            "must be for this repository."
        )
    return f"The plan comment was not written: {error.message}."


def comment_plan(
    io: ActionsIO,
    github: GitHubContext,
    token: str,
    *,
    target: str,
    plan: str,
    failure: str = "",
    cancel: threading.Event | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Put the plan (or why there is none) in this job's comment on the pull request.

    Never raises: a comment that cannot be written is a warning that says why.
    """
    pr = pull_request_of(github)
    if pr is None:
        io.info(
            f"comment-on-pr: a {github.event_name or 'non-'} event, not a pull request: no comment"
        )
        return
    if pr.read_only:
        where = "Why the dry run failed" if failure else "The plan"
        io.notice(
            f"{_FORK} {where} is in this job's summary.",
            title="Plan not posted on the pull request",
        )
        return
    marker = comment_marker(github, target)
    body = io.redact(plan_comment(marker, github, plan, failure))
    try:
        client = GitHub(github.api_url, token, clock=clock, cancel=cancel)
        verb, url = client.upsert_comment(github.repository, pr.number, marker, body)
    except GitHubError as e:
        io.warning(_advice(e), title="Plan not posted on the pull request")
        return
    io.info(f"Plan comment {verb} on pull request #{pr.number}: {url}")
