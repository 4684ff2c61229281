"""The one HTTP client of deployer.cloud: a deadline per request, a retry cap, a size cap.

Messages name the host only: a URL's query or a request body can carry a token.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from deployer.errors import CredentialsError

__all__ = ["MAX_BODY", "Answer", "Http", "send"]

MAX_BODY = 1024 * 1024
TIMEOUT = 15.0
ATTEMPTS = 3
_RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


# (method, url, headers, body, ca_file) -> Answer; tests pass fakes of this shape.
Http = Callable[[str, str, Mapping[str, str], bytes | None, str | None], Answer]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def send(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
    ca_file: str | None = None,
) -> Answer:
    """One request, retried on connection errors, 429 and 5xx (3 tries, ~3 s of pauses)."""
    if urlsplit(url).scheme not in ("https", "http"):
        raise CredentialsError(f"{_origin(url)} is not an http(s) URL")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(0.5 * 2**attempt)
        request = urllib.request.Request(url, body, dict(headers), method=method)  # noqa: S310
        try:
            opened = urllib.request.urlopen(request, timeout=TIMEOUT, context=context)  # noqa: S310 - http(s): checked above
            with opened as resp:
                return Answer(int(resp.status), resp.read(MAX_BODY))
        except urllib.error.HTTPError as e:
            answer = Answer(int(e.code), e.read(MAX_BODY))
            if e.code not in _RETRY_STATUS:
                return answer
            problem = f"HTTP {e.code}"
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise CredentialsError(
                    f"The TLS certificate of {_origin(url)} is not trusted: "
                    f"{reason.verify_message or reason}"
                ) from None
            problem = str(getattr(reason, "strerror", None) or reason)
        except (TimeoutError, OSError) as e:
            problem = str(getattr(e, "strerror", None) or type(e).__name__)
    raise CredentialsError(
        f"Cannot reach {_origin(url)}: {problem} (gave up after {ATTEMPTS} tries)"
    )
