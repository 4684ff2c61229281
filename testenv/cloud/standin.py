"""Local stand-ins for the cloud identity services the action talks to (test code).

One process on loopback serves, over HTTPS (certificate from the test cluster's
CA) and plain HTTP, the protocols the EKS/GKE/AKS credential plugins and the
registries use, judging credentials the way each cloud does:

- ``POST /tokenreview``: the kube-apiserver's token webhook
  (authentication.k8s.io/v1 TokenReview). ``k8s-aws-v1.`` tokens are decoded
  and their presigned STS ``GetCallerIdentity`` URL checked like
  aws-iam-authenticator does (host, action, version, expiry, signed
  ``x-k8s-aws-id`` equal to the cluster name) and its SigV4 signature verified
  with the test secret key (or temporary credentials issued below); Google and
  Azure access tokens are accepted when this service issued them and they have
  not expired.
- AWS STS (form POST to ``/``): ``AssumeRoleWithWebIdentity`` (unsigned; the
  web identity JWT is verified against the GitHub OIDC stand-in's key),
  ``AssumeRole`` and ``GetCallerIdentity`` (SigV4-signed); XML answers.
- ECR ``GetAuthorizationToken`` (JSON 1.1 POST with ``X-Amz-Target``,
  SigV4-signed): base64 ``AWS:<password>`` of the test registry's user ``AWS``.
- Google OAuth2 ``POST /google/token`` (JWT-bearer grant of the service-account
  key generated here) and the STS token exchange ``POST /google/sts/v1/token``
  (``external_account`` / workload identity federation with a GitHub OIDC token).
- Entra ID ``POST /<tenant>/oauth2/v2.0/token``: client credentials with the
  client secret or a client assertion (a GitHub OIDC token for
  ``api://AzureADTokenExchange``).
- GitHub Actions OIDC ``GET /github/idtoken?api-version=2.0&audience=...`` with
  the request token as bearer: ``{"value": JWT}``.

Keys and secrets are made on first start and kept in the state directory;
``cloud.env`` there holds the TEST_* settings for the tests. Only the
``cryptography`` package is needed beyond the standard library.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import signal
import ssl
import string
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MAX_BODY = 64 * 1024
PRESIGN_WINDOW = 15 * 60  # aws-iam-authenticator accepts a token for 15 min after X-Amz-Date
CLOCK_SKEW = 5 * 60  # SigV4 request time tolerance, as AWS
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
AZURE_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
AKS_SERVER_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
CLIENT_ASSERTION_JWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105
# The group testenv/cluster/rbac.yaml binds to the restricted Role.
CLOUD_GROUP = "cloud:deployers"
PRESIGN_PARAMS = {
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
}


class Refused(Exception):
    """A credential the real service would refuse; the message says why."""

    def __init__(self, message: str, code: str = "AccessDenied", status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# -- encodings and JWTs ---------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str, *, padded_ok: bool = True) -> bytes:
    if not padded_ok and "=" in text:
        raise ValueError("padding present")
    if not re.fullmatch(r"[A-Za-z0-9_\-]*=*", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_key(text: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(text.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def jwt_encode(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64url(signature)}"


def jwt_verify(
    token: str,
    keys: dict[str, rsa.RSAPublicKey],
    *,
    issuer: str,
    audience: str | set[str],
    max_lifetime: int | None = None,
) -> dict[str, Any]:
    """Verify an RS256 JWT's signature, issuer, audience and times; return its claims."""
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(b64url_decode(head_b64))
        claims = json.loads(b64url_decode(body_b64))
        signature = b64url_decode(sig_b64)
    except (ValueError, json.JSONDecodeError) as e:
        raise Refused(f"malformed JWT: {e}", "InvalidIdentityToken", 400) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Refused("malformed JWT", "InvalidIdentityToken", 400)
    if header.get("alg") != "RS256":
        raise Refused(f"JWT alg {header.get('alg')!r} is not RS256", "InvalidIdentityToken", 400)
    public = keys.get(str(header.get("kid")))
    if public is None:
        raise Refused("JWT signed with an unknown key (kid)", "InvalidIdentityToken", 400)
    try:
        public.verify(
            signature, f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        raise Refused("JWT signature is invalid", "InvalidIdentityToken", 400) from None
    now = time.time()
    if claims.get("iss") != issuer:
        raise Refused(
            f"JWT issuer {claims.get('iss')!r} is not {issuer!r}", "InvalidIdentityToken", 400
        )
    aud = claims.get("aud")
    wanted = {audience} if isinstance(audience, str) else audience
    if not wanted & set(aud if isinstance(aud, list) else [aud]):
        raise Refused(
            f"JWT audience {aud!r} is not {' or '.join(sorted(wanted))}",
            "InvalidIdentityToken",
            400,
        )
    exp, iat = claims.get("exp"), claims.get("iat", claims.get("nbf", 0))
    if not isinstance(exp, int | float) or exp <= now:
        raise Refused("JWT has expired", "ExpiredTokenException", 400)
    if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW:
        raise Refused("JWT is not valid yet (iat/nbf in the future)", "InvalidIdentityToken", 400)
    if max_lifetime is not None and exp - iat > max_lifetime:
        raise Refused(f"JWT lifetime exceeds {max_lifetime} s", "InvalidIdentityToken", 400)
    return claims


# -- SigV4 ----------------------------------------------------------------------------------


def _uri_encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def sigv4_signature(
    secret_key: str,
    *,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    signed_headers: list[str],
    payload_hash: str,
    amz_date: str,
    scope: str,
) -> str:
    """The SigV4 signature (hex) of a request, computed from its parts (AWS's algorithm)."""
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((_uri_encode(k), _uri_encode(v)) for k, v in query)
    )
    canonical_headers = "".join(
        f"{name}:{' '.join(headers[name].strip().split())}\n" for name in signed_headers
    )
    canonical_path = urllib.parse.quote(path or "/", safe="/-_.~")
    canonical_request = "\n".join(
        [
            method,
            canonical_path,
            canonical_query,
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    date, region, service, terminal = scope.split("/")
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _amz_time(value: str) -> float:
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise Refused(
            f"X-Amz-Date {value!r} is not YYYYMMDDTHHMMSSZ", "IncompleteSignature", 400
        ) from None


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_secret_key() -> str:
    """40 characters of the standard base64 alphabet, like AWS's ("/" and "+" included)."""
    while True:
        key = base64.b64encode(secrets.token_bytes(30)).decode()
        if "/" in key or "+" in key:
            return key


def _random_id(prefix: str, length: int = 16) -> str:
    return prefix + "".join(
        secrets.choice(string.ascii_uppercase + string.digits) for _ in range(length)
    )


# -- the clouds' state ----------------------------------------------------------------------


class Clouds:
    """Configuration (persisted) plus the tokens and credentials issued (in memory)."""

    def __init__(self, config: dict[str, Any], registry_password_file: Path | None) -> None:
        self.c = config
        self.registry_password_file = registry_password_file
        self.lock = threading.Lock()
        # access key id -> (secret, session token, expiry epoch, arn, session name)
        self.temp_creds: dict[str, tuple[str, str, float, str, str]] = {}
        self.google_tokens: dict[
            str, tuple[float, str, list[str]]
        ] = {}  # token -> (exp, user, scopes)
        self.oidc_key = load_key(config["github_oidc_key"])
        self.azure_key = load_key(config["azure_signing_key"])
        self.google_public = {
            config["gcp_private_key_id"]: load_key(config["gcp_private_key"]).public_key()
        }
        self.oidc_public = {config["github_oidc_kid"]: self.oidc_key.public_key()}
        self.azure_public = {config["azure_kid"]: self.azure_key.public_key()}
        self.azure_issued: dict[str, float] = {}  # jti -> exp

    # ---- AWS credentials

    def aws_secret(self, key_id: str, session_token: str | None) -> tuple[str, str]:
        """(secret key, identity ARN) of an access key id; temporary ones need their token."""
        c = self.c
        if key_id == c["aws_access_key_id"]:
            if session_token:
                raise Refused(
                    "a session token was sent with a long-term access key", "InvalidClientTokenId"
                )
            return c["aws_secret_access_key"], f"arn:aws:iam::{c['aws_account']}:user/deployer"
        with self.lock:
            found = self.temp_creds.get(key_id)
        if found is None:
            raise Refused(
                "The security token included in the request is invalid.", "InvalidClientTokenId"
            )
        secret, token, expiry, arn, _session = found
        if not session_token or not hmac.compare_digest(session_token, token):
            raise Refused(
                "The security token included in the request is invalid.", "InvalidClientTokenId"
            )
        if expiry <= time.time():
            raise Refused("The security token included in the request is expired", "ExpiredToken")
        return secret, arn

    def issue_temp_creds(self, role_arn: str, session: str, seconds: int) -> dict[str, str]:
        key_id = _random_id("ASIA")
        secret = aws_secret_key()
        # Like real session tokens: standard base64, so "/", "+" and "=" need URL-encoding.
        token = "IQoJb3JpZ2luX2Vj" + base64.b64encode(secrets.token_bytes(181)).decode()
        expiry = time.time() + seconds
        role_name = role_arn.rsplit("/", 1)[-1]
        arn = f"arn:aws:sts::{self.c['aws_account']}:assumed-role/{role_name}/{session}"
        with self.lock:
            now = time.time()
            for k in [k for k, v in self.temp_creds.items() if v[2] < now]:
                del self.temp_creds[k]
            self.temp_creds[key_id] = (secret, token, expiry, arn, session)
        return {
            "AccessKeyId": key_id,
            "SecretAccessKey": secret,
            "SessionToken": token,
            "Expiration": _iso(expiry),
            "Arn": arn,
        }

    def verify_signed_request(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        body: bytes,
        service: str,
    ) -> str:
        """Verify a SigV4 Authorization header; return the caller's ARN."""
        auth = headers.get("authorization", "")
        m = re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
            r"SignedHeaders=([a-z0-9\-;]+),\s*Signature=([0-9a-f]{64})",
            auth.strip(),
        )
        if not m:
            raise Refused(
                "Missing or malformed Authorization header (SigV4)",
                "MissingAuthenticationToken",
                403,
            )
        key_id, date, region, svc, signed, signature = m.groups()
        if svc != service:
            raise Refused(
                f"credential scope service {svc!r} should be {service!r}", "SignatureDoesNotMatch"
            )
        if region != self.c["aws_region"]:
            raise Refused(
                f"credential scope region {region!r} should be {self.c['aws_region']!r}",
                "SignatureDoesNotMatch",
            )
        amz_date = headers.get("x-amz-date", "")
        when = _amz_time(amz_date)
        if abs(when - time.time()) > CLOCK_SKEW or amz_date[:8] != date:
            raise Refused(
                "Signature expired or not yet current (X-Amz-Date)", "SignatureDoesNotMatch"
            )
        signed_headers = signed.split(";")
        if "host" not in signed_headers or any(h not in headers for h in signed_headers):
            raise Refused(
                "host must be signed and every signed header present", "SignatureDoesNotMatch"
            )
        token = headers.get("x-amz-security-token")
        if token and "x-amz-security-token" not in signed_headers:
            raise Refused("X-Amz-Security-Token must be signed", "SignatureDoesNotMatch")
        secret, arn = self.aws_secret(key_id, token)
        path, _, query = raw_path.partition("?")
        expected = sigv4_signature(
            secret,
            method=method,
            path=urllib.parse.unquote(path),
            query=urllib.parse.parse_qsl(query, keep_blank_values=True),
            headers=headers,
            signed_headers=signed_headers,
            payload_hash=hashlib.sha256(body).hexdigest(),
            amz_date=amz_date,
            scope=f"{date}/{region}/{svc}/aws4_request",
        )
        if not hmac.compare_digest(expected, signature):
            raise Refused(
                "The request signature we calculated does not match the signature you provided.",
                "SignatureDoesNotMatch",
            )
        return arn

    def verify_eks_token(self, token: str) -> dict[str, Any]:
        """Judge a ``k8s-aws-v1.`` token as aws-iam-authenticator (and STS) would."""
        c = self.c
        try:
            url = b64url_decode(token[len("k8s-aws-v1.") :], padded_ok=False).decode()
        except (ValueError, UnicodeDecodeError):
            raise Refused("token is not base64url (unpadded) of a URL") from None
        parts = urllib.parse.urlsplit(url)
        region = c["aws_region"]
        if parts.scheme != "https":
            raise Refused(f"URL scheme {parts.scheme!r} is not https")
        host_region = {f"sts.{region}.amazonaws.com": region, "sts.amazonaws.com": "us-east-1"}
        if parts.hostname not in host_region or parts.port is not None or parts.username:
            raise Refused(f"host {parts.netloc!r} is not an STS endpoint")
        if parts.path not in ("", "/") or parts.fragment:
            raise Refused(f"unexpected path {parts.path!r}")
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        query: dict[str, str] = {}
        for k, v in pairs:
            if k.lower() not in PRESIGN_PARAMS:
                raise Refused(f"unexpected query parameter {k!r}")
            if k.lower() in {q.lower() for q in query}:
                raise Refused(f"query parameter {k!r} given twice")
            query[k] = v
        if query.get("Action") != "GetCallerIdentity":
            raise Refused(f"Action {query.get('Action')!r} is not GetCallerIdentity")
        if query.get("Version") != "2011-06-15":
            raise Refused(f"Version {query.get('Version')!r} is not 2011-06-15")
        if query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise Refused("X-Amz-Algorithm is not AWS4-HMAC-SHA256")
        signed_headers = query.get("X-Amz-SignedHeaders", "").split(";")
        if "x-k8s-aws-id" not in signed_headers:
            raise Refused("x-k8s-aws-id is not among the signed headers")
        if not set(signed_headers) <= {"host", "x-k8s-aws-id"} or "host" not in signed_headers:
            raise Refused(f"signed headers {signed_headers} are not host;x-k8s-aws-id")
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            raise Refused("X-Amz-Expires missing or not a number") from None
        if not 0 < expires <= 60:
            raise Refused(f"X-Amz-Expires {expires} is not within 1..60")
        amz_date = query.get("X-Amz-Date", "")
        signed_at = _amz_time(amz_date)
        now = time.time()
        if signed_at > now + CLOCK_SKEW:
            raise Refused("X-Amz-Date is in the future")
        if now > signed_at + PRESIGN_WINDOW:
            raise Refused("token expired (X-Amz-Date older than 15 min)")
        cred = query.get("X-Amz-Credential", "").split("/")
        if (
            len(cred) != 5
            or cred[3] != "sts"
            or cred[4] != "aws4_request"
            or cred[1] != amz_date[:8]
        ):
            raise Refused("X-Amz-Credential is not <key>/<date>/<region>/sts/aws4_request")
        if cred[2] != host_region[parts.hostname or ""]:
            raise Refused(f"credential region {cred[2]!r} does not match host {parts.hostname!r}")
        secret, arn = self.aws_secret(cred[0], query.get("X-Amz-Security-Token"))
        # STS is sent the header x-k8s-aws-id: <this cluster>, so a token for another
        # cluster does not verify.
        expected = sigv4_signature(
            secret,
            method="GET",
            path="/",
            query=[(k, v) for k, v in pairs if k != "X-Amz-Signature"],
            headers={"host": parts.netloc, "x-k8s-aws-id": c["eks_cluster"]},
            signed_headers=signed_headers,
            payload_hash=hashlib.sha256(b"").hexdigest(),
            amz_date=amz_date,
            scope="/".join(cred[1:]),
        )
        if not hmac.compare_digest(expected, query.get("X-Amz-Signature", "")):
            raise Refused("SigV4 signature does not match (wrong key, cluster name or parameters)")
        if arn.endswith(":user/deployer"):
            username = "eks:deployer"
        else:  # arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION
            _, role, session = arn.split(":", 5)[5].split("/")
            username = f"eks:{role}:{session}"
        return {
            "username": username,
            "uid": f"aws-iam-authenticator:{c['aws_account']}:{cred[0]}",
            "groups": [CLOUD_GROUP],
            "extra": {"arn": [arn], "accessKeyId": [cred[0]]},
        }

    # ---- GitHub OIDC, Google, Azure

    def github_oidc_token(self, audience: str) -> str:
        c = self.c
        now = int(time.time())
        claims = {
            "jti": str(uuid.uuid4()),
            "sub": c["oidc_subject"],
            "aud": audience,
            "ref": "refs/heads/main",
            "sha": "0" * 40,
            "repository": c["oidc_repository"],
            "repository_owner": c["oidc_repository"].split("/")[0],
            "run_id": "1",
            "actor": "octocat",
            "event_name": "push",
            "workflow": "deploy",
            "iss": GITHUB_ISSUER,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + 300,
        }
        return jwt_encode(claims, self.oidc_key, c["github_oidc_kid"])

    def _verify_github(self, token: str, audience: str) -> dict[str, Any]:
        claims = jwt_verify(token, self.oidc_public, issuer=GITHUB_ISSUER, audience=audience)
        if claims.get("sub") != self.c["oidc_subject"]:
            raise Refused(f"subject {claims.get('sub')!r} is not trusted", "AccessDenied", 403)
        return claims

    def assume_role_with_web_identity(self, form: dict[str, str]) -> dict[str, str]:
        role = form.get("RoleArn", "")
        session = form.get("RoleSessionName", "")
        if role != self.c["aws_role_arn"]:
            raise Refused(f"Not authorized to perform sts:AssumeRoleWithWebIdentity on {role!r}")
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", session):
            raise Refused("RoleSessionName must be 2..64 of [\\w+=,.@-]", "ValidationError", 400)
        self._verify_github(form.get("WebIdentityToken", ""), "sts.amazonaws.com")
        return self.issue_temp_creds(role, session, _duration(form))

    def google_token(self, form: dict[str, str]) -> dict[str, Any]:
        c = self.c
        if form.get("grant_type") != JWT_BEARER:
            raise Refused("unsupported grant_type", "unsupported_grant_type", 400)
        claims = jwt_verify(
            form.get("assertion", ""),
            self.google_public,
            issuer=c["gcp_client_email"],
            # google-auth puts Google's token URI in aud whatever token_uri says.
            audience={GOOGLE_TOKEN_URI, c["gcp_token_uri"]},
            max_lifetime=3600,
        )
        scopes = str(claims.get("scope", "")).split()
        if not scopes:
            raise Refused("the assertion has no scope", "invalid_scope", 400)
        return self._issue_google(f"gke:{c['gcp_client_email']}", scopes)

    def google_sts(self, form: dict[str, str]) -> dict[str, Any]:
        c = self.c
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise Refused("unsupported grant_type", "unsupported_grant_type", 400)
        if form.get("audience") != c["gcp_wif_audience"]:
            raise Refused(f"unknown audience {form.get('audience')!r}", "invalid_target", 400)
        if form.get("subject_token_type") not in (
            "urn:ietf:params:oauth:token-type:jwt",
            "urn:ietf:params:oauth:token-type:id_token",
        ):
            raise Refused("subject_token_type must be jwt or id_token", "invalid_request", 400)
        # google-github-actions/auth asks for the OIDC token with the provider's
        # default allowed audience: https://iam.googleapis.com/projects/.../providers/...
        claims = self._verify_github(
            form.get("subject_token", ""), "https:" + c["gcp_wif_audience"]
        )
        pool = c["gcp_wif_audience"].split("/providers/")[0].removeprefix("//iam.googleapis.com/")
        user = f"gke:principal://iam.googleapis.com/{pool}/subject/{claims['sub']}"
        scopes = (form.get("scope") or CLOUD_PLATFORM).split()
        answer = self._issue_google(user, scopes)
        answer["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
        return answer

    def _issue_google(self, user: str, scopes: list[str]) -> dict[str, Any]:
        token = "ya29.c." + b64url(secrets.token_bytes(48))
        with self.lock:
            now = time.time()
            for k in [k for k, v in self.google_tokens.items() if v[0] < now]:
                del self.google_tokens[k]
            self.google_tokens[token] = (now + 3599, user, scopes)
        return {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def azure_token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        c = self.c
        if tenant != c["azure_tenant_id"]:
            raise Refused(f"AADSTS90002: Tenant '{tenant}' not found.", "invalid_request", 400)
        if form.get("grant_type") != "client_credentials":
            raise Refused("AADSTS70003: unsupported grant_type", "unsupported_grant_type", 400)
        client_id = form.get("client_id", "")
        if client_id != c["azure_client_id"]:
            raise Refused(
                f"AADSTS700016: Application with identifier '{client_id}' was not found.",
                "unauthorized_client",
                400,
            )
        if "client_secret" in form:
            if not hmac.compare_digest(form["client_secret"], c["azure_client_secret"]):
                raise Refused(
                    "AADSTS7000215: Invalid client secret provided.", "invalid_client", 401
                )
        elif form.get("client_assertion_type") == CLIENT_ASSERTION_JWT:
            try:
                self._verify_github(form.get("client_assertion", ""), AZURE_EXCHANGE_AUDIENCE)
            except Refused as e:
                raise Refused(
                    f"AADSTS700211/700213: client assertion refused: {e}", "invalid_client", 401
                ) from None
        else:
            raise Refused(
                "AADSTS7000218: client_assertion or client_secret required.", "invalid_client", 401
            )
        scope = form.get("scope", "")
        if not scope.endswith("/.default") or " " in scope:
            raise Refused(f"AADSTS70011: invalid scope {scope!r}", "invalid_scope", 400)
        resource = scope.removesuffix("/.default")
        now = int(time.time())
        jti = str(uuid.uuid4())
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3599,
            "appid": client_id,
            "oid": c["azure_object_id"],
            "sub": c["azure_object_id"],
            "tid": tenant,
            "uti": jti,
            "ver": "1.0",
        }
        token = jwt_encode(claims, self.azure_key, c["azure_kid"])
        with self.lock:
            self.azure_issued = {k: v for k, v in self.azure_issued.items() if v > now}
            self.azure_issued[jti] = now + 3599
        return {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": token,
        }

    def ecr_password(self) -> str:
        if self.registry_password_file is None or not self.registry_password_file.is_file():
            raise Refused("the test registry has no ECR password file", "ServerException", 500)
        return self.registry_password_file.read_text().strip()

    def review(self, token: str) -> dict[str, Any]:
        """The user a bearer token stands for, or Refused."""
        c = self.c
        if token.startswith("k8s-aws-v1."):
            return self.verify_eks_token(token)
        if token.startswith("ya29."):
            with self.lock:
                found = self.google_tokens.get(token)
            if found is None or found[0] <= time.time():
                raise Refused("unknown or expired Google access token")
            _, user, scopes = found
            if CLOUD_PLATFORM not in scopes:
                raise Refused("the access token lacks the cloud-platform scope")
            return {"username": user, "uid": user, "groups": [CLOUD_GROUP]}
        if token.count(".") == 2:
            claims = jwt_verify(
                token,
                self.azure_public,
                issuer=f"https://sts.windows.net/{c['azure_tenant_id']}/",
                audience=c["azure_server_id"],
            )
            with self.lock:
                issued = claims.get("uti") in self.azure_issued
            if not issued:
                raise Refused("Entra token not issued by this service")
            return {
                "username": f"aks:{claims['appid']}",
                "uid": str(claims["oid"]),
                "groups": [CLOUD_GROUP],
                "extra": {"oid": [str(claims["oid"])]},
            }
        raise Refused("not a token of any cloud stand-in")


def _duration(form: dict[str, str]) -> int:
    try:
        seconds = int(form.get("DurationSeconds") or 3600)
    except ValueError:
        raise Refused("DurationSeconds is not a number", "ValidationError", 400) from None
    if not 900 <= seconds <= 43200:
        raise Refused("DurationSeconds must be within 900..43200", "ValidationError", 400)
    return seconds


# -- HTTP -----------------------------------------------------------------------------------


def sts_xml(action: str, result: str) -> bytes:
    return (
        f'<{action}Response xmlns="{STS_NS}">\n  <{action}Result>\n{result}  </{action}Result>\n'
        f"  <ResponseMetadata>\n    <RequestId>{uuid.uuid4()}</RequestId>\n  </ResponseMetadata>\n"
        f"</{action}Response>\n"
    ).encode()


def sts_credentials_xml(action: str, creds: dict[str, str], extra: str = "") -> bytes:
    role_name, session = creds["Arn"].split("/")[-2:]
    return sts_xml(
        action,
        f"    <AssumedRoleUser>\n      <Arn>{escape(creds['Arn'])}</Arn>\n"
        f"      <AssumedRoleId>AROA{hashlib.sha1(role_name.encode()).hexdigest()[:17].upper()}:"  # noqa: S324
        f"{escape(session)}</AssumedRoleId>\n    </AssumedRoleUser>\n"
        f"    <Credentials>\n      <AccessKeyId>{creds['AccessKeyId']}</AccessKeyId>\n"
        f"      <SecretAccessKey>{creds['SecretAccessKey']}</SecretAccessKey>\n"
        f"      <SessionToken>{creds['SessionToken']}</SessionToken>\n"
        f"      <Expiration>{creds['Expiration']}</Expiration>\n    </Credentials>\n{extra}",
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "cloud-standin/1"
    clouds: Clouds
    timeout = 30

    def _where(self) -> str:
        # Paths only: never a query (it may hold a presigned signature) nor a body.
        path = getattr(self, "path", "-").split("?")[0]
        return f"{self.log_date_time_string()} {getattr(self, 'command', None) or '-'} {path}"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        sys.stderr.write(f"{self._where()} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:
        # Errors of the HTTP layer; their arguments may quote the request line.
        sys.stderr.write(f"{self._where()} error {args[0] if args else ''}\n")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(value).encode(), content_type)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise Refused("request body too large", "RequestEntityTooLarge", 413)
        return self.rfile.read(length) if length else b""

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/github/idtoken":
            auth = self.headers.get("Authorization", "")
            expected = "Bearer " + self.clouds.c["oidc_request_token"]
            if not hmac.compare_digest(auth.encode(), expected.encode()):
                self._json(401, {"message": "Unauthorized: the request token is invalid"})
                return
            owner = self.clouds.c["oidc_repository"].split("/")[0]
            audience = params.get("audience") or f"https://github.com/{owner}"
            self._json(200, {"value": self.clouds.github_oidc_token(audience)})
        elif path == "/" and params.get("Action") == "GetCallerIdentity":
            self._sts_get_caller_identity()
        else:
            self._json(404, {"error": "not_found", "path": path})

    def _sts_get_caller_identity(self) -> None:
        """The real STS answer to a presigned GetCallerIdentity URL (query auth)."""
        try:
            host = self.headers.get("Host", "")
            url = f"https://{host}{self.path}"
            token = "k8s-aws-v1." + b64url(url.encode())
            # Same checks as the webhook, except host (any) and the cluster header value.
            saved = self.clouds.c["eks_cluster"]
            header = self.headers.get("x-k8s-aws-id")
            if header is None:
                raise Refused("x-k8s-aws-id header missing")
            if header != saved:
                raise Refused("x-k8s-aws-id is not this cluster")
            user = self.clouds.verify_eks_token(token)
        except Refused as e:
            self._sts_error(e)
            return
        arn = user["extra"]["arn"][0]
        body = sts_xml(
            "GetCallerIdentity",
            f"    <Arn>{escape(arn)}</Arn>\n"
            f"    <UserId>{user['extra']['accessKeyId'][0]}</UserId>\n"
            f"    <Account>{self.clouds.c['aws_account']}</Account>\n",
        )
        self._send(200, body, "text/xml")

    def _sts_error(self, e: Refused) -> None:
        body = (
            f'<ErrorResponse xmlns="{STS_NS}">\n  <Error>\n    <Type>Sender</Type>\n'
            f"    <Code>{e.code}</Code>\n    <Message>{escape(str(e))}</Message>\n  </Error>\n"
            f"  <RequestId>{uuid.uuid4()}</RequestId>\n</ErrorResponse>\n"
        ).encode()
        self._send(e.status, body, "text/xml")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        headers = self._headers()
        try:
            body = self._body()
        except Refused as e:
            self._json(e.status, {"error": str(e)})
            return
        if path == "/tokenreview":
            self._tokenreview(body)
        elif "x-amz-target" in headers:
            self._ecr(headers, body)
        elif path == "/":
            self._sts(headers, body)
        elif path in ("/google/token", "/google/sts/v1/token"):
            form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
            try:
                if path == "/google/token":
                    answer = self.clouds.google_token(form)
                else:
                    answer = self.clouds.google_sts(form)
            except Refused as e:
                code = e.code if e.code.islower() else "invalid_grant"
                self._json(400, {"error": code, "error_description": str(e)})
                return
            self._json(200, answer)
        elif m := re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path):
            form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
            try:
                answer = self.clouds.azure_token(m.group(1), form)
            except Refused as e:
                code = e.code if e.code.islower() else "invalid_client"
                self._json(
                    e.status if e.status in (400, 401) else 400,
                    {
                        "error": code,
                        "error_description": str(e),
                        "error_codes": [int(x) for x in re.findall(r"AADSTS(\d+)", str(e))[:1]],
                        "timestamp": _iso(time.time()),
                        "trace_id": str(uuid.uuid4()),
                        "correlation_id": str(uuid.uuid4()),
                    },
                )
                return
            self._json(200, answer)
        else:
            self._json(404, {"error": "not_found", "path": path})

    def _tokenreview(self, body: bytes) -> None:
        try:
            review = json.loads(body)
            token = review["spec"]["token"]
            audiences = review["spec"].get("audiences") or []
        except (ValueError, KeyError, TypeError):
            self._json(400, {"error": "not a TokenReview"})
            return
        status: dict[str, Any]
        try:
            user = self.clouds.review(str(token))
            status = {"authenticated": True, "user": user}
            if audiences:
                status["audiences"] = audiences
            sys.stderr.write(f"tokenreview: authenticated {user['username']}\n")
        except Refused as e:
            status = {"authenticated": False, "error": str(e)}
            sys.stderr.write(f"tokenreview: refused: {e}\n")
        self._json(
            200,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status},
        )

    def _sts(self, headers: dict[str, str], body: bytes) -> None:
        form = dict(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        action = form.get("Action")
        try:
            if form.get("Version") != "2011-06-15":
                raise Refused("Version must be 2011-06-15", "InvalidAction", 400)
            if action == "AssumeRoleWithWebIdentity":
                creds = self.clouds.assume_role_with_web_identity(form)
                claims = json.loads(b64url_decode(form["WebIdentityToken"].split(".")[1]))
                extra = (
                    f"    <SubjectFromWebIdentityToken>{escape(claims['sub'])}"
                    "</SubjectFromWebIdentityToken>\n"
                    f"    <Audience>sts.amazonaws.com</Audience>\n"
                    f"    <Provider>{GITHUB_ISSUER.removeprefix('https://')}</Provider>\n"
                )
                self._send(200, sts_credentials_xml(action, creds, extra), "text/xml")
            elif action == "AssumeRole":
                self.clouds.verify_signed_request("POST", self.path, headers, body, "sts")
                role = form.get("RoleArn", "")
                if role != self.clouds.c["aws_role_arn"]:
                    raise Refused(f"Not authorized to perform sts:AssumeRole on {role!r}")
                session = form.get("RoleSessionName", "")
                if not re.fullmatch(r"[\w+=,.@-]{2,64}", session):
                    raise Refused(
                        "RoleSessionName must be 2..64 of [\\w+=,.@-]", "ValidationError", 400
                    )
                creds = self.clouds.issue_temp_creds(role, session, _duration(form))
                self._send(200, sts_credentials_xml(action, creds), "text/xml")
            elif action == "GetCallerIdentity":
                arn = self.clouds.verify_signed_request("POST", self.path, headers, body, "sts")
                self._send(
                    200,
                    sts_xml(
                        action,
                        f"    <Arn>{escape(arn)}</Arn>\n    <UserId>deployer</UserId>\n"
                        f"    <Account>{self.clouds.c['aws_account']}</Account>\n",
                    ),
                    "text/xml",
                )
            else:
                raise Refused(f"Could not find operation {action!r}", "InvalidAction", 400)
        except Refused as e:
            self._sts_error(e)

    def _ecr(self, headers: dict[str, str], body: bytes) -> None:
        kind = "application/x-amz-json-1.1"
        try:
            if headers.get("x-amz-target") != ECR_TARGET:
                raise Refused(
                    f"Unknown operation {headers.get('x-amz-target')!r}",
                    "UnknownOperationException",
                    400,
                )
            self.clouds.verify_signed_request("POST", self.path, headers, body, "ecr")
            password = self.clouds.ecr_password()
        except Refused as e:
            code = {
                "InvalidClientTokenId": "UnrecognizedClientException",
                "SignatureDoesNotMatch": "InvalidSignatureException",
            }.get(e.code, e.code)
            self._json(400 if e.status != 500 else 500, {"__type": code, "message": str(e)}, kind)
            return
        c = self.clouds.c
        token = base64.b64encode(f"AWS:{password}".encode()).decode()
        self._json(
            200,
            {
                "authorizationData": [
                    {
                        "authorizationToken": token,
                        "expiresAt": time.time() + 12 * 3600,
                        "proxyEndpoint": f"https://{c['aws_account']}.dkr.ecr.{c['aws_region']}.amazonaws.com",
                    }
                ]
            },
            kind,
        )


class TLSServer(ThreadingHTTPServer):
    """HTTPS; the handshake happens in the request's thread, with a deadline."""

    context: ssl.SSLContext

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(Handler.timeout)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


# -- start-up -------------------------------------------------------------------------------


def make_config(args: argparse.Namespace) -> dict[str, Any]:
    http = f"http://127.0.0.1:{args.http_port}"
    project_number = "123456789012"
    wif = (
        f"//iam.googleapis.com/projects/{project_number}/locations/global/"
        "workloadIdentityPools/github/providers/deployer"
    )
    return {
        "aws_access_key_id": _random_id("AKIA"),
        "aws_secret_access_key": aws_secret_key(),
        "aws_region": "eu-west-1",
        "aws_account": "123456789012",
        "aws_role_arn": "arn:aws:iam::123456789012:role/deployer-github",
        "eks_cluster": "deployer-test",
        "gcp_client_email": "deployer@deployer-test.iam.gserviceaccount.com",
        "gcp_project": "deployer-test",
        "gcp_private_key_id": secrets.token_hex(20),
        "gcp_private_key": pem(new_rsa_key()),
        "gcp_token_uri": f"{http}/google/token",
        "gcp_wif_audience": wif,
        "azure_tenant_id": str(uuid.uuid4()),
        "azure_client_id": str(uuid.uuid4()),
        "azure_object_id": str(uuid.uuid4()),
        "azure_client_secret": "dpl8Q~" + b64url(secrets.token_bytes(27))[:34],
        "azure_server_id": AKS_SERVER_ID,
        "azure_signing_key": pem(new_rsa_key()),
        "azure_kid": secrets.token_hex(8),
        "github_oidc_key": pem(new_rsa_key()),
        "github_oidc_kid": secrets.token_hex(8),
        "oidc_request_token": b64url(secrets.token_bytes(32)),
        "oidc_repository": "octo-org/octo-repo",
        "oidc_subject": "repo:octo-org/octo-repo:ref:refs/heads/main",
    }


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def write_files(state: Path, c: dict[str, Any], args: argparse.Namespace) -> None:
    http = f"http://127.0.0.1:{args.http_port}"
    oidc_url = f"{http}/github/idtoken?api-version=2.0"
    sa_key = {
        "type": "service_account",
        "project_id": c["gcp_project"],
        "private_key_id": c["gcp_private_key_id"],
        "private_key": c["gcp_private_key"],
        "client_email": c["gcp_client_email"],
        "client_id": str(int(hashlib.sha256(c["gcp_client_email"].encode()).hexdigest()[:15], 16)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": c["gcp_token_uri"],
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
        + urllib.parse.quote(c["gcp_client_email"]),
        "universe_domain": "googleapis.com",
    }
    write_private(state / "gcp-sa-key.json", json.dumps(sa_key, indent=2) + "\n")
    # What google-github-actions/auth writes for direct workload identity federation.
    oidc_audience = "https:" + c["gcp_wif_audience"]
    external = {
        "type": "external_account",
        "audience": c["gcp_wif_audience"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{http}/google/sts/v1/token",
        "credential_source": {
            "url": f"{oidc_url}&audience={urllib.parse.quote(oidc_audience, safe='')}",
            "headers": {"Authorization": f"Bearer {c['oidc_request_token']}"},
            "format": {"type": "json", "subject_token_field_name": "value"},
        },
    }
    write_private(state / "gcp-external-account.json", json.dumps(external, indent=2) + "\n")
    settings = {
        "TEST_AWS_ACCESS_KEY_ID": c["aws_access_key_id"],
        "TEST_AWS_SECRET_ACCESS_KEY": c["aws_secret_access_key"],
        "TEST_AWS_REGION": c["aws_region"],
        "TEST_AWS_ACCOUNT_ID": c["aws_account"],
        "TEST_EKS_CLUSTER": c["eks_cluster"],
        "TEST_AWS_ROLE_ARN": c["aws_role_arn"],
        "TEST_STS_ENDPOINT": http,
        "TEST_ECR_ENDPOINT": http,
        "TEST_ECR_REGISTRY_PASSWORD_USER": "AWS",
        "TEST_GCP_CREDENTIALS_FILE": str(state / "gcp-sa-key.json"),
        "TEST_GCP_EXTERNAL_ACCOUNT_FILE": str(state / "gcp-external-account.json"),
        "TEST_GCP_WIF_AUDIENCE": c["gcp_wif_audience"],
        "TEST_GCP_CLIENT_EMAIL": c["gcp_client_email"],
        "TEST_AZURE_AUTHORITY_HOST": http + "/",
        "TEST_AZURE_TENANT_ID": c["azure_tenant_id"],
        "TEST_AZURE_CLIENT_ID": c["azure_client_id"],
        "TEST_AZURE_CLIENT_SECRET": c["azure_client_secret"],
        "TEST_AZURE_SERVER_ID": c["azure_server_id"],
        "TEST_OIDC_REQUEST_URL": oidc_url,
        "TEST_OIDC_REQUEST_TOKEN": c["oidc_request_token"],
        "TEST_OIDC_SUBJECT": c["oidc_subject"],
        "TEST_CLOUD_SERVER": args.cluster_server,
        "TEST_CLOUD_CA_FILE": args.cluster_ca,
        "TEST_CLOUD_GROUP": CLOUD_GROUP,
        "TEST_CLOUD_STANDIN_URL": http,
        "TEST_CLOUD_STANDIN_HTTPS_URL": f"https://127.0.0.1:{args.https_port}",
    }
    lines = ["# Written by testenv/cloud/standin.py (scripts/testenv/cloud-up.sh)."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in settings.items()]
    write_private(state / "cloud.env", "\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--https-port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--cluster-server", required=True)
    p.add_argument("--cluster-ca", required=True)
    p.add_argument("--registry-password-file", type=Path)
    args = p.parse_args()
    args.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_file = args.state / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
    else:
        config = make_config(args)
        write_private(config_file, json.dumps(config, indent=1) + "\n")
    write_files(args.state, config, args)

    Handler.clouds = Clouds(config, args.registry_password_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    plain = ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler)
    tls = TLSServer(("127.0.0.1", args.https_port), Handler)
    tls.context = context
    for server in (plain, tls):
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stderr.write(
        f"cloud stand-in serving on http://127.0.0.1:{args.http_port} and "
        f"https://127.0.0.1:{args.https_port}\n"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in (plain, tls):
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
