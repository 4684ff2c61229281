"""google-github-actions/auth stand-in (see action.yml): a credentials file in the workspace."""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.parse
from pathlib import Path
from typing import Any

GOOGLE_STS_URL = "https://sts.googleapis.com/v1/token"
PROJECT_VARIABLES = ("CLOUDSDK_CORE_PROJECT", "CLOUDSDK_PROJECT", "GCLOUD_PROJECT", "GCP_PROJECT")


def fail(message: str) -> None:
    print(f"::error::google-github-actions/auth stand-in: {message}")
    sys.exit(1)


def external_account(provider: str, service_account: str, audience: str) -> dict[str, Any]:
    url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    token = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not url or not token:
        fail("workload_identity_provider needs the job's OIDC token (permissions: id-token: write)")
    oidc_audience = audience or f"https://iam.googleapis.com/{provider}"
    config: dict[str, Any] = {
        "type": "external_account",
        "audience": f"//iam.googleapis.com/{provider}",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": os.environ.get("STANDIN_GOOGLE_STS_URL") or GOOGLE_STS_URL,
        "credential_source": {
            "url": f"{url}&audience={urllib.parse.quote(oidc_audience, safe='')}",
            "headers": {"Authorization": f"Bearer {token}"},
            "format": {"type": "json", "subject_token_field_name": "value"},
        },
    }
    iam = os.environ.get("STANDIN_GOOGLE_IAM_URL", "")
    if service_account and iam:
        config["service_account_impersonation_url"] = (
            f"{iam.rstrip('/')}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"
        )
    return config


def main() -> None:
    env = os.environ
    provider = env["INPUT_WORKLOAD_IDENTITY_PROVIDER"]
    key = env["INPUT_CREDENTIALS_JSON"]
    if bool(provider) == bool(key):
        fail("give exactly one of workload_identity_provider and credentials_json")
    if key:
        try:
            config = json.loads(key)
        except ValueError:
            fail("credentials_json is not JSON")
        project = str(config.get("project_id", ""))
    else:
        config = external_account(provider, env["INPUT_SERVICE_ACCOUNT"], env["INPUT_AUDIENCE"])
        project = env["INPUT_SERVICE_ACCOUNT"].partition("@")[2].split(".")[0]
    project = env["INPUT_PROJECT_ID"] or project
    path = Path(env["GITHUB_WORKSPACE"]) / f"gha-creds-{secrets.token_hex(8)}.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    with open(env["GITHUB_OUTPUT"], "a") as outputs:
        outputs.write(f"project_id={project}\ncredentials_file_path={path}\n")
    if env["INPUT_EXPORT_ENVIRONMENT_VARIABLES"] == "true":
        with open(env["GITHUB_ENV"], "a") as job_env:
            for name in (
                "GOOGLE_APPLICATION_CREDENTIALS",
                "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
                "GOOGLE_GHA_CREDS_PATH",
            ):
                job_env.write(f"{name}={path}\n")
            if project:
                for name in PROJECT_VARIABLES:
                    job_env.write(f"{name}={project}\n")
    print(f"google-github-actions/auth stand-in: wrote {path.name}")


if __name__ == "__main__":
    main()
