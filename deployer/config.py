"""Inputs → one validated :class:`Config`.

The runner passes input ``registry-password`` as env var ``INPUT_REGISTRY-PASSWORD``
(upper-cased, hyphens kept), unset inputs as empty strings, and does not enforce
``required``. This is the only module that reads the environment; everything else
gets the :class:`Config`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr

from deployer.buildenv import cache_credentials, cache_fields, reserved_build_arg
from deployer.buildinputs import (
    NamedContext,
    SshForward,
    file_roots,
    parse_annotations,
    parse_build_contexts,
    parse_no_cache_filters,
    parse_secret_envs,
    parse_secret_files,
    parse_ssh,
)
from deployer.cloud import CloudEnv
from deployer.errors import ConfigError, InputProblem
from deployer.gitmeta import commit_time
from deployer.kubeconfig import check_input_kubeconfig

__all__ = [
    "DEFAULT_BUILDKIT_IMAGE",
    "INPUTS",
    "Config",
    "GitHubContext",
    "ImageName",
    "cache_ref_registries",
    "cache_type",
    "find_buildx",
    "find_tool",
    "input_env_name",
    "load_config",
    "parse_duration",
    "parse_image",
    "raw_inputs",
    "split_image",
]

# Every input of action.yml: name → (default, example of a right value).
INPUTS: dict[str, tuple[str, str]] = {
    "image": ("", "ghcr.io/acme/web"),
    "tags": ("", "v1.2.3,latest"),
    "context": (".", "."),
    "dockerfile": ("", "docker/Dockerfile"),
    "file": ("", "docker/Dockerfile"),  # build-push-action's name for dockerfile
    "build-args": ("", "VERSION=1.2.3"),
    "labels": ("", "org.example.team=web"),
    "target": ("", "runtime"),
    "build": ("true", "true"),
    "push": ("true", "true"),
    "registry": ("", "ghcr.io"),
    "registry-username": ("", "${{ github.actor }}"),
    "registry-password": ("", "${{ secrets.GITHUB_TOKEN }}"),
    "kubeconfig": ("", "${{ secrets.KUBECONFIG }}"),
    "aws-role-arn": ("", "arn:aws:iam::123456789012:role/github-deploy"),
    "namespace": ("", "production"),
    "deployments": ("", "web,worker"),
    "workloads": ("", "deployment/web,statefulset/db,daemonset/agent,rollout/api"),
    "container": ("", "web"),
    "manifests": ("", "k8s/*.yaml"),
    "timeout": ("5m", "10m"),
    "rollback-on-failure": ("true", "true"),
    "tolerate-failures-until-deadline": ("false", "false"),
    "on-pause": ("wait", "succeed"),
    "dry-run": ("false", "false"),
    "comment-on-pr": ("false", "true"),
    "github-token": ("", "${{ github.token }}"),
    "allow-cluster-scoped": ("false", "true"),
    # rendered manifests, several images, pull secrets, config changes (issue 18)
    "kustomize": ("", "k8s/overlays/production"),
    "helm-chart": ("", "charts/web"),
    "helm-values": ("", "charts/web/values-production.yaml"),
    "helm-set": ("", "replicaCount=3"),
    "helm-release": ("", "web"),
    "images": ("", "ghcr.io/acme/worker@sha256:<64 hex digits>"),
    "image-pull-secret": ("", "ghcr-pull"),
    "restart-on-config-change": ("true", "true"),
    # build-push-action's names and syntax
    "cache-from": ("", "type=registry,ref=ghcr.io/acme/web:buildcache"),
    "cache-to": ("", "type=registry,ref=ghcr.io/acme/web:buildcache,mode=max"),
    "platforms": ("", "linux/amd64,linux/arm64"),
    "secrets": ("", "NPM_TOKEN=${{ secrets.NPM_TOKEN }}"),
    "no-cache": ("false", "false"),
    "pull": ("false", "false"),
    "provenance": ("", "mode=max"),
    "sbom": ("", "true"),
    "build-contexts": ("", "assets=./assets"),
    "no-cache-filters": ("", "deps"),
    "ssh": ("", "default"),
    "secret-files": ("", "npmrc=.npmrc"),
    "secret-envs": ("", "npm_token=NPM_TOKEN"),
    "annotations": ("", "org.opencontainers.image.description=The web app"),
}

# Environment the runner gives a container action for the Actions cache (type=gha);
# passed through to buildx, never printed.
GHA_ENV = (
    "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_CACHE_URL",
    "ACTIONS_RESULTS_URL",
    "ACTIONS_CACHE_SERVICE_V2",
)
# The job's network settings, handed to the one renderer step that uses the network
# (pulling an OCI chart); trusted, like the rest of the job's environment.
_PROXY_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# The BuildKit image of a docker-container builder (a buildx-stable release), pinned by digest.
DEFAULT_BUILDKIT_IMAGE = (
    "moby/buildkit:v0.29.0@sha256:0039c1d47e8748b5afea56f4e85f14febaf34452bd99d9552d2daa82262b5cc5"
)

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

# The distribution reference grammar (github.com/distribution/reference).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ARG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# ``user:token@`` before a host; not the ``@sha256:…`` of a digest.
_USERINFO_RE = re.compile(
    r"(?:(?<=://)|^)[^/@\s]*@(?![a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32})"
)
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLATFORM_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_.]+)?$")
_SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_ATTESTATION_RE = re.compile(r"[A-Za-z0-9_.\-]+=[^\s,]+(?:,[A-Za-z0-9_.\-]+=[^\s,]+)*")
_CACHE_TYPES = ("registry", "gha", "inline", "local", "s3", "azblob")
_WORKLOAD_KINDS = ("deployment", "statefulset", "daemonset", "rollout")
_ON_PAUSE = ("wait", "succeed")
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def input_env_name(name: str) -> str:
    """The env var the runner sets for an input: ``INPUT_`` + upper case, hyphens kept."""
    return "INPUT_" + name.replace(" ", "_").upper()


def raw_inputs(env: Mapping[str, str]) -> dict[str, str]:
    """Each declared input's value as the runner passes it (defaults for unset ones)."""
    values = {}
    for name, (default, _) in INPUTS.items():
        value = env.get(input_env_name(name), "")
        values[name] = value if value.strip() else default
    return values


