"""The ``helm-chart`` input: ``helm template`` a chart from the workspace or an OCI registry.

Only ``helm template`` runs, never ``install``/``upgrade``: there is no Helm release
record, and the objects go through deployer's own apply, watch and rollback. The
chart is untrusted (a pull request may change it), so:

- no plugins (``HELM_PLUGINS`` an empty private directory), no post-renderer, every
  ``HELM_*_HOME`` private, no ``helm dependency update`` (only vendored ``charts/``),
  no network while templating (a ``$ref`` in ``values.schema.json`` goes nowhere);
- before helm reads the chart, :func:`check_chart` refuses links that lead out of
  the workspace (Helm's loader follows them; ``.Files.Get`` would put the target into
  a rendered object) and ``$ref`` to anything outside the schema itself;
- values files must be files in the workspace; ``helm-set`` values that look like
  secrets (:func:`looks_secret`) are masked and handed to helm in private files
  (``--set-file``), never on the command line.

An OCI chart is pulled first (``helm pull --untar``) into a private directory with
a private ``HELM_REGISTRY_CONFIG`` that holds the registry credentials only when
the chart lives on the ``registry`` they are for.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.cloud.http import is_loopback
from deployer.errors import ConfigError, InputProblem
from deployer.manifests import MAX_TOTAL_BYTES, Manifest
from deployer.render.runner import NO_NETWORK, PrivateDirs, ToolFailed, private_dirs, run_tool

__all__ = [
    "HOOK",
    "Capabilities",
    "ChartRequest",
    "check_chart",
    "looks_secret",
    "order_hooks",
    "set_arguments",
    "template",
]

_EXAMPLE = "charts/web"
HOOK = "helm.sh/hook"
_HOOK_WEIGHT = "helm.sh/hook-weight"
_MIGRATION_HOOKS = frozenset({"pre-install", "pre-upgrade"})
_MAX_ENTRIES = 20_000
_SCHEMA = "values.schema.json"
# The last segment of a helm-set key that names a credential, and values that are one.
_SECRET_KEY = re.compile(
    r"passw(?:or)?d|passphrase|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credential|auth|dsn|connection[-_]?string|webhook[-_]?url|signing[-_]?key",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"^(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,}|xox[abprs]-[\w-]{10,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}|sk_live_\w{10,}|eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]+)"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@"
)
_PLAIN = re.compile(r"^(?:true|false|null|~|-?\d+(?:\.\d+)?)$", re.IGNORECASE)


def looks_secret(key: str, value: str) -> bool:
    """Whether a ``helm-set`` value is masked and kept off the command line.

    The rule: the key's last segment names a credential (password, secret, token,
    apiKey, accessKey, privateKey, credential, auth, dsn, connectionString,
    webhookUrl, signingKey … in any case) and the value is not a boolean, number or
    null of fewer than 4 characters; or the value itself looks like one (GitHub,
    GitLab, Slack, AWS, Stripe tokens, a JWT, a PEM private key, a URL with a password).
    """
    if not value:
        return False
    if _SECRET_VALUE.search(value):
        return True
    last = re.split(r"(?<!\\)\.", key)[-1].split("[", 1)[0]
    return bool(_SECRET_KEY.search(last)) and len(value) >= 4 and not _PLAIN.match(value)


def set_arguments(pairs: Sequence[tuple[str, str]], dirs: PrivateDirs) -> list[str]:
    """``--set key=value`` per pair; a secret-looking value as ``--set-file`` of a private
    file instead (a string, as a secret is), so no secret is on the command line."""
    argv: list[str] = []
    folder: Path | None = None
    for number, (key, value) in enumerate(pairs):
        if looks_secret(key, value):
            folder = folder or dirs.path("set")
            path = folder / f"value-{number}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(value)
            argv += ["--set-file", f"{key}={path}"]
        else:
            argv += ["--set", f"{key}={value}"]
    return argv


@dataclass(frozen=True)
class Capabilities:
    """What ``helm template`` is told about the cluster (from its discovery)."""

    kube_version: str  # v1.34.1
    api_versions: tuple[str, ...]  # apps/v1, apps/v1/Deployment, …


@dataclass(frozen=True)
class ChartRequest:
    """Everything one ``helm template`` needs, from the config and the cluster."""

    chart: str  # as given: a directory in the workspace, or oci://…:version
    workspace: Path
    release: str
    namespace: str
    values: tuple[str, ...] = ()
    sets: tuple[tuple[str, str], ...] = ()
    registry: str = ""  # the host the credentials below are for
    username: str | None = None
    password: str | None = None


def _problem(text: str) -> ConfigError:
    return ConfigError([InputProblem("helm-chart", text, _EXAMPLE)])


# -- checks of the tree ---------------------------------------------------------------


def check_chart(root: Path, allowed: Path, shown: str) -> None:
    """Refuse a chart whose links lead out of ``allowed`` or whose schema refers out.

    Every entry is looked at (links to directories are entered, once), at most
    :data:`_MAX_ENTRIES`; raises :class:`ConfigError` naming each bad entry.
    """
    problems: list[str] = []
    seen: set[Path] = set()
    for count, (path, real) in enumerate(_entries(root, seen), start=1):
        if count > _MAX_ENTRIES:
            problems.append(f"'{shown}' has more than {_MAX_ENTRIES} files")
            break
        where = f"{shown}/{path.relative_to(root).as_posix()}"
        if real is None:
            problems.append(f"{where} is a link that cannot be resolved")
        elif not real.is_relative_to(allowed):
            problems.append(
                f"{where} links outside the workspace; helm would read what it points at"
            )
        elif path.name == _SCHEMA and real.is_file():
            problems.extend(_schema_problems(real, where))
    if problems:
        raise ConfigError([InputProblem("helm-chart", p, _EXAMPLE) for p in problems[:20]])


def _entries(root: Path, seen: set[Path]) -> Iterator[tuple[Path, Path | None]]:
    """``(path, real path or None)`` of every entry under ``root``, links followed once."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            real_dir = directory.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real_dir in seen:
            continue
        seen.add(real_dir)
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                real = entry.resolve(strict=True)
            except (OSError, RuntimeError):
                yield entry, None
                continue
            yield entry, real
            if real.is_dir():
                stack.append(entry)


