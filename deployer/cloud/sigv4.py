"""AWS Signature Version 4, by hand: the few requests deployer signs (STS, ECR).

The full botocore does not fit the action image; this is the algorithm of
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html,
checked against AWS's published test suite and against botocore (tests only).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "ALGORITHM",
    "Credentials",
    "authorization",
    "canonical_request",
    "presign_url",
    "sign_request",
]

ALGORITHM = "AWS4-HMAC-SHA256"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """An access key, and the session token of temporary credentials."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expires: float | None = None  # epoch seconds; None: not known to expire


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_request(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Sequence[tuple[str, str]],
    payload_hash: str,
) -> tuple[str, str]:
    """The canonical request and its signed-headers list."""
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in query)
    )
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower().strip(), []).append(" ".join(value.split()))
    names = sorted(merged)
    canonical_headers = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    signed = ";".join(names)
    uri = quote(path or "/", safe="/-_.~")
    text = "\n".join([method, uri, canonical_query, canonical_headers, signed, payload_hash])
    return text, signed


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def authorization(
    creq: str, signed: str, creds: Credentials, region: str, service: str, amz_date: str
) -> tuple[str, str]:
    """(signature, Authorization header value) for a canonical request."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(creq.encode()).hexdigest()
    to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"
    key = _hmac(("AWS4" + creds.secret_key).encode(), amz_date[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    header = (
        f"{ALGORITHM} Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return signature, header


def _amz_date(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def sign_request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    creds: Credentials,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus host, date, token and Authorization."""
    parts = urlsplit(url)
    signed_headers = {"host": parts.netloc, **headers, "x-amz-date": _amz_date(now)}
    if creds.token:
        signed_headers["x-amz-security-token"] = creds.token
    creq, signed = canonical_request(
        method,
        parts.path,
        parse_qsl(parts.query, keep_blank_values=True),
        list(signed_headers.items()),
        hashlib.sha256(body).hexdigest(),
    )
    _, header = authorization(creq, signed, creds, region, service, _amz_date(now))
    return {**signed_headers, "authorization": header}


def presign_url(
    url: str,
    creds: Credentials,
    region: str,
    service: str,
    now: datetime,
    expires: int,
    headers: dict[str, str] | None = None,
) -> str:
    """A GET URL that carries its own signature (query authentication).

    ``headers`` are signed too and must be sent with the URL (EKS: x-k8s-aws-id).
    """
    parts = urlsplit(url)
    amz_date = _amz_date(now)
    all_headers = {"host": parts.netloc, **(headers or {})}
    signed = ";".join(sorted(h.lower() for h in all_headers))
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{creds.access_key}/{amz_date[:8]}/{region}/{service}/aws4_request"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", signed),
    ]
    if creds.token:
        query.append(("X-Amz-Security-Token", creds.token))
    # Not UNSIGNED-PAYLOAD: that is S3's convention; other services sign the empty body.
    creq, _ = canonical_request("GET", parts.path, query, list(all_headers.items()), _EMPTY_SHA256)
    signature, _ = authorization(creq, signed, creds, region, service, amz_date)
    encoded = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in query)
    return (
        f"{parts.scheme}://{parts.netloc}{parts.path or '/'}?{encoded}&X-Amz-Signature={signature}"
    )