class ImageName(BaseModel):
    """An image repository split into registry host and path (no tag, no digest)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    registry: str
    path: str
    repository: str  # exactly as the user wrote it; what we tag and push

    def reference(self, tag: str) -> str:
        return f"{self.repository}:{tag}"

    def with_digest(self, digest: str) -> str:
        return f"{self.repository}@{digest}"


def split_image(value: str) -> ImageName:
    """Split an image repository; raises ValueError saying what is wrong."""
    if not value:
        raise ValueError("is required")
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"'{_shown(value)}' contains white space")
    if "@" in value:
        raise ValueError(f"'{_shown(value)}' contains a digest; give the repository only")
    if "://" in value:
        raise ValueError(f"'{_shown(value)}' has a URL scheme; give the repository only")
    if "//" in value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"'{_shown(value)}' has an empty path component")
    first, _, rest = value.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
        if not _DOMAIN_RE.match(registry):
            raise ValueError(f"'{_shown(registry)}' is not a valid registry host")
    else:
        registry, path = DOCKER_HUB, value
    if ":" in path:
        raise ValueError(
            f"'{_shown(value)}' contains a tag; give the repository only and use 'tags'"
        )
    if path != path.lower():
        raise ValueError(f"'{_shown(value)}' has upper-case letters; repositories are lower case")
    if not _PATH_RE.match(path):
        raise ValueError(f"'{_shown(value)}' is not a valid repository name")
    if len(value) > 255:
        raise ValueError("is longer than 255 characters")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    return ImageName.model_construct(registry=registry, path=path, repository=value)


def parse_image(value: str) -> tuple[ImageName, str | None]:
    """``repo`` or ``repo@sha256:<hex>`` → the repository and the digest, if any."""
    repository, at, digest = value.partition("@")
    if at and not _DIGEST_RE.match(digest):
        raise ValueError(
            f"'{_shown(value, 100)}' has a malformed digest; write repo@sha256:<64 hex digits>"
        )
    return split_image(repository), digest if at else None


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m`` → seconds (> 0)."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(text)
        if not text or not match or not any(match.groups()):
            raise ValueError(f"'{_shown(text)}' is not a duration")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError(f"'{_shown(text)}' must be longer than zero")
    if seconds > 6 * 3600:
        raise ValueError(f"'{_shown(text)}' is longer than the 6 h a job may run")
    return seconds


class GitHubContext(BaseModel):
    """The parts of the runner's GITHUB_* environment we use."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    sha: str = ""
    ref: str = ""
    repository: str = ""
    server_url: str = "https://github.com"
    run_id: str = ""
    run_attempt: str = ""
    workflow: str = ""
    actor: str = ""
    job: str = ""  # the job's id in the workflow (GITHUB_JOB)
    action: str = ""  # the step's id, or __owner_repo[_N] (GITHUB_ACTION)
    event_name: str = ""
    event_path: str = ""  # the event's JSON payload, written by the runner
    api_url: str = "https://api.github.com"

    @property
    def source_url(self) -> str:
        return f"{self.server_url}/{self.repository}" if self.repository else ""

    @property
    def commit_url(self) -> str:
        return f"{self.source_url}/commit/{self.sha}" if self.source_url and self.sha else ""

    @property
    def run_url(self) -> str:
        return (
            f"{self.source_url}/actions/runs/{self.run_id}"
            if self.source_url and self.run_id
            else ""
        )


class Config(BaseModel):
    """Everything one run needs, validated."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)

    image: ImageName
    tags: tuple[str, ...]
    context: Path
    dockerfile: Path
    build_args: dict[str, str]
    labels: dict[str, str]
    target: str | None
    build: bool
    push: bool
    registry: str
    registry_username: str | None
    registry_password: SecretStr | None
    kubeconfig: SecretStr | None
    namespace: str | None
    deployments: tuple[str, ...]
    workloads: tuple[str, ...] = ()  # "kind/name", kind lower-case
    container: str | None
    manifests: tuple[str, ...]
    timeout: float
    rollback_on_failure: bool
    tolerate_failures_until_deadline: bool = False
    on_pause: str = "wait"  # an Argo Rollout paused for a promotion: "wait" | "succeed"
    dry_run: bool
    allow_cluster_scoped: bool = False
    kustomize: str | None = None  # a directory in the workspace, as given
    helm_chart: str | None = None  # a directory in the workspace, or oci://…:version
    helm_values: tuple[str, ...] = ()
    helm_set: tuple[tuple[str, str], ...] = ()  # in order: a later one wins, as in helm
    helm_release: str = ""
    images: tuple[str, ...] = ()  # more repo@sha256:… to substitute (the ``images`` input)
    image_pull_secret: str | None = None
    restart_on_config_change: bool = True
    comment_on_pr: bool = False
    github_token: SecretStr | None = None
    workspace: Path
    docker_host: str | None
    kubeconfig_path: str | None = Field(default=None, description="KUBECONFIG from the env")
    runner_temp: Path | None = Field(default=None, description="RUNNER_TEMP from the env")
    aws_role_arn: str | None = None
    cloud_env: CloudEnv = Field(default_factory=CloudEnv, description="AWS_*, AZURE_*, ...")
    github: GitHubContext
    created: str
    image_digest: str | None = None  # image given as repo@sha256:… (build: false)
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    build_secrets: dict[str, SecretStr] = Field(default_factory=dict)  # secrets, secret-envs
    secret_files: dict[str, SecretBytes] = Field(default_factory=dict)
    build_contexts: tuple[NamedContext, ...] = ()
    no_cache_filters: tuple[str, ...] = ()
    ssh: tuple[SshForward, ...] = ()
    annotations: tuple[str, ...] = ()  # buildx --annotation values, levels spelt out
    # Files of the job's credentials the inputs name (secret-files, SSH keys, the agent's
    # socket): left out of the build context like the auth actions' files.
    credential_paths: tuple[Path, ...] = ()
    notices: tuple[str, ...] = ()  # said once the inputs are valid (e.g. an image lower-cased)
    no_cache: bool = False
    pull: bool = False
    provenance: str | None = None
    sbom: str | None = None
    buildx: str | None = Field(default=None, description="path of the buildx binary found")
    buildkit_image: str = DEFAULT_BUILDKIT_IMAGE
    gha_env: dict[str, SecretStr] = Field(default_factory=dict)
    path_env: str = ""
    proxy_env: dict[str, str] = Field(default_factory=dict, description="HTTPS_PROXY, ...")
    kustomize_binary: str | None = Field(default=None, description="kustomize found")
    helm_binary: str | None = Field(default=None, description="helm found")

    @property
    def deploys(self) -> bool:
        """Whether the run has a deploy stage (workloads named, or manifests to apply)."""
        return bool(
            self.deployments
            or self.workloads
            or self.manifests
            or self.kustomize
            or self.helm_chart
        )

    @property
    def manifest_input(self) -> str:
        """The input the run's manifests come from: manifests, kustomize or helm-chart."""
        if self.kustomize:
            return "kustomize"
        return "helm-chart" if self.helm_chart else "manifests"

    @property
    def tag_references(self) -> list[str]:
        if self.image_digest:
            return []
        return [self.image.reference(t) for t in self.tags]

    @property
    def wants_attestations(self) -> bool:
        return any(v is not None and v.lower() != "false" for v in (self.provenance, self.sbom))

    def oci_labels(self) -> dict[str, str]:
        """OCI annotations for the image, then the user's labels (which win)."""
        labels = {"org.opencontainers.image.created": self.created}
        if self.github.source_url:
            labels["org.opencontainers.image.source"] = self.github.source_url
        if self.github.sha:
            labels["org.opencontainers.image.revision"] = self.github.sha
        labels.update(self.labels)
        return labels


