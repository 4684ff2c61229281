"""Which credential plugin a kubeconfig ``exec`` entry names, and its token made in-process.

Supported (nothing is ever executed):

    aws eks get-token --cluster-name C [--region R] [--role-arn A]     EKS
    aws-iam-authenticator token -i C [-r A] [--region R]                  EKS
    gke-gcloud-auth-plugin                                                GKE
    kubelogin get-token --login spn|workloadidentity --server-id S ...    AKS

Every other ``exec`` command, every ``auth-provider``, and kubelogin's other
modes (azurecli, devicecode, msi, ...) are refused with a message that says
what to use instead.

A kubeconfig is untrusted (a pull request can change a ``KUBECONFIG`` file in the
workspace): its values never choose where a credential is sent. Of an exec
entry's ``env`` only :data:`EXEC_ENV_KEPT` is used (a region is checked to be a
host label; nothing in it can name a host, a URL or a file); everything else,
``ACTIONS_ID_TOKEN_REQUEST_URL``, ``AZURE_AUTHORITY_HOST`` and
``GOOGLE_APPLICATION_CREDENTIALS`` among it, is ignored: those come from the job's
environment only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from deployer.cloud import CloudEnv, TokenSource
from deployer.cloud.aws import REGION_RULE, is_region
from deployer.cloud.azure import AzureLogin
from deployer.cloud.http import Http, is_loopback, send
from deployer.errors import CredentialsError

__all__ = [
    "AKS_SERVER_ID",
    "EXEC_ENV_KEPT",
    "SUPPORTED",
    "JobCredentials",
    "Plugin",
    "check_server",
    "plugin_for_user",
    "recognise",
    "token_source",
]

SUPPORTED = (
    "aws eks get-token, aws-iam-authenticator token, gke-gcloud-auth-plugin, "
    "kubelogin get-token --login spn|workloadidentity"
)
_KUBELOGIN_MODES = ("spn", "workloadidentity")
# What an exec entry's env may set: a region (a host label, checked) and kubelogin's mode.
EXEC_ENV_KEPT = ("AWS_REGION", "AWS_DEFAULT_REGION", "AAD_LOGIN_METHOD")
# The Entra ID application of every AKS cluster: kubelogin's --server-id. A token for
# another application (Microsoft Graph, Key Vault, ...) is never made for a kubeconfig.
AKS_SERVER_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
# Where the token a plugin makes may go (besides a loopback address, the tests' stand-ins).
_SERVER_SUFFIXES = {
    "eks": (
        (".eks.amazonaws.com", ".eks.amazonaws.com.cn"),
        "an EKS API server (https://….eks.amazonaws.com)",
    ),
    # Azure's public cloud, Azure China (21Vianet) and Azure Government, as AKS's egress
    # rules name their API servers (*.hcp.<location>.<suffix>).
    "aks": (
        (".azmk8s.io", ".cx.prod.service.azk8s.cn", ".cx.aks.containerservice.azure.us"),
        "an AKS API server (https://….azmk8s.io, or Azure China's or Government's)",
    ),
}
_TOKEN = {"eks": "an EKS", "aks": "an AKS", "gke": "a GKE"}
# Set by eksctl's kubeconfigs; ignored without a word (it selects what we do anyway).
_EXEC_ENV_QUIET = ("AWS_STS_REGIONAL_ENDPOINTS",)


class JobCredentials(Protocol):
    """What a plugin's token is made from: the job's environment (``Config`` has it)."""

    @property
    def cloud_env(self) -> Mapping[str, str]: ...

    @property
    def workspace(self) -> Path: ...

    @property
    def aws_role_arn(self) -> str | None: ...


@dataclass(frozen=True)
class Plugin:
    """A recognised plugin entry: which cloud, and what its arguments said."""

    kind: str  # "eks", "gke" or "aks"
    command: str
    cluster: str = ""
    region: str = ""
    role_arn: str = ""
    azure: AzureLogin | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    ignored_env: tuple[str, ...] = ()  # names of the exec env entries not used


def _options(args: Sequence[str], flags: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``--name value`` / ``--name=value`` / ``-n value`` → {canonical name: value}."""
    found: dict[str, str] = {}
    words: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        name, eq, value = arg.partition("=")
        if name in flags:
            if not eq:
                i += 1
                value = items[i] if i < len(items) else ""
            found[flags[name]] = value
        elif not arg.startswith("-"):
            words.append(arg)
        i += 1
    return found, words


