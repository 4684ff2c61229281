"""AWS: credentials from the job's environment, the EKS token, ECR's registry password.

Credentials, first that applies:

1. input ``aws-role-arn``: the runner's OIDC token (audience sts.amazonaws.com)
   exchanged with STS ``AssumeRoleWithWebIdentity``;
2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (what
   aws-actions/configure-aws-credentials exports);
3. AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (web identity, e.g. IRSA).

A role the kubeconfig names (``--role-arn``) is then assumed with ``AssumeRole``.
Endpoints honour AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL from
the job's environment (https only). A region becomes part of a host name, so it
must be a host label (:func:`check_region`): ``x@attacker/`` would otherwise send
the web-identity token to a host of the kubeconfig's choosing.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from deployer.cloud import workspace_file
from deployer.cloud.http import Http, checked_url, send
from deployer.cloud.oidc import AWS_AUDIENCE, github_id_token
from deployer.cloud.sigv4 import Credentials, presign_url, sign_request
from deployer.errors import CredentialsError

__all__ = [
    "EKS_TOKEN_PREFIX",
    "REGION_RULE",
    "AwsCredentials",
    "check_region",
    "ecr_password",
    "ecr_registry",
    "eks_token",
    "endpoint",
    "is_region",
]

EKS_TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 - a format prefix, not a secret
EKS_TOKEN_LIFETIME = 14 * 60  # what `aws eks get-token` reports; the server allows 15 min
_RENEW_MARGIN = 300.0
_STS_VERSION = "2011-06-15"
_ECR_HOST = re.compile(
    r"^(\d{12})\.dkr[.-]ecr(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|on\.aws)$"
)
_MISSING = (
    "No AWS credentials for {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(and AWS_SESSION_TOKEN) in the job's environment with a step "
    "`uses: aws-actions/configure-aws-credentials@v4` before this one, or give the "
    "input 'aws-role-arn' and the job `permissions: id-token: write`"
)


# botocore's check of a region name (botocore/utils.py: validate_region_name, "a valid
# host label"), copied: botocore is not a runtime dependency. fullmatch, not match:
# "$" would let a trailing newline through.
_REGION_RE = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{,63}(?<!-)$")


REGION_RULE = "a region name such as eu-west-1 (letters, digits and '-', at most 63)"


def is_region(region: str) -> bool:
    """Whether ``region`` can be a region name: a host label (botocore's rule)."""
    return bool(region) and _REGION_RE.fullmatch(region) is not None


def check_region(region: str, where: str) -> str:
    """``region`` if it is a region name; CredentialsError naming ``where`` it came from."""
    if not is_region(region):
        raise CredentialsError(f"The AWS region from {where} is not {REGION_RULE}")
    return region


def _aws_endpoint(service: str, region: str) -> str:
    check_region(region, "the kubeconfig or the job's environment")
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    host = {"sts": f"sts.{region}", "ecr": f"api.ecr.{region}"}[service]
    return f"https://{host}.{suffix}"


def endpoint(env: Mapping[str, str], service: str, region: str) -> str:
    """Where we call a service: AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL, else AWS's."""
    for name in (f"AWS_ENDPOINT_URL_{service.upper()}", "AWS_ENDPOINT_URL"):
        if env.get(name):
            return checked_url(env[name], name).rstrip("/")
    return _aws_endpoint(service, region)


def _xml_field(root: ET.Element, name: str) -> str:
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == name and element.text:
            return element.text.strip()
    return ""


def _sts_error(body: bytes, status: int) -> str:
    try:
        root = ET.fromstring(body)  # noqa: S314 - bounded by http.MAX_BODY; expat refuses entity bombs
    except ET.ParseError:
        return f"HTTP {status}"
    code, message = _xml_field(root, "Code"), _xml_field(root, "Message")
    return f"{code}: {message[:300]}" if code else f"HTTP {status}"


def _sts_credentials(body: bytes) -> Credentials:
    try:
        root = ET.fromstring(body)  # noqa: S314 - see _sts_error
    except ET.ParseError:
        raise CredentialsError("STS answered with something that is not XML") from None
    access, secret = _xml_field(root, "AccessKeyId"), _xml_field(root, "SecretAccessKey")
    token, expiration = _xml_field(root, "SessionToken"), _xml_field(root, "Expiration")
    if not (access and secret and token):
        raise CredentialsError("STS answered without credentials")
    try:
        expires = datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
    except ValueError:
        expires = time.time() + 900
    return Credentials(access, secret, token, expires)


class AwsCredentials:
    """The job's AWS credentials (see the module), fetched once and renewed before expiry."""

    def __init__(
        self,
        env: Mapping[str, str],
        workspace: Path,
        region: str,
        mask: Callable[[str], None],
        *,
        oidc_role_arn: str | None = None,
        assume_role_arn: str | None = None,
        what: str = "the EKS cluster",
        http: Http = send,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.env = env
        self.workspace = workspace
        self.region = region
        self.mask = mask
        self.oidc_role_arn = oidc_role_arn
        self.assume_role_arn = assume_role_arn
        self.what = what
        self.http = http
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: Credentials | None = None

    def available(self) -> bool:
        """Whether the environment holds any of the three kinds of credentials."""
        env = self.env
        return bool(
            self.oidc_role_arn
            or (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
            or (env.get("AWS_ROLE_ARN") and env.get("AWS_WEB_IDENTITY_TOKEN_FILE"))
        )

    def get(self) -> Credentials:
        with self._lock:
            cached = self._cached
            if cached is None or (
                cached.expires is not None and cached.expires - self.clock() < _RENEW_MARGIN
            ):
                cached = self._base()
                if self.assume_role_arn:
                    cached = self._assume_role(cached, self.assume_role_arn)
                self._cached = cached
            return cached

    def _keep(self, creds: Credentials) -> Credentials:
        self.mask(creds.secret_key)
        if creds.token:
            self.mask(creds.token)
        return creds

    def _base(self) -> Credentials:
        env = self.env
        if self.oidc_role_arn:
            token = github_id_token(env, AWS_AUDIENCE, self.mask, self.http)
            return self._web_identity(self.oidc_role_arn, token)
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return self._keep(
                Credentials(
                    env["AWS_ACCESS_KEY_ID"],
                    env["AWS_SECRET_ACCESS_KEY"],
                    env.get("AWS_SESSION_TOKEN") or None,
                )
            )
        if env.get("AWS_ROLE_ARN") and env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
            raw = workspace_file(
                env["AWS_WEB_IDENTITY_TOKEN_FILE"], "AWS_WEB_IDENTITY_TOKEN_FILE", self.workspace
            )
            token = raw.decode("utf-8", "replace").strip()
            self.mask(token)
            return self._web_identity(env["AWS_ROLE_ARN"], token)
        raise CredentialsError(_MISSING.format(what=self.what))

    def _session_name(self) -> str:
        run = re.sub(r"[^\w+=,.@-]", "", self.env.get("GITHUB_RUN_ID", ""))
        return f"deployer-{run}" if run else "deployer"

    def _sts_call(self, params: dict[str, str], creds: Credentials | None) -> Credentials:
        url = endpoint(self.env, "sts", self.region) + "/"
        body = urlencode({**params, "Version": _STS_VERSION}).encode()
        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        if creds is not None:
            now = datetime.fromtimestamp(self.clock(), UTC)
            headers = sign_request("POST", url, headers, body, creds, self.region, "sts", now)
        answer = self.http("POST", url, headers, body, self.env.get("AWS_CA_BUNDLE"))
        if answer.status != 200:
            raise CredentialsError(
                f"AWS STS refused {params['Action']} for role {params['RoleArn']}: "
                f"{_sts_error(answer.body, answer.status)}"
            )
        return self._keep(_sts_credentials(answer.body))

    def _web_identity(self, role_arn: str, token: str) -> Credentials:
        params = {
            "Action": "AssumeRoleWithWebIdentity",
            "RoleArn": role_arn,
            "RoleSessionName": self._session_name(),
            "WebIdentityToken": token,
        }
        return self._sts_call(params, None)

    def _assume_role(self, creds: Credentials, role_arn: str) -> Credentials:
        params = {
            "Action": "AssumeRole",
            "RoleArn": role_arn,
            "RoleSessionName": self._session_name(),
        }
        return self._sts_call(params, creds)


def eks_token(creds: Credentials, cluster: str, region: str, now: float) -> tuple[str, float]:
    """The bearer token `aws eks get-token` makes, and when to stop using it.

    The URL is always AWS's regional STS endpoint, never an endpoint override: we do
    not call it, EKS does, and EKS accepts only STS's own hosts.
    """
    url = _aws_endpoint("sts", region) + f"/?Action=GetCallerIdentity&Version={_STS_VERSION}"
    moment = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    presigned = presign_url(url, creds, region, "sts", moment, 60, {"x-k8s-aws-id": cluster})
    encoded = base64.urlsafe_b64encode(presigned.encode()).decode().rstrip("=")
    return EKS_TOKEN_PREFIX + encoded, now + EKS_TOKEN_LIFETIME


def ecr_registry(host: str) -> tuple[str, str] | None:
    """(account, region) when ``host`` is an ECR registry, else None."""
    match = _ECR_HOST.match(host)
    return (match.group(1), match.group(2)) if match else None


def ecr_password(
    creds: Credentials,
    account: str,
    region: str,
    env: Mapping[str, str],
    now: float,
    http: Http = send,
) -> str:
    """The password for user ``AWS`` from ECR's GetAuthorizationToken (valid 12 h)."""
    url = endpoint(env, "ecr", region) + "/"
    body = json.dumps({"registryIds": [account]}).encode()
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
    }
    moment = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    signed = sign_request("POST", url, headers, body, creds, region, "ecr", moment)
    answer = http("POST", url, signed, body, env.get("AWS_CA_BUNDLE"))
    try:
        data = json.loads(answer.body) if answer.body else {}
    except ValueError:
        data = {}
    if answer.status != 200:
        kind = str(data.get("__type", "")).rsplit("#", 1)[-1] if isinstance(data, dict) else ""
        message = str(data.get("message", ""))[:300] if isinstance(data, dict) else ""
        detail = f"{kind}: {message}" if kind else f"HTTP {answer.status}"
        raise CredentialsError(f"ECR refused GetAuthorizationToken in {region}: {detail}")
    try:
        encoded = data["authorizationData"][0]["authorizationToken"]
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (KeyError, IndexError, TypeError, ValueError):
        raise CredentialsError("ECR answered GetAuthorizationToken without a token") from None
    if user != "AWS" or not password:
        raise CredentialsError("ECR answered GetAuthorizationToken without a token")
    return password