def _created(env: Mapping[str, str], workspace: Path) -> str:
    """The image's creation time: the commit's, so rebuilding one commit hits the cache.

    SOURCE_DATE_EPOCH (the reproducible-builds convention) wins, then the pushed
    commit's timestamp from the event payload, then the commit's time read from the
    workspace's git metadata (workflow_dispatch has no commit in its event), then now.
    """
    moment: datetime | None = None
    epoch = env.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        moment = datetime.fromtimestamp(int(epoch), UTC)
    elif env.get("GITHUB_EVENT_PATH"):
        try:
            with open(env["GITHUB_EVENT_PATH"], encoding="utf-8") as fh:
                event = json.load(fh)
            stamp = (event.get("head_commit") or {}).get("timestamp")
            if isinstance(stamp, str):
                moment = datetime.fromisoformat(stamp).astimezone(UTC)
        except (OSError, ValueError, AttributeError):
            moment = None
    if moment is None:
        seconds = commit_time(workspace, env.get("GITHUB_SHA", ""))
        moment = datetime.fromtimestamp(seconds, UTC) if seconds is not None else None
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(f"'{_shown(text)}' is not a boolean; use true or false")


def _parse_pairs(
    text: str,
    *,
    key_re: re.Pattern[str] = _ARG_KEY_RE,
    what: str = "key",
    rule: str = "letters, digits, '_', '.', '-', not starting with a digit",
    unique: bool = False,
) -> dict[str, str]:
    """``KEY=VALUE`` lines. Errors name the line number only: a value may be a secret
    (``NPM_TOKEN: npm_…`` with ``:`` for ``=``), and the runner masks only whole secrets,
    so not even a prefix of a bad line is echoed."""
    pairs: dict[str, str] = {}
    example = f"{what.upper()}=VALUE, one per line"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"line {number} has no '='; write {example}")
        if not key_re.match(key):
            raise ValueError(
                f"line {number} has an invalid {what} before its '=' ({rule}); write {example}"
            )
        if unique and key in pairs:
            raise ValueError(f"line {number} repeats the {what} '{key}'")
        pairs[key] = value
    return pairs


def _shown(value: str, limit: int = 60) -> str:
    """``value`` for an error message: cut to ``limit`` and without URL credentials.

    ``https://user:token@ghcr.io`` in ``registry`` (or in ``image``) would otherwise be
    quoted back with its token.
    """
    return _USERINFO_RE.sub("***@", value)[:limit]


def _csv_fields(entry: str) -> dict[str, str]:
    """A validated cache entry's fields, read as buildx reads them (CSV)."""
    return dict(cache_fields(entry))


def _parse_cache(text: str, workspace: Path) -> list[str]:
    """``cache-from``/``cache-to``: one buildx cache entry a line (a bare ref means registry).

    Problems name the line and the cache type only: an entry can hold a token.
    """
    entries: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if len(entry) > 2000 or any(ord(c) < 32 or c.isspace() for c in entry):
            raise ValueError(f"line {number} has white space or control characters, or is too long")
        if "=" not in entry.split(",")[0]:
            entry = f"type=registry,ref={entry}"  # buildx's shorthand, as build-push-action
        try:
            fields = dict(cache_fields(entry))
            cache_credentials(entry)  # a credential buildx could only take in argv
        except ValueError as e:
            raise ValueError(f"line {number} {e}") from None
        kind = fields.get("type", "")
        if kind not in _CACHE_TYPES:
            raise ValueError(
                f"line {number} has type '{kind[:20]}'; use one of {', '.join(_CACHE_TYPES)}"
            )
        if kind == "registry" and not fields.get("ref"):
            raise ValueError(f"line {number} (type=registry) has no ref=<image>")
        if kind == "local":
            for key in ("src", "dest"):
                if key in fields and not _inside((workspace / fields[key]).resolve(), workspace):
                    raise ValueError(f"line {number} (type=local): {key} is outside the workspace")
        entries.append(entry)
    return entries