def _unsupported(command: str) -> ValueError:
    return ValueError(
        f"runs the credential plugin '{command[:60]}', which deployer does not run (it runs "
        f"no command a kubeconfig names); supported plugins, made in-process: {SUPPORTED}"
    )


def _exec_env(raw_env: list[Any]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The exec env entries that are used (:data:`EXEC_ENV_KEPT`), and the names ignored."""
    env: dict[str, str] = {}
    ignored: list[str] = []
    for item in raw_env:
        if not isinstance(item, Mapping) or not item.get("name"):
            continue
        name, value = str(item["name"]), str(item.get("value") or "")
        if name in EXEC_ENV_KEPT:
            if name != "AAD_LOGIN_METHOD" and value and not is_region(value):
                raise ValueError(f"has an exec env {name} that is not {REGION_RULE}")
            env[name] = value
        elif name not in _EXEC_ENV_QUIET and name[:60] not in ignored:
            ignored.append(name[:60])
    return env, tuple(ignored)


def _exec_parts(
    entry: Mapping[str, Any],
) -> tuple[str, list[str], dict[str, str], tuple[str, ...]]:
    """An ``exec`` entry's command, args, the env used and the env names ignored."""
    command = str(entry.get("command") or "")
    raw_args = entry.get("args") or []
    if not isinstance(raw_args, list):
        raise ValueError("has an exec entry whose 'args' is not a list")
    raw_env = entry.get("env") or []
    if not isinstance(raw_env, list):
        raise ValueError("has an exec entry whose 'env' is not a list")
    env, ignored = _exec_env(raw_env)
    return command, [str(a) for a in raw_args], env, ignored


_AWS_FLAGS = {
    "--cluster-name": "cluster",
    "--cluster-id": "cluster",
    "--region": "region",
    "--role-arn": "role",
    "--profile": "profile",
    "--output": "output",
}
_AUTHENTICATOR_FLAGS = {
    "-i": "cluster",
    "--cluster-id": "cluster",
    "-r": "role",
    "--role": "role",
    "--region": "region",
}
_KUBELOGIN_FLAGS = {
    "--login": "login",
    "-l": "login",
    "--server-id": "server",
    "--client-id": "client",
    "--tenant-id": "tenant",
    "-t": "tenant",
    "--environment": "environment",
    "-e": "environment",
    "--client-secret": "secret",
}


def _eks(command: str, args: list[str], env: dict[str, str]) -> Plugin:
    """``aws eks get-token`` or ``aws-iam-authenticator token``."""
    base = PurePosixPath(command).name
    if base == "aws":
        opts, words = _options(args, _AWS_FLAGS)
        recognised = words[:2] == ["eks", "get-token"]
        shown = [command, *args[:3]]
    else:
        opts, words = _options(args, _AUTHENTICATOR_FLAGS)
        recognised = words[:1] == ["token"]
        shown = [command, *args[:2]]
    if not recognised or not opts.get("cluster"):
        raise _unsupported(" ".join(shown))
    if opts.get("region") and not is_region(opts["region"]):
        raise ValueError(f"has an exec entry whose --region is not {REGION_RULE}")
    return Plugin(
        "eks", base, opts["cluster"], opts.get("region", ""), opts.get("role", ""), env=env
    )


def _kubelogin(command: str, args: list[str], env: dict[str, str]) -> Plugin:
    """``kubelogin get-token`` in a mode a container action can serve."""
    opts, words = _options(args, _KUBELOGIN_FLAGS)
    if words[:1] != ["get-token"]:
        raise _unsupported(" ".join([command, *args[:1]]))
    mode = (opts.get("login") or env.get("AAD_LOGIN_METHOD") or "devicecode").lower()
    if mode not in _KUBELOGIN_MODES:
        raise ValueError(
            f"uses kubelogin --login {mode[:30]}, which needs a login a container action "
            "cannot see or do; use --login workloadidentity (OIDC: AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID and `permissions: id-token: write`) or --login spn "
            "(AZURE_CLIENT_SECRET), e.g. kubelogin convert-kubeconfig -l workloadidentity"
        )
    if not opts.get("server"):
        raise ValueError("has a kubelogin entry without --server-id")
    login = AzureLogin(
        mode,
        opts["server"],
        opts.get("client", ""),
        opts.get("tenant", ""),
        opts.get("environment", ""),
        opts.get("secret", ""),
    )
    return Plugin("aks", "kubelogin", azure=login, env=env)


def recognise(entry: Mapping[str, Any]) -> Plugin:
    """The plugin an ``exec`` entry names; ValueError naming it and the supported ones."""
    command, args, env, ignored = _exec_parts(entry)
    base = PurePosixPath(command).name
    if base in ("aws", "aws-iam-authenticator"):
        plugin = _eks(command, args, env)
    elif base == "gke-gcloud-auth-plugin":
        plugin = Plugin("gke", base, env=env)
    elif base == "kubelogin":
        plugin = _kubelogin(command, args, env)
    else:
        raise _unsupported(command)
    return replace(plugin, ignored_env=ignored)


def plugin_for_user(user: Mapping[str, Any]) -> Plugin | None:
    """The plugin a kubeconfig user needs; None for static credentials; ValueError if refused."""
    provider = user.get("auth-provider")
    if provider is not None:
        name = provider.get("name") if isinstance(provider, Mapping) else None
        raise ValueError(
            f"uses auth-provider '{str(name)[:40]}', which deployer does not support (kubectl "
            f"dropped auth-providers in 1.26); use an exec entry of: {SUPPORTED}"
        )
    entry = user.get("exec")
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise ValueError("has an exec entry that is not a mapping")
    return recognise(entry)


def check_server(plugin: Plugin, scheme: str, host: str) -> None:
    """ValueError when the token ``plugin`` makes may not go to ``scheme://host``.

    Always https (plain http only to a loopback address); an EKS token only to EKS's
    API servers, an AKS token only to AKS's and only for AKS's application. GKE's
    API servers are IP addresses: a GKE token goes to any https server (the threat
    model says so).
    """
    loopback = is_loopback(host)
    if scheme != "https" and not loopback:
        raise ValueError(
            f"makes {_TOKEN[plugin.kind]} token, which goes only over https; use the API "
            "server's https:// address"
        )
    if plugin.kind in _SERVER_SUFFIXES and not loopback:
        suffixes, what = _SERVER_SUFFIXES[plugin.kind]
        if not host.lower().endswith(suffixes):
            raise ValueError(
                f"makes {_TOKEN[plugin.kind]} token, which goes only to {what}; the "
                f"cluster's server is {host[:100]}. A kubeconfig never chooses where a token "
                "of the job goes: use the kubeconfig the cloud's CLI writes"
            )
    if plugin.azure is not None and plugin.azure.server_id.lower() != AKS_SERVER_ID:
        raise ValueError(
            f"has a kubelogin --server-id that is not AKS's: --server-id must be AKS's "
            f"{AKS_SERVER_ID} (a token for another application is never made for a kubeconfig)"
        )


def token_source(
    plugin: Plugin,
    job: JobCredentials,
    mask: Callable[[str], None],
    http: Http = send,
    clock: Callable[[], float] = time.time,
) -> TokenSource:
    """A :class:`TokenSource` making the plugin's token from the job's credentials."""
    env = CloudEnv({**job.cloud_env, **plugin.env})
    workspace = job.workspace
    fetch: Callable[[], tuple[str, float]]
    if plugin.kind == "eks":
        from deployer.cloud import aws

        region = plugin.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION", "")
        if not region:
            raise CredentialsError(
                f"The kubeconfig for EKS cluster {plugin.cluster} names no region: set "
                "AWS_REGION (aws-actions/configure-aws-credentials sets it from aws-region)"
            )
        aws.check_region(region, "AWS_REGION")
        creds = aws.AwsCredentials(
            env,
            workspace,
            region,
            mask,
            oidc_role_arn=job.aws_role_arn,
            assume_role_arn=plugin.role_arn or None,
            what=f"EKS cluster {plugin.cluster}",
            http=http,
            clock=clock,
        )

        def fetch() -> tuple[str, float]:
            return aws.eks_token(creds.get(), plugin.cluster, region, clock())

    elif plugin.kind == "gke":
        from deployer.cloud import gcp

        def fetch() -> tuple[str, float]:
            return gcp.access_token(env, workspace, mask)

    else:
        from deployer.cloud import azure

        login = plugin.azure
        assert login is not None

        def fetch() -> tuple[str, float]:
            return azure.access_token(login, env, workspace, mask, http, clock)

    return TokenSource(fetch, mask, clock=clock)
