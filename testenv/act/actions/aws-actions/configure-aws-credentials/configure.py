"""configure-aws-credentials stand-in (see action.yml): OIDC → STS, or keys as given."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
TIMEOUT = 20


def fail(message: str) -> None:
    print(f"::error::configure-aws-credentials stand-in: {message}")
    sys.exit(1)


def oidc_token(audience: str) -> str:
    url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    token = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not url or not token:
        fail("role-to-assume without keys needs the job's OIDC token (id-token: write)")
    request = urllib.request.Request(  # noqa: S310 - the runner's OIDC URL
        f"{url}&audience={urllib.parse.quote(audience, safe='')}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
        return str(json.load(answer)["value"])


def assume_role_with_web_identity(
    region: str, role: str, session: str, duration: str
) -> dict[str, str]:
    web_token = oidc_token(os.environ["INPUT_AUDIENCE"])
    print(f"::add-mask::{web_token}")
    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_STS")
        or os.environ.get("AWS_ENDPOINT_URL")
        or f"https://sts.{region}.amazonaws.com"
    )
    form = urllib.parse.urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": role,
            "RoleSessionName": session,
            "DurationSeconds": duration,
            "WebIdentityToken": web_token,
        }
    ).encode()
    url = endpoint.rstrip("/") + "/"
    request = urllib.request.Request(url, data=form, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            # The answer of the STS the workflow author chose (trusted, like the runner).
            root = ET.fromstring(answer.read())  # noqa: S314
    except urllib.error.HTTPError as e:
        fail(f"AssumeRoleWithWebIdentity for {role} answered HTTP {e.code}")
    creds = root.find(f".//{STS_NS}Credentials")
    if creds is None:
        fail("AssumeRoleWithWebIdentity gave no credentials")
    assert creds is not None
    return {
        "AWS_ACCESS_KEY_ID": creds.findtext(f"{STS_NS}AccessKeyId") or "",
        "AWS_SECRET_ACCESS_KEY": creds.findtext(f"{STS_NS}SecretAccessKey") or "",
        "AWS_SESSION_TOKEN": creds.findtext(f"{STS_NS}SessionToken") or "",
    }


def main() -> None:
    env = os.environ
    region = env["INPUT_AWS_REGION"]
    role = env["INPUT_ROLE_TO_ASSUME"]
    if env["INPUT_AWS_ACCESS_KEY_ID"]:
        if role:
            fail("role chaining (role-to-assume with keys) is not faked here")
        found = {
            "AWS_ACCESS_KEY_ID": env["INPUT_AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["INPUT_AWS_SECRET_ACCESS_KEY"],
            "AWS_SESSION_TOKEN": env["INPUT_AWS_SESSION_TOKEN"],
        }
    elif role:
        found = assume_role_with_web_identity(
            region, role, env["INPUT_ROLE_SESSION_NAME"], env["INPUT_ROLE_DURATION_SECONDS"]
        )
    else:
        fail("give role-to-assume, or aws-access-key-id and aws-secret-access-key")
    account = role.split(":")[4] if role.count(":") >= 5 else ""
    with open(env["GITHUB_ENV"], "a") as job_env:
        for name, value in found.items():
            if value:
                if name != "AWS_ACCESS_KEY_ID":
                    print(f"::add-mask::{value}")
                job_env.write(f"{name}={value}\n")
        job_env.write(f"AWS_REGION={region}\nAWS_DEFAULT_REGION={region}\n")
    with open(env["GITHUB_OUTPUT"], "a") as outputs:
        outputs.write(f"aws-account-id={account}\n")
    who = role or "the given keys"
    print(f"configure-aws-credentials stand-in: credentials for {who} in {region}")


if __name__ == "__main__":
    main()