def _check_cache_credentials(check: _Collector, entries: list[str]) -> None:
    """One value per variable: two cache entries with different tokens cannot both go."""
    seen: dict[str, str] = {}
    for entry in entries:
        for name, value in cache_credentials(entry)[1].items():
            if seen.setdefault(name, value) != value:
                check.fail(
                    "cache-to",
                    f"cache entries carry two different values for what buildx reads from "
                    f"{name}; give the credential once (or leave it to the job's environment)",
                )
                return


def cache_type(entry: str) -> str:
    """The ``type=`` of a validated cache entry."""
    return _csv_fields(entry).get("type", "")


def cache_ref_registries(entries: tuple[str, ...]) -> set[str]:
    """The registry hosts named by ``ref=`` in cache entries."""
    hosts = set()
    for entry in entries:
        first, _, rest = _csv_fields(entry).get("ref", "").partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            hosts.add(first)
    return hosts


def _parse_platforms(text: str) -> list[str]:
    platforms = list(dict.fromkeys(_split_list(text)))
    for platform in platforms:
        if not _PLATFORM_RE.match(platform):
            raise ValueError(f"'{platform[:40]}' is not a platform; write os/arch[/variant]")
    return platforms


def _parse_secrets(text: str) -> dict[str, str]:
    """``secrets``: ``id=value`` lines. Problems never show a value."""
    return _parse_pairs(
        text, key_re=_SECRET_ID_RE, what="id", rule="letters, digits, '_', '.', '-'", unique=True
    )


def _parse_attestation(text: str) -> str | None:
    """``provenance``/``sbom``: true, false, or buildx's key=value,... form."""
    value = text.strip()
    if not value:
        return None
    if value.lower() in ("true", "false"):
        return value.lower()
    if len(value) > 300 or not _ATTESTATION_RE.fullmatch(value):
        raise ValueError(f"'{value[:60]}' is not true, false or key=value[,key=value]")
    return value


def _gha_problem(name: str, entries: list[str], env: Mapping[str, str]) -> str | None:
    """Why ``type=gha`` cannot work in this run, or None."""
    gha = [_csv_fields(e) for e in entries if cache_type(e) == "gha"]
    if not gha:
        return None
    has_token = all(f.get("token") for f in gha) or bool(env.get("ACTIONS_RUNTIME_TOKEN"))
    has_url = (
        all(f.get("url") or f.get("url_v2") for f in gha)
        or bool(env.get("ACTIONS_RESULTS_URL"))
        or bool(env.get("ACTIONS_CACHE_URL"))
    )
    missing = [
        what
        for what, ok in (
            ("ACTIONS_RUNTIME_TOKEN", has_token),
            ("ACTIONS_RESULTS_URL (or ACTIONS_CACHE_URL)", has_url),
        )
        if not ok
    ]
    if not missing:
        return None
    return (
        f"asks for type=gha, but {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not in this action's environment (the runner "
        "does not hand the Actions cache service's URL to container actions). Add a step "
        "`uses: crazy-max/ghaction-github-runtime@v3` before this one, which exports them to "
        "the job, or use a registry cache (type=registry,ref=<image>:buildcache) which needs "
        "nothing more"
    )


_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def find_tool(env: Mapping[str, str], variable: str, name: str) -> str | None:
    """``variable`` (an absolute path, as the action image sets it), else ``name`` on PATH."""
    given = env.get(variable, "").strip()
    if given:
        return given if Path(given).is_absolute() else None
    return shutil.which(name, path=env.get("PATH", os.defpath))


def find_buildx(env: Mapping[str, str]) -> str | None:
    """DEPLOYER_BUILDX if set, else the docker-buildx CLI plugin, else ``buildx`` on PATH."""
    if env.get("DEPLOYER_BUILDX"):
        return env["DEPLOYER_BUILDX"]
    dirs = [*_PLUGIN_DIRS]
    if env.get("HOME"):
        dirs.insert(0, str(Path(env["HOME"]) / ".docker" / "cli-plugins"))
    if env.get("DOCKER_CONFIG"):
        dirs.insert(0, str(Path(env["DOCKER_CONFIG"]) / "cli-plugins"))
    for folder in dirs:
        candidate = Path(folder) / "docker-buildx"
        if _is("file", candidate) and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("buildx", path=env.get("PATH", os.defpath))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


