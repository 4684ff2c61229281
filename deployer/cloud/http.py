"""The one HTTP client of deployer.cloud: a deadline per request, a retry cap, a size cap.

Every request carries a credential (a bearer token, a signature, a client secret
or assertion in the body), so it goes only to an https URL (plain http only to a
loopback address, where the tests' stand-ins listen) and a redirect is never
followed: urllib would send the ``Authorization`` header and the body on to
wherever the answer points. :func:`checked_url` is the same rule for the
endpoints the job's environment may override, with the variable named.

Messages name the host only: a URL's query or a request body can carry a token.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from deployer.errors import CredentialsError

__all__ = ["MAX_BODY", "Answer", "Http", "checked_url", "is_loopback", "send"]

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
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "a malformed URL"
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{port}" if port else "")


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` (no port; IPv6 with or without brackets) is this machine."""
    name = hostname.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def checked_url(url: str, what: str) -> str:
    """``url`` if a credential may be sent to it: https, or http to a loopback address.

    ``what`` names where the URL came from (``AZURE_AUTHORITY_HOST``). Raises
    CredentialsError saying what is wrong and naming the host only.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise CredentialsError(f"{what} is not a URL") from None
    if not host or parts.scheme not in ("https", "http") or parts.username is not None:
        raise CredentialsError(f"{what} ({_origin(url)}) is not an https://host/... URL")
    if parts.scheme == "http" and not is_loopback(host):
        raise CredentialsError(
            f"{what} ({_origin(url)}) is plain http: a credential would travel unencrypted; "
            "use https (plain http only to a loopback address)"
        )
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer: following it would send the credentials on."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


def _opener(ca_file: str | None) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    return urllib.request.build_opener(_NoRedirects(), urllib.request.HTTPSHandler(context=context))


def send(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
    ca_file: str | None = None,
) -> Answer:
    """One request, retried on connection errors, 429 and 5xx (3 tries, ~3 s of pauses).

    A redirect is answered as it is (its 3xx status), never followed.
    """
    checked_url(url, "The URL")
    opener = _opener(ca_file)
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(0.5 * 2**attempt)
        request = urllib.request.Request(url, body, dict(headers), method=method)  # noqa: S310
        try:
            opened = opener.open(request, timeout=TIMEOUT)
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