def _schema_problems(path: Path, where: str) -> list[str]:
    try:
        if path.stat().st_size > 4 * 1024 * 1024:
            return [f"{where} is larger than 4 MiB"]
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # helm says what is wrong with it
    refs = sorted({r for r in _refs(schema) if not r.startswith("#")})
    return [
        f"{where} refers to '{ref[:100]}'; helm would read it from disk or the network: put "
        "the definition into the schema ($defs)"
        for ref in refs[:5]
    ]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# -- running helm -----------------------------------------------------------------------


def _helm_env(dirs: PrivateDirs, registry_config: Path) -> dict[str, str]:
    """Every place helm reads or writes, inside the private tree (created on demand)."""
    helm_home = dirs.root / "helm"
    return {
        **dirs.base_env(),
        "HELM_PLUGINS": str(dirs.nothing),
        "HELM_CONFIG_HOME": str(helm_home / "config"),
        "HELM_CACHE_HOME": str(helm_home / "cache"),
        "HELM_DATA_HOME": str(helm_home / "data"),
        "HELM_REGISTRY_CONFIG": str(registry_config),
        "HELM_REPOSITORY_CONFIG": str(helm_home / "config" / "repositories.yaml"),
        "HELM_REPOSITORY_CACHE": str(helm_home / "cache" / "repository"),
        "KUBECONFIG": str(dirs.root / "no-kubeconfig"),
    }


def _run(argv: list[str], env: Mapping[str, str], dirs: PrivateDirs, **kw: Any) -> str:
    try:
        out = run_tool(argv, env=env, cwd=dirs.tmp, max_output=MAX_TOTAL_BYTES, **kw)
    except ToolFailed as e:
        lines = [line for line in e.stderr.splitlines() if line.strip()]
        detail = f": {' / '.join(lines[-6:])[-1500:]}" if lines else ""
        raise _problem(f"helm {argv[1]} {e.message}{detail}") from None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise _problem(f"helm {argv[1]} wrote text that is not UTF-8") from None


def _loopback(host: str) -> bool:
    """Whether an OCI registry's ``host[:port]`` is on this machine."""
    return is_loopback(host.rsplit(":", 1)[0] if host.count(":") <= 1 else host)


def _oci_host(reference: str) -> str:
    return reference.removeprefix("oci://").split("/", 1)[0]


def _registry_config(request: ChartRequest, dirs: PrivateDirs) -> Path:
    """A private registry config: the credentials, only for the registry they are for.

    A chart from the workspace is never pulled: its config stays a path with no file.
    """
    path = dirs.root / "registry.json"
    if not request.chart.startswith("oci://"):
        return path
    auths: dict[str, Any] = {}
    chart_host = _oci_host(request.chart)
    if request.username and request.password and chart_host == request.registry:
        pair = f"{request.username}:{request.password}".encode()
        auths[chart_host] = {"auth": base64.b64encode(pair).decode()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"auths": auths}, fh)
    return path


