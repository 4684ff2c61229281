"""The registry login from a cloud identity, when no ``registry-password`` is given.

ECR (``<account>.dkr.ecr.<region>.amazonaws.com``): user ``AWS``, password from
GetAuthorizationToken with the job's AWS credentials. Artifact Registry
(``<region>-docker.pkg.dev``) and GCR (``gcr.io``): user ``oauth2accesstoken``,
password a Google access token. The build and push stages read the login from
the returned Config as they read a given password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

from deployer.config import Config

if TYPE_CHECKING:  # the HTTP client (ssl, urllib: ~13 ms) only for a login that is needed
    from deployer.cloud.http import Http

__all__ = ["registry_login"]


def _needs_login(config: Config) -> bool:
    pushing = config.build and config.push and not config.dry_run
    return (pushing or not config.build) and config.registry_password is None


def registry_login(
    config: Config,
    mask: Callable[[str], None],
    http: Http | None = None,
    clock: Callable[[], float] = time.time,
) -> Config:
    """``config`` with the registry login filled in from the cloud identity, if it applies."""
    if not _needs_login(config):
        return config
    from deployer.cloud import aws, gcp
    from deployer.cloud.http import send

    http = http or send

    host = config.registry
    ecr = aws.ecr_registry(host)
    if ecr is not None:
        account, region = ecr
        creds = aws.AwsCredentials(
            config.cloud_env,
            config.workspace,
            region,
            mask,
            oidc_role_arn=config.aws_role_arn,
            what=f"the ECR registry {host}",
            http=http,
            clock=clock,
        )
        password = aws.ecr_password(creds.get(), account, region, config.cloud_env, clock(), http)
        user = "AWS"
    elif gcp.is_google_registry(host) and config.cloud_env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        password, _ = gcp.access_token(
            config.cloud_env, config.workspace, mask, what=f"the registry {host}"
        )
        user = "oauth2accesstoken"
    else:
        return config
    mask(password)
    return config.model_copy(
        update={"registry_username": user, "registry_password": SecretStr(password)}
    )
