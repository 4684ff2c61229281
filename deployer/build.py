"""Stage 1: build (and push) the image with BuildKit, through buildx.

The builder is the engine's own BuildKit (buildx's ``docker`` driver) unless the
request needs more: a cache export other than inline, several platforms, or
attestations. Then a ``docker-container`` builder is made for this run only, as
docker/setup-buildx-action makes on hosted runners, and removed on every way out,
cancel included. BuildKit pushes the result itself (``--push``) and reports the
digest in the metadata file; push.py reads it back from the registry.

The registry login, the build secrets and buildkitd's settings reach buildx
through files in a private directory (buildx.py), never through argv. The log
is untrusted text: printed between stop-commands markers.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer import buildx
from deployer.actions import ActionsIO
from deployer.buildcontext import check_named_contexts, context_dockerfile
from deployer.config import Config, cache_ref_registries, cache_type
from deployer.errors import BuildError, EngineError, PushError, RegistryAuthError
from deployer.registry import Transient, classify, with_retries

__all__ = [
    "BuildResult",
    "build_argv",
    "build_image",
    "builder_reasons",
    "context_dockerfile",
]

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Named build contexts need BuildKit 0.10; Docker Engine 23.0 (API 1.42) ships 0.11, 20.10
# ships 0.8 ("unsupported frontend capability moby.buildkit.frontend.contexts").
_NAMED_CONTEXTS_API = (1, 42)
# What buildx and BuildKit say when pulling a base image was refused.
_PULL_HINTS = (
    "failed to resolve source metadata",
    "pull access denied",
    "failed to authorize",
    "pulling from host",
)


@dataclass(frozen=True)
class BuildResult:
    """What the build produced."""

    image_id: str  # the config digest when BuildKit reports one (a single platform)
    references: tuple[str, ...]
    duration: float
    digest: str = ""  # what BuildKit pushed (a manifest or an index); "" when not pushed
    builder: str = ""
    push_seconds: float = 0.0


def _api_older_than(version: str | None, minimum: tuple[int, int]) -> bool:
    """Whether the engine's negotiated API version (``"1.41"``) is below ``minimum``."""
    try:
        major, minor = (int(part) for part in (version or "").split(".")[:2])
    except ValueError:
        return False  # unknown: assume a current engine
    return (major, minor) < minimum


def builder_reasons(config: Config, engine_api_version: str | None = None) -> list[str]:
    """Why this build needs a docker-container builder; empty: the engine's BuildKit will do.

    ``engine_api_version`` is the engine's negotiated API version, when known.
    """
    reasons = []
    exports = sorted({cache_type(e) for e in config.cache_to} - {"inline"})
    if exports:
        reasons.append(f"cache-to type={','.join(exports)} (the docker driver exports inline only)")
    imports = sorted({cache_type(e) for e in config.cache_from} - {"inline", "registry"})
    if imports:
        reasons.append(f"cache-from type={','.join(imports)}")
    if len(config.platforms) > 1:
        reasons.append(f"{len(config.platforms)} platforms")
    if config.wants_attestations:
        reasons.append("attestations (provenance/sbom)")
    if config.annotations:  # seen: the docker driver pushes the image without them
        reasons.append("annotations (the engine's image store keeps none)")
    if config.build_contexts and _api_older_than(engine_api_version, _NAMED_CONTEXTS_API):
        reasons.append(
            f"build-contexts (engine API {engine_api_version}: its BuildKit predates named "
            "contexts)"
        )
    return reasons