def _pull(
    binary: str, request: ChartRequest, dirs: PrivateDirs, env: Mapping[str, str], **kw: Any
) -> Path:
    """``helm pull --untar`` of an OCI chart into a private directory; its chart directory."""
    into = dirs.path("chart")
    argv = [binary, "pull", request.chart, "--untar", "--untardir", str(into)]
    if _loopback(_oci_host(request.chart)):
        argv.append("--plain-http")  # as the Docker engine, plain HTTP only on loopback
    _run(argv, env, dirs, **kw)
    found = [p for p in into.iterdir() if (p / "Chart.yaml").is_file()]
    if len(found) != 1:
        raise _problem(f"'{request.chart[:100]}' did not unpack to one chart")
    check_chart(found[0], into.resolve(), request.chart[:100])
    return found[0]


def template(
    binary: str | None,
    request: ChartRequest,
    capabilities: Capabilities,
    *,
    seconds: float,
    cancel: threading.Event | None = None,
    proxy_env: Mapping[str, str] | None = None,
) -> str:
    """The YAML ``helm template`` writes for ``request``; :class:`ConfigError` if it fails."""
    if not binary:
        raise _problem(
            "needs the helm binary, which is not in this environment (the action image has "
            "it; elsewhere set DEPLOYER_HELM to its absolute path)"
        )
    with private_dirs("helm") as dirs:
        env = _helm_env(dirs, _registry_config(request, dirs))
        if request.chart.startswith("oci://"):
            pull_env = {**env, **(proxy_env or {})}  # the pull is the one step with network
            chart = _pull(binary, request, dirs, pull_env, seconds=seconds, cancel=cancel)
        else:
            chart = (request.workspace / request.chart).resolve()
            check_chart(chart, request.workspace.resolve(), request.chart[:100])
        argv = [binary, "template", request.release, str(chart), *_template_flags(request)]
        argv += ["--kube-version", capabilities.kube_version]
        if capabilities.api_versions:
            argv += ["--api-versions", ",".join(capabilities.api_versions)]
        argv += set_arguments(request.sets, dirs)
        return _run(argv, {**env, **NO_NETWORK}, dirs, seconds=seconds, cancel=cancel)


def _template_flags(request: ChartRequest) -> list[str]:
    flags = ["--namespace", request.namespace, "--include-crds", "--skip-tests"]
    workspace = request.workspace.resolve()
    for name in request.values:
        try:
            path = (workspace / name).resolve(strict=True)
        except (OSError, RuntimeError):
            raise ConfigError(
                [InputProblem("helm-values", f"'{name[:60]}' cannot be read", "values.yaml")]
            ) from None
        if not path.is_relative_to(workspace) or not path.is_file():
            raise ConfigError(
                [
                    InputProblem(
                        "helm-values", f"'{name[:60]}' is not a file in the workspace", "v.yaml"
                    )
                ]
            )
        flags += ["--values", str(path)]
    return flags


# -- hooks ------------------------------------------------------------------------------


def _hooks_of(manifest: Manifest) -> list[str]:
    annotations = manifest.doc["metadata"].get("annotations") or {}
    value = annotations.get(HOOK) if isinstance(annotations, Mapping) else None
    return [h.strip() for h in str(value).split(",") if h.strip()] if value else []


def _weight(manifest: Manifest) -> int:
    annotations = manifest.doc["metadata"].get("annotations") or {}
    try:
        return int(str(annotations.get(_HOOK_WEIGHT, "0")).strip())
    except ValueError:
        return 0  # as helm: a weight that is not a number is 0


def order_hooks(manifests: list[Manifest]) -> list[Manifest]:
    """Hooks as deployer runs them: ``pre-install``/``pre-upgrade`` objects come after the
    chart's other objects, by ``helm.sh/hook-weight`` (a Job among them is a migration,
    run to completion before any workload changes); any other hook is an input error.

    There is no release record, so every run is an install and an upgrade at once.
    """
    problems = []
    hooks: list[Manifest] = []
    plain: list[Manifest] = []
    for m in manifests:
        found = _hooks_of(m)
        if not found:
            plain.append(m)
            continue
        other = [h for h in found if h not in _MIGRATION_HOOKS]
        if other:
            problems.append(
                InputProblem(
                    "helm-chart",
                    f"{m.source} ({m.kind} {m.name}) is a helm hook '{', '.join(other)[:80]}', "
                    "which deployer does not run: only pre-install and pre-upgrade hooks are "
                    "supported (a Job among them runs as a migration before the workloads); "
                    "remove the hook or render the chart in a step of your own",
                    _EXAMPLE,
                )
            )
        hooks.append(m)
    if problems:
        raise ConfigError(problems)
    return plain + sorted(hooks, key=_weight)