class _Collector:
    """Runs each input's parser and gathers every problem, not just the first."""

    def __init__(self) -> None:
        self.problems: list[InputProblem] = []

    def take(self, name: str, parse: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except ValueError as e:
            self.fail(name, str(e))
            return None

    def fail(self, name: str, problem: str) -> None:
        self.problems.append(InputProblem(name, problem, INPUTS[name][1]))


def _is(kind: str, path: Path) -> bool:
    """``path.is_dir()``/``is_file()`` that says False for a name too long or with a NUL."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except (OSError, ValueError):
        return False


def _dockerfile_input(check: _Collector, workspace: Path, raw: Mapping[str, str]) -> str:
    """The input that names the Dockerfile: ``dockerfile``, or build-push-action's ``file``.

    Both may be given when they name the same file (a workflow moved over from
    build-push-action keeps its ``file:`` line).
    """
    dockerfile, file = raw["dockerfile"].strip(), raw["file"].strip()
    if not file:
        return "dockerfile"
    same = os.path.normpath(workspace / dockerfile) == os.path.normpath(workspace / file)
    if dockerfile and not same:
        check.fail(
            "file",
            f"'{_shown(file)}' and dockerfile '{_shown(dockerfile)}' name different files; "
            "give one of them (file is build-push-action's name for dockerfile)",
        )
    return "dockerfile" if dockerfile else "file"


def _build_files(
    check: _Collector, workspace: Path, raw: Mapping[str, str], building: bool
) -> tuple[Path, Path]:
    """Resolve ``context`` and ``dockerfile``; they must exist inside the workspace."""
    for name in ("context", "dockerfile", "file"):
        if "\0" in raw[name]:  # Path.resolve raises ValueError on it
            check.fail(name, "contains a NUL character")
            return workspace, workspace / "Dockerfile"
    file_input = _dockerfile_input(check, workspace, raw)
    dockerfile_text = raw[file_input].strip()
    try:
        context = (workspace / raw["context"].strip()).resolve()
        dockerfile = (
            (workspace / dockerfile_text).resolve() if dockerfile_text else context / "Dockerfile"
        )
    except (OSError, RuntimeError) as e:  # a name too long, a symlink loop
        why = getattr(e, "strerror", None) or e
        check.fail("context", f"'{_shown(raw['context'])}' cannot be resolved: {why}")
        return workspace, workspace / "Dockerfile"
    if not building:  # deploying an image that exists: no build files needed
        return context, dockerfile
    if not _is("dir", context):
        check.fail("context", f"'{_shown(raw['context'])}' is not a directory in the workspace")
        return workspace, dockerfile
    if not _inside(context, workspace):
        check.fail("context", f"'{_shown(raw['context'])}' lies outside the workspace")
        return workspace, dockerfile
    if not _is("file", dockerfile):
        check.fail(
            file_input,
            f"'{_shown(dockerfile_text) or 'Dockerfile'}' is not a file "
            + ("(paths are relative to the workspace)" if dockerfile_text else "in the context"),
        )
    elif not _inside(dockerfile, workspace):
        check.fail(file_input, f"'{_shown(dockerfile_text)}' lies outside the workspace")

    return context, dockerfile


_FLAGS = (
    "build",
    "push",
    "rollback-on-failure",
    "dry-run",
    "allow-cluster-scoped",
    "no-cache",
    "pull",
    "tolerate-failures-until-deadline",
    "restart-on-config-change",
    "comment-on-pr",
)


def _github(env: Mapping[str, str]) -> GitHubContext:
    return GitHubContext.model_construct(
        sha=env.get("GITHUB_SHA", ""),
        ref=env.get("GITHUB_REF", ""),
        repository=env.get("GITHUB_REPOSITORY", ""),
        server_url=env.get("GITHUB_SERVER_URL", "") or "https://github.com",
        run_id=env.get("GITHUB_RUN_ID", ""),
        run_attempt=env.get("GITHUB_RUN_ATTEMPT", ""),
        workflow=env.get("GITHUB_WORKFLOW", ""),
        actor=env.get("GITHUB_ACTOR", ""),
        job=env.get("GITHUB_JOB", ""),
        action=env.get("GITHUB_ACTION", ""),
        event_name=env.get("GITHUB_EVENT_NAME", ""),
        event_path=env.get("GITHUB_EVENT_PATH", ""),
        api_url=env.get("GITHUB_API_URL", "") or "https://api.github.com",
    )


def _flags(check: _Collector, raw: Mapping[str, str]) -> dict[str, bool]:
    """Every boolean input; a bad one is a problem and falls back to its default, so the
    remaining checks still run."""
    values = {}
    for name in _FLAGS:
        value = check.take(name, _parse_bool, raw[name])
        values[name] = value if value is not None else INPUTS[name][0] == "true"
    return values


def _image_inputs(
    check: _Collector, raw: Mapping[str, str], github: GitHubContext, building: bool
) -> dict[str, Any]:
    """``image`` and ``tags``."""
    image_text, notices = _lower_cased(raw["image"].strip())
    parsed_image = check.take("image", parse_image, image_text)
    image, image_digest = parsed_image if parsed_image else (None, None)
    tag_text = raw["tags"] or (f"sha-{github.sha[:7]}" if github.sha else "latest")
    tags, entries = [], _split_list(tag_text)
    for entry in entries:
        tag = check.take("tags", _tag_of, entry, image) if _is_reference(entry) else entry
        if tag is None:
            continue
        tags.append(tag)
        if not _TAG_RE.match(tag):
            check.fail(
                "tags",
                f"'{_shown(tag)}' is not a valid tag (letters, digits, '_', '.', '-'; "
                "at most 128; not starting with '.' or '-')",
            )
    if not entries:
        check.fail("tags", "no tag given")
    if image_digest and building:
        check.fail(
            "image",
            "contains a digest, which names an image that already exists: set build: false "
            "to deploy exactly that image, or give the repository only to build it",
        )
    if image_digest and raw["tags"].strip():
        check.fail("tags", "cannot be used with an image given by digest (repo@sha256:…)")
    return {
        "image": image,
        "image_digest": image_digest,
        "tags": tuple(dict.fromkeys(tags)),
        "notices": tuple(notices),
    }


def _lower_cased(image: str) -> tuple[str, list[str]]:
    """``image`` with its repository lower-cased, as docker/metadata-action does, and the
    notice saying so: ``ghcr.io/${{ github.repository_owner }}/web`` has the owner's case,
    which no image reference may have."""
    repository, at, digest = image.partition("@")
    if repository == repository.lower():
        return image, []
    lowered = repository.lower()
    return lowered + at + digest, [
        f"Image '{_shown(repository, 200)}' has upper-case letters, which image references "
        f"cannot have: using '{_shown(lowered, 200)}' (as docker/metadata-action does)"
    ]


def _is_reference(entry: str) -> bool:
    """Whether a ``tags`` entry is a full reference (a tag has no '/', ':' or '@')."""
    return any(c in entry for c in "/:@")


def _tag_of(entry: str, image: ImageName | None) -> str:
    """The tag of ``entry``, a full reference (docker/metadata-action's ``tags`` output,
    build-push-action's ``tags``) that must name the image's own repository."""
    name, at, _ = entry.partition("@")
    if at:
        raise ValueError(
            f"'{_shown(entry, 100)}' names a digest; give tags (v1.2.3) or references with "
            "a tag (ghcr.io/acme/web:v1.2.3)"
        )
    slash, colon = name.rfind("/"), name.rfind(":")
    repository, tag = (name[:colon], name[colon + 1 :]) if colon > slash else (name, "latest")
    try:
        other = split_image(repository.lower())
    except ValueError as e:
        raise ValueError(f"'{_shown(entry, 100)}' is not an image reference: {e}") from None
    if image is not None and _hub_path(other) != _hub_path(image):
        raise ValueError(
            f"'{_shown(entry, 100)}' is in repository {other.repository}, not in the image's "
            f"{image.repository}: the action pushes one repository, the one it deploys. "
            "Give bare tags (v1.2.3), or push to another repository in a step of its own"
        )
    return tag


def _hub_path(image: ImageName) -> tuple[str, str]:
    """(registry, path) with Docker Hub's ``library/`` spelt one way."""
    if image.registry == DOCKER_HUB:
        return image.registry, image.path.removeprefix("library/")
    return image.registry, image.path


def _build_inputs(
    check: _Collector,
    raw: Mapping[str, str],
    env: Mapping[str, str],
    workspace: Path,
    building: bool,
) -> dict[str, Any]:
    """What buildx is asked to do: files, cache, platforms, secrets, args, labels, target."""
    context, dockerfile = _build_files(check, workspace, raw, building)
    cache_from = check.take("cache-from", _parse_cache, raw["cache-from"], workspace) or []
    cache_to = check.take("cache-to", _parse_cache, raw["cache-to"], workspace) or []
    for name, entries in (("cache-from", cache_from), ("cache-to", cache_to)):
        problem = _gha_problem(name, entries, env)
        if problem:
            check.fail(name, problem)
    _check_cache_credentials(check, cache_from + cache_to)
    build_secrets = check.take("secrets", _parse_secrets, raw["secrets"]) or {}
    build_args = check.take("build-args", _parse_pairs, raw["build-args"]) or {}
    s3_cache = any(cache_type(e) == "s3" for e in cache_from + cache_to)
    for key in build_args:
        if reserved_build_arg(key, s3_cache=s3_cache):
            check.fail(
                "build-args",
                f"'{key}' is a variable buildx itself reads (BUILDX_*, DOCKER_*, BUILDKIT_*, "
                "ACTIONS_*, proxies, SSL_CERT_*, PATH, HOME, ..."
                + (", and AWS_* with a type=s3 cache" if s3_cache else "")
                + "): build-arg values reach buildx through its environment, so it would "
                "reconfigure buildx. Rename the ARG in the Dockerfile, e.g. APP_" + key,
            )
    target = raw["target"].strip() or None
    if target is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", target):
        check.fail("target", f"'{_shown(target)}' is not a valid build stage name")
    return {
        "context": context,
        "dockerfile": dockerfile,
        "cache_from": tuple(cache_from),
        "cache_to": tuple(cache_to),
        "platforms": tuple(check.take("platforms", _parse_platforms, raw["platforms"]) or []),
        "build_secrets": {k: SecretStr(v) for k, v in build_secrets.items()},
        "provenance": check.take("provenance", _parse_attestation, raw["provenance"]),
        "sbom": check.take("sbom", _parse_attestation, raw["sbom"]),
        "build_args": build_args,
        "labels": check.take("labels", _parse_pairs, raw["labels"]) or {},
        "target": target,
    }


def _forwarded_inputs(
    check: _Collector,
    raw: Mapping[str, str],
    env: Mapping[str, str],
    workspace: Path,
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """What else build-push-action hands buildx: named contexts, SSH, secret files and
    variables, annotations, no-cache filters (deployer/buildinputs.py). Not read when
    nothing is built: no file or agent is needed then."""
    if not fields["build"]:
        return {}
    roots = file_roots(workspace, env)
    secret_envs = check.take("secret-envs", parse_secret_envs, raw["secret-envs"], env) or {}
    files, file_paths = check.take(
        "secret-files", parse_secret_files, raw["secret-files"], roots
    ) or ({}, ())
    taken = set(fields["build_secrets"])
    for name, ids in (("secret-envs", secret_envs), ("secret-files", files)):
        for secret_id in sorted(taken & set(ids)):
            check.fail(name, f"repeats the id '{secret_id}' of another secret input")
        taken |= set(ids)
    ssh = check.take("ssh", parse_ssh, raw["ssh"], env, roots) or ()
    index = len(fields["platforms"]) > 1 or any(
        v is not None and v != "false" for v in (fields["provenance"], fields["sbom"])
    )
    agents = [Path(s.agent) for s in ssh if s.agent]
    return {
        "build_secrets": {**fields["build_secrets"], **secret_envs},
        "secret_files": files,
        "build_contexts": check.take(
            "build-contexts", parse_build_contexts, raw["build-contexts"], workspace
        )
        or (),
        "no_cache_filters": check.take(
            "no-cache-filters", parse_no_cache_filters, raw["no-cache-filters"]
        )
        or (),
        "ssh": ssh,
        "annotations": check.take("annotations", parse_annotations, raw["annotations"], index=index)
        or (),
        "credential_paths": (*file_paths, *(p for s in ssh for p in s.key_paths), *agents),
    }


def _registry_inputs(
    check: _Collector, raw: Mapping[str, str], image: ImageName | None
) -> dict[str, Any]:
    """``registry`` and its credentials."""
    registry_text = raw["registry"].strip()
    registry = image.registry if image else DOCKER_HUB
    if registry_text:
        given = registry_text.removeprefix("https://").removeprefix("http://").rstrip("/")
        given = DOCKER_HUB if given in _HUB_ALIASES else given
        if not _DOMAIN_RE.match(given):
            check.fail("registry", f"'{_shown(registry_text)}' is not a registry host")
        elif image and given != image.registry:
            check.fail(
                "registry",
                f"'{_shown(registry_text)}' is not the registry of image '{image.repository}' "
                f"({image.registry}); leave it empty to use the image's",
            )
    username = raw["registry-username"].strip() or None
    password = raw["registry-password"] or None
    if password and not username:
        check.fail("registry-username", "is empty but registry-password is set; give both")
    if username and not password:
        check.fail("registry-password", "is empty but registry-username is set; give both")
    return {
        "registry": registry,
        "registry_username": username,
        "registry_password": SecretStr(password) if password else None,
    }


def _workloads(check: _Collector, raw: Mapping[str, str]) -> dict[str, Any]:
    """``deployments``, ``workloads`` and ``container``."""
    deployments = _split_list(raw["deployments"])
    for name in deployments:
        if len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
            check.fail("deployments", f"'{_shown(name, 70)}' is not a valid Deployment name")
    if len(set(deployments)) != len(deployments):
        check.fail("deployments", "names a Deployment more than once")
    workloads: list[str] = []
    for entry in _split_list(raw["workloads"]):
        kind, _, name = entry.rpartition("/")
        kind = kind.strip().lower() or "deployment"
        name = name.strip()
        if kind not in _WORKLOAD_KINDS:
            check.fail(
                "workloads",
                f"'{entry[:70]}': kind must be deployment, statefulset, daemonset or rollout",
            )
        elif len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
            check.fail("workloads", f"'{entry[:70]}' is not a valid {kind} name")
        elif f"{kind}/{name}" in workloads:
            check.fail("workloads", f"names {kind}/{name} more than once")
        else:
            workloads.append(f"{kind}/{name}")
    container = raw["container"].strip() or None
    if container and (len(container) > 63 or not _DNS_LABEL_RE.match(container)):
        check.fail("container", f"'{_shown(container, 70)}' is not a valid container name")
    return {
        "deployments": tuple(deployments),
        "workloads": tuple(workloads),
        "container": container,
    }


def _cluster_inputs(
    check: _Collector, raw: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, Any]:
    """Where and how to deploy: credentials, namespace, manifests, timeout."""
    namespace = raw["namespace"].strip() or None
    if namespace and (len(namespace) > 63 or not _DNS_LABEL_RE.match(namespace)):
        check.fail("namespace", f"'{_shown(namespace, 70)}' is not a valid namespace name")
    if raw["kubeconfig"].strip():
        check.take("kubeconfig", check_input_kubeconfig, raw["kubeconfig"])
    aws_role_arn = raw["aws-role-arn"].strip() or None
    if aws_role_arn and not _ROLE_ARN_RE.match(aws_role_arn):
        check.fail("aws-role-arn", f"'{aws_role_arn[:100]}' is not an IAM role ARN")
    on_pause = raw["on-pause"].strip().lower() or INPUTS["on-pause"][0]
    if on_pause not in _ON_PAUSE:
        check.fail(
            "on-pause",
            f"'{_shown(raw['on-pause'], 70)}' is not wait or succeed (what to do when an Argo "
            "Rollout pauses for a promotion)",
        )
    return {
        "namespace": namespace,
        "on_pause": on_pause,
        "kubeconfig": SecretStr(raw["kubeconfig"]) if raw["kubeconfig"].strip() else None,
        "kubeconfig_path": env.get("KUBECONFIG") or None,
        "aws_role_arn": aws_role_arn,
        "manifests": tuple(_split_list(raw["manifests"])),
        "timeout": check.take("timeout", parse_duration, raw["timeout"]),
        **_workloads(check, raw),
    }


_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_OCI_CHART_RE = re.compile(
    rf"^oci://(?P<host>{_DOMAIN})/(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.+-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_HELM_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]\\/]{1,253}$")
_RELEASE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _workspace_path(workspace: Path, text: str) -> Path:
    """``text`` resolved (links followed) inside the workspace; ValueError otherwise."""
    if "\0" in text or len(text) > 1024:
        raise ValueError("is not a usable path (a NUL character, or too long)")
    if "://" in text:
        raise ValueError(f"'{_shown(text)}' is a URL; give a path inside the workspace")
    if Path(text).is_absolute():
        raise ValueError(f"'{_shown(text)}' is absolute; give a path relative to the workspace")
    try:
        path = (workspace / text).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ValueError(f"'{_shown(text)}' does not exist in the workspace") from None
    if not _inside(path, workspace):
        raise ValueError(f"'{_shown(text)}' leads outside the workspace")
    return path


def _parse_kustomize(text: str, workspace: Path) -> str:
    path = _workspace_path(workspace, text)
    if not _is("dir", path):
        raise ValueError(f"'{_shown(text)}' is not a directory holding a kustomization")
    if not any(_is("file", path / name) for name in _KUSTOMIZATION_FILES):
        raise ValueError(f"'{_shown(text)}' holds no kustomization.yaml")
    return text


def _parse_helm_chart(text: str, workspace: Path) -> str:
    """A chart directory in the workspace, or ``oci://host/path/chart:version`` (or @digest)."""
    if text.startswith("oci://"):
        match = _OCI_CHART_RE.match(text)
        if not match:
            raise ValueError(f"'{_shown(text, 100)}' is not an OCI chart reference")
        if not match["tag"] and not match["digest"]:
            raise ValueError(
                f"'{_shown(text, 100)}' has no version; pin it: oci://host/path/chart:1.2.3 "
                "(or @sha256:…)"
            )
        return text
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        raise ValueError(
            f"'{_shown(text, 100)}' is a chart repository URL; deployer renders a chart from "
            "the workspace or from an OCI registry (oci://…), never a repository index"
        )
    path = _workspace_path(workspace, text)
    if not _is("file", path / "Chart.yaml"):
        raise ValueError(f"'{_shown(text)}' is not a chart directory (no Chart.yaml in it)")
    return text


def _parse_helm_values(text: str, workspace: Path) -> list[str]:
    files = [line.strip() for line in text.splitlines() if line.strip()]
    for name in files:
        if not _is("file", _workspace_path(workspace, name)):
            raise ValueError(f"'{_shown(name)}' is not a file")
    return files


def _parse_helm_set(text: str) -> list[tuple[str, str]]:
    """``key=value`` lines in helm's ``--set`` syntax; problems name the line only."""
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not _HELM_KEY_RE.match(key.strip()):
            raise ValueError(
                f"line {number} is not key=value with a key of letters, digits and . _ - [ ] / "
                "(helm's --set syntax)"
            )
        pairs.append((key.strip(), value))
    return pairs


def _parse_release(text: str) -> str:
    if len(text) > 53 or not _RELEASE_RE.match(text):
        raise ValueError(
            f"'{_shown(text)}' is not a release name (lower-case letters, digits, '-', '.'; "
            "at most 53)"
        )
    return text


def _parse_images(text: str, image: ImageName | None) -> list[str]:
    """``repo@sha256:…`` references, one a line (or comma separated), repositories distinct."""
    found: dict[str, str] = {}
    for entry in _split_list(text):
        name, digest = parse_image(entry) if "@" in entry else (None, None)
        if name is None or digest is None:
            raise ValueError(
                f"'{_shown(entry, 100)}' has no digest; give repo@sha256:<64 hex digits> "
                "(e.g. an earlier build step's digest output)"
            )
        if image is not None and name.repository == image.repository:
            raise ValueError(f"'{_shown(entry, 100)}' is the repository of input 'image'")
        if name.repository in found and found[name.repository] != entry:
            raise ValueError(f"names repository {name.repository} twice")
        found[name.repository] = entry
    return list(found.values())


def _render_inputs(
    check: _Collector, raw: Mapping[str, str], workspace: Path, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Where the manifests come from (manifests | kustomize | helm-chart) and what the
    rollout adds to workloads: more images, a pull secret."""
    kustomize = raw["kustomize"].strip()
    chart = raw["helm-chart"].strip()
    sources = [n for n, v in (("manifests", fields["manifests"]), ("kustomize", kustomize)) if v]
    for name, value in (("kustomize", kustomize), ("helm-chart", chart)):
        if value and sources and sources[0] != name:
            check.fail(name, f"cannot be used with '{sources[0]}'; give one source of manifests")
    if kustomize:
        kustomize = check.take("kustomize", _parse_kustomize, kustomize, workspace) or ""
    if chart:
        chart = check.take("helm-chart", _parse_helm_chart, chart, workspace) or ""
    for name in ("helm-values", "helm-set", "helm-release"):
        if raw[name].strip() and not raw["helm-chart"].strip():
            check.fail(name, "has no effect without helm-chart")
    image: ImageName | None = fields["image"]
    release = raw["helm-release"].strip() or (
        image.path.rsplit("/", 1)[-1][:53].strip(".-") if image else ""
    )
    secret = raw["image-pull-secret"].strip() or None
    if secret and (len(secret) > 253 or not _DNS_SUBDOMAIN_RE.match(secret)):
        check.fail("image-pull-secret", f"'{_shown(secret, 70)}' is not a valid Secret name")
    return {
        "kustomize": kustomize or None,
        "helm_chart": chart or None,
        "helm_values": tuple(
            check.take("helm-values", _parse_helm_values, raw["helm-values"], workspace) or ()
        ),
        "helm_set": tuple(check.take("helm-set", _parse_helm_set, raw["helm-set"]) or ()),
        "helm_release": (check.take("helm-release", _parse_release, release) if chart else None)
        or release,
        "images": tuple(check.take("images", _parse_images, raw["images"], image) or ()),
        "image_pull_secret": secret,
    }


def _job_environment(env: Mapping[str, str], workspace: Path) -> dict[str, Any]:
    """What the run takes from the job's environment rather than from inputs."""
    return {
        "workspace": workspace,
        "docker_host": env.get("DOCKER_HOST") or None,
        "cloud_env": CloudEnv.from_environ(env),
        "created": _created(env, workspace),
        "buildx": find_buildx(env),
        "buildkit_image": env.get("DEPLOYER_BUILDKIT_IMAGE", "").strip() or DEFAULT_BUILDKIT_IMAGE,
        "gha_env": {k: SecretStr(env[k]) for k in GHA_ENV if env.get(k)},
        "path_env": env.get("PATH", os.defpath),
        "runner_temp": Path(env["RUNNER_TEMP"]) if env.get("RUNNER_TEMP") else None,
        "proxy_env": {k: env[k] for k in _PROXY_ENV if env.get(k)},
        "kustomize_binary": find_tool(env, "DEPLOYER_KUSTOMIZE", "kustomize"),
        "helm_binary": find_tool(env, "DEPLOYER_HELM", "helm"),
    }


def load_config(env: Mapping[str, str]) -> Config:
    """Validate the inputs in ``env``; raise :class:`ConfigError` listing every bad one."""
    raw = raw_inputs(env)
    check = _Collector()
    github = _github(env)
    workspace = Path(env.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()
    flags = _flags(check, raw)
    fields: dict[str, Any] = {
        "github": github,
        "build": flags["build"],
        "push": flags["push"],
        "rollback_on_failure": flags["rollback-on-failure"],
        "tolerate_failures_until_deadline": flags["tolerate-failures-until-deadline"],
        "dry_run": flags["dry-run"],
        "allow_cluster_scoped": flags["allow-cluster-scoped"],
        "restart_on_config_change": flags["restart-on-config-change"],
        "comment_on_pr": flags["comment-on-pr"],
        "github_token": SecretStr(raw["github-token"].strip())
        if raw["github-token"].strip()
        else None,
        "no_cache": flags["no-cache"],
        "pull": flags["pull"],
        **_image_inputs(check, raw, github, flags["build"]),
    }
    fields.update(_build_inputs(check, raw, env, workspace, flags["build"]))
    fields.update(_forwarded_inputs(check, raw, env, workspace, fields))
    fields.update(_registry_inputs(check, raw, fields["image"]))
    fields.update(_cluster_inputs(check, raw, env))
    fields.update(_render_inputs(check, raw, workspace, fields))
    deploying = (
        fields["deployments"] or fields["workloads"] or fields["manifests"] or fields["kustomize"]
    ) or fields["helm_chart"]
    if deploying and not flags["push"] and flags["build"]:
        check.fail("push", "is false, but a cluster can only run an image that was pushed")
    if flags["comment-on-pr"] and not raw["github-token"].strip():
        check.fail(
            "github-token",
            "is empty, but comment-on-pr is true; pass the job's token and give the job "
            "permissions: pull-requests: write",
        )
    if check.problems:
        raise ConfigError(check.problems)
    fields.update(_job_environment(env, workspace))
    # Every field was checked above, by its input's own rule, into its final type.
    # pydantic's validation would only repeat that, and building its validators costs
    # about 50 ms of every run (schemas, plugin discovery): the models are built
    # without it (defer_build; a model validates when a test or a caller builds one
    # directly). tests/unit/test_config.py proves validation would give the same.
    return Config.model_construct(**fields)