def build_argv(
    config: Config,
    workdir: buildx.Workdir,
    dockerfile: Path,
    *,
    builder: str | None,
    push: bool,
    reserved_env: set[str],
) -> tuple[list[str], dict[str, str]]:
    """buildx's argv and the build-arg values passed through its environment.

    Nothing secret is in argv: build secrets are files (``src=``), the registry
    login is in the docker config, build-arg values go through the environment
    (``--build-arg NAME`` makes buildx read ``$NAME``) unless the name clashes
    with a variable buildx itself needs.
    """
    assert config.buildx is not None
    argv = [config.buildx, "build", "--progress=plain", f"--metadata-file={workdir.metadata}"]
    if builder:
        argv.append(f"--builder={builder}")
    argv.append(f"--file={dockerfile}")
    for reference in config.tag_references:
        argv.append(f"--tag={reference}")
    env: dict[str, str] = {}
    for key, value in config.build_args.items():
        if key in reserved_env or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            argv.append(f"--build-arg={key}={value}")
        else:
            argv.append(f"--build-arg={key}")
            env[key] = value
    for key, value in config.oci_labels().items():
        argv.append(f"--label={key}={value}")
    if config.target:
        argv.append(f"--target={config.target}")
    if config.platforms:
        argv.append(f"--platform={','.join(config.platforms)}")
    argv += [f"--cache-from={entry}" for entry in config.cache_from]
    argv += [f"--cache-to={entry}" for entry in config.cache_to]
    for name, path in workdir.secret_files.items():
        argv.append(f"--secret=id={name},src={path}")
    argv += _forwarded_argv(config, workdir)
    if config.no_cache:
        argv.append("--no-cache")
    if config.pull:
        argv.append("--pull")
    if config.provenance is not None:
        argv.append(f"--provenance={config.provenance}")
    if config.sbom is not None:
        argv.append(f"--sbom={config.sbom}")
    if push:
        argv.append("--push")
    elif builder and len(config.platforms) <= 1:
        argv.append("--load")  # a docker-container builder keeps results to itself otherwise
    argv.append(str(config.context))
    return argv, env


def _forwarded_argv(config: Config, workdir: buildx.Workdir) -> list[str]:
    """build-push-action's further inputs as buildx flags: named contexts, SSH, no-cache
    filters, annotations. Each is one ``--flag=value`` argument, so no value can become a
    flag of its own; SSH keys are the private copies, the agent is SSH_AUTH_SOCK's socket."""
    argv = [f"--build-context={c.name}={c.source}" for c in config.build_contexts]
    for forward in config.ssh:
        paths = [str(p) for p in workdir.ssh_keys.get(forward.id, [])]
        argv.append(f"--ssh={forward.id}={forward.agent or ','.join(paths)}")
    argv += [f"--no-cache-filter={stage}" for stage in config.no_cache_filters]
    argv += [f"--annotation={annotation}" for annotation in config.annotations]
    return argv


def _failure(config: Config, run: buildx.BuildxRun) -> Exception:
    """A failed buildx run → the error for the user (Transient: worth another push)."""
    log = run.log
    reference = config.tag_references[0] if config.tag_references else config.image.repository
    message = (log.error or log.vertex_error or f"buildx exited with code {run.code}").strip()
    for prefix in ("failed to build: ", "failed to solve: "):
        message = message.removeprefix(prefix)
    step = log.failed_step
    lowered = message.lower()
    if step.startswith(buildx.PUSH_STEPS) or "failed to push" in lowered:
        error = classify(config, message, f"pushing {reference}")
        if isinstance(error, Transient):  # the retry budget counts the push, not the build
            return Transient(str(error), run.push_seconds)
        return error
    if step.startswith("[internal] load metadata for") or any(h in lowered for h in _PULL_HINTS):
        error = classify(config, message, f"pulling a base image for {reference}")
        if isinstance(error, RegistryAuthError):
            return error
    where = f" at {step}" if step else ""
    return BuildError(f"Building {reference} failed{where}: {message}", details=log.details())


def _require_buildx(config: Config) -> None:
    if not config.buildx or not os.access(config.buildx, os.X_OK):
        raise EngineError(
            f"buildx was not found{f' at {config.buildx}' if config.buildx else ''}: the action "
            "builds with BuildKit through buildx (its image sets DEPLOYER_BUILDX). Run the "
            "action's image, or install the docker-buildx CLI plugin, or set DEPLOYER_BUILDX "
            "to the buildx binary's absolute path"
        )


def _announce_builder(
    config: Config, io: ActionsIO, reasons: list[str], builder: str | None, push: bool
) -> str:
    """Say which builder runs this build and why; return its description for the summary."""
    if builder:
        description = f"a docker-container builder for this run ({config.buildkit_image})"
        io.info(f"Builder: {description}, because of {'; '.join(reasons)}")
        if not push and len(config.platforms) > 1:
            io.warning(
                "Several platforms are built but not pushed: the engine cannot hold an "
                "image index, so the result is only checked, not kept"
            )
        return description
    description = "the engine's own BuildKit (buildx docker driver)"
    io.info(f"Builder: {description}; nothing in this build needs more")
    return description


@dataclass
class _Attempts:
    """Runs the buildx command, once or (pushing) under the registry retry budget."""

    config: Config
    io: ActionsIO
    argv: list[str]
    env: dict[str, str]
    metadata: Path
    push: bool
    count: int = 0
    push_seconds: float = 0.0

    def once(self) -> str:
        self.count += 1
        again = f" (attempt {self.count})" if self.count > 1 else ""
        title = f"Build log: {self.config.tag_references[0]}{again}"
        with self.io.group(title), self.io.untrusted() as log:
            run = buildx.run_buildx(self.argv, self.env, self.io, log, cwd=self.config.workspace)
        if run.code != 0:
            raise _failure(self.config, run)
        self.push_seconds = run.push_seconds or 0.0
        return _metadata_digest(self.metadata, self.push)


def build_image(
    config: Config,
    engine: Any,
    io: ActionsIO,
    *,
    push: bool,
    sleep: Callable[[float], None] | None = None,
) -> BuildResult:
    """Build ``config.context`` with BuildKit; push every tag when ``push``."""
    _require_buildx(config)
    references = config.tag_references
    reasons = builder_reasons(config, getattr(engine, "api_version", None))
    started = time.monotonic()
    with buildx.private_workdir(config) as workdir:
        env = workdir.env(config)
        dockerfile = context_dockerfile(config, workdir.path, io)
        check_named_contexts(config)
        builder = buildx.new_builder_name() if reasons else None
        try:
            description = _announce_builder(config, io, reasons, builder, push)
            if builder:
                _create_builder(config, workdir, env, builder, io)
            argv, arg_env = build_argv(
                config, workdir, dockerfile, builder=builder, push=push, reserved_env=set(env)
            )
            where = f"{references[0]} (context {_relative(config.context, config)}, " + (
                f"{_relative(config.dockerfile, config)})"
            )
            io.info(f"Building {where} ...")
            attempts = _Attempts(config, io, argv, {**env, **arg_env}, workdir.metadata, push)
            if push:
                digest = with_retries(config, io, f"pushing {references[0]}", attempts.once, sleep)
            else:
                digest = attempts.once()
            image_id = _metadata(workdir.metadata).get("containerimage.config.digest", "")
        finally:
            if builder:
                _remove_builder(engine, builder, io)
    duration = time.monotonic() - started
    image_id = image_id if isinstance(image_id, str) and _DIGEST_RE.match(image_id) else ""
    done = "built and pushed" if push else "built"
    io.info(f"{references[0]} {done} in {duration:.1f} s" + (f": {digest}" if digest else ""))
    return BuildResult(
        image_id=image_id,
        references=tuple(references),
        duration=duration,
        digest=digest,
        builder=description,
        push_seconds=attempts.push_seconds,
    )


def _relative(path: Path, config: Config) -> str:
    try:
        return path.relative_to(config.workspace).as_posix() or "."
    except ValueError:
        return str(path)


def _metadata(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _metadata_digest(path: Path, pushed: bool) -> str:
    digest = _metadata(path).get("containerimage.digest", "")
    if not pushed:
        return ""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise PushError("BuildKit finished the push but reported no digest (metadata file)")
    return digest


def _create_builder(
    config: Config, workdir: buildx.Workdir, env: dict[str, str], name: str, io: ActionsIO
) -> None:
    assert config.buildx is not None
    registries = {config.image.registry} | cache_ref_registries(config.cache_from + config.cache_to)
    argv = [
        config.buildx,
        "create",
        f"--name={name}",
        "--driver=docker-container",
        "--driver-opt=network=host",  # loopback registries (and the job's) stay reachable
        f"--driver-opt=image={config.buildkit_image}",
    ]
    settings = workdir.buildkitd_config(registries)
    if settings is not None:
        argv.append(f"--buildkitd-config={settings}")
    argv.append("--bootstrap")
    with io.group(f"Builder {name}"), io.untrusted() as log:
        run = buildx.run_buildx(argv, env, io, log, cwd=config.workspace)
    if run.code != 0:
        raise EngineError(
            f"Creating the docker-container builder failed: "
            f"{run.log.error or f'buildx exited with code {run.code}'}",
            details=run.log.details(),
        )


def _remove_builder(engine: Any, name: str, io: ActionsIO) -> None:
    problems = buildx.remove_builder(engine, name)
    if problems:
        io.warning(f"Could not remove builder {name}: {'; '.join(problems)}")
    else:
        io.info(f"Removed builder {name}")
