"""Running buildx: its private files, its builder, its log.

Everything a build needs that must not be on the command line lives in one
private temporary directory (mode 0700) made per run and removed at the end:
the docker config with the registry login (``DOCKER_CONFIG``, which buildx reads
for the push and for pulling a private base image), the build secrets (one file
each, passed as ``--secret id=…,src=…``: ``secrets``, ``secret-envs`` and copies of
``secret-files``), copies of the SSH keys (``--ssh id=…``), the buildkitd config and
the metadata file. buildx's own state (the builder's record) lives there too, so a run never
touches the runner's ``~/.docker``.

The log is read in bounded chunks and split in linear time: a line longer than
:data:`MAX_LINE` bytes is cut (the rest counted, not kept), so 16 MiB without a
newline costs 16 MiB of reading and :data:`MAX_LINE` of memory.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deployer.actions import ActionsIO, UntrustedLog
from deployer.config import DOCKER_HUB, Config
from deployer.errors import BuildError, EngineError

__all__ = [
    "MAX_LINE",
    "PUSH_STEPS",
    "BuildxRun",
    "EngineAPI",
    "LineSplitter",
    "ProgressLog",
    "Workdir",
    "remove_builder",
    "run_buildx",
]

MAX_LINE = 8192  # bytes of one log line that are kept
READ_CHUNK = 64 * 1024
IDLE_TIMEOUT = 900.0  # seconds without a byte from buildx (a long silent RUN step)
STOP_GRACE = 3.0  # seconds buildx gets to end after SIGINT before it is killed
TAIL = 30
DETAIL_LINE = 500  # characters of each log line in an error's details
# Vertices of the export/push phase (their failure is a registry's, worth a retry).
PUSH_STEPS = ("pushing", "exporting to", "exporting manifest", "exporting cache")
_MAX_VERTICES = 2000
_HUB_AUTH_KEY = "https://index.docker.io/v1/"
# buildx would run `git` in the context to label the image: never run what the repo configures.
_BUILDX_ENV = {
    "BUILDX_GIT_INFO": "0",
    "BUILDX_GIT_LABELS": "0",
    "BUILDX_METADATA_PROVENANCE": "disabled",
    "BUILDX_METADATA_WARNINGS": "0",
    "DOCKER_CLI_HINTS": "false",
}
_PASS_THROUGH = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "TMPDIR",
)


class EngineAPI(Protocol):
    """The part of ``docker.APIClient`` the build stage uses to remove a builder."""

    def remove_container(self, container: str, **kwargs: Any) -> None: ...

    def remove_volume(self, name: str, **kwargs: Any) -> None: ...


class LineSplitter:
    """Bytes in, whole lines out; each line capped at ``limit`` bytes, linear time."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._limit = limit
        self._pending = bytearray()
        self._dropped = 0

    def _keep(self, part: bytes | memoryview) -> None:
        room = self._limit - len(self._pending)
        if room > 0:
            self._pending += part[:room]
        self._dropped += max(0, len(part) - max(room, 0))

    def _take(self) -> str:
        text = self._pending.decode("utf-8", "replace")
        if self._dropped:
            text += f" [... {self._dropped} more bytes of this line not shown]"
        self._pending = bytearray()
        self._dropped = 0
        return text

    def feed(self, data: bytes) -> list[str]:
        lines = []
        view = memoryview(data)
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._keep(view[start:end])
            lines.append(self._take())
            start = end + 1
        self._keep(view[start:])
        return lines

    def flush(self) -> list[str]:
        return [self._take()] if self._pending or self._dropped else []


# buildx --progress=plain: "#5 [stage-0 2/3] RUN …" names vertex 5 the first time it
# appears; a step's own output is "#5 0.123 text", so it cannot forge a vertex line.
_VERTEX_RE = re.compile(r"^#(\d{1,6}) (.+)$")
_VERTEX_ERROR_RE = re.compile(r"^#(\d{1,6}) ERROR: (.*)$")
_FINAL_ERROR_RE = re.compile(r"^ERROR: (.*)$")
_NOT_A_NAME_RE = re.compile(r"^(?:\d+\.\d+ |DONE |CACHED$|ERROR|CANCELED|sha256:|\.\.\.)")
# What may be shown as the failing step: a Dockerfile step or BuildKit's own bracketed
# vertex ("[2/3] RUN …", "[stage-0 2/3] COPY …", "[internal] load metadata for …"),
# or an export/push vertex, whose name is image references only.
_STEP_NAME_RE = re.compile(
    r"^(?:\[[^\[\]]{1,100}\] \S.*"
    r"|(?:pushing|exporting to|exporting manifest|exporting cache)[\w .,:/@+=-]*)$"
)


@dataclass
class ProgressLog:
    """What the plain progress said: vertex names, the failing step, the last lines."""

    names: dict[str, str] = field(default_factory=dict)
    tails: collections.OrderedDict[str, collections.deque[str]] = field(
        default_factory=collections.OrderedDict
    )
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL))
    steps: dict[str, str] = field(default_factory=dict)  # vertex -> genuine step line
    failed_vertex: str = ""
    failed_step: str = ""  # the failing vertex's step line, when one came before its ERROR
    vertex_error: str = ""
    error: str = ""
    push_started: float | None = None  # time.monotonic() when the export/push phase began

    def add(self, line: str) -> None:
        if line.strip():
            self.tail.append(line.rstrip())
        final = _FINAL_ERROR_RE.match(line)
        if final:
            self.error = self.error or final.group(1).strip()
            return
        failed = _VERTEX_ERROR_RE.match(line)
        if failed and not self.failed_vertex:
            self.failed_vertex, self.vertex_error = failed.group(1), failed.group(2).strip()
            self.failed_step = self.steps.get(self.failed_vertex, "")
        match = _VERTEX_RE.match(line)
        if not match:
            return
        vertex, rest = match.groups()
        new = vertex not in self.names and len(self.names) < _MAX_VERTICES
        if new and not _NOT_A_NAME_RE.match(rest):
            self.names[vertex] = rest[:300]
            if _STEP_NAME_RE.match(rest):
                self.steps[vertex] = rest[:300]
            if self.push_started is None and rest.startswith(PUSH_STEPS):
                self.push_started = time.monotonic()
        tail = self.tails.get(vertex)
        if tail is None:
            tail = self.tails[vertex] = collections.deque(maxlen=TAIL)
            if len(self.tails) > 64:
                self.tails.popitem(last=False)
        tail.append(line.rstrip())

    def details(self) -> str:
        """The failing step's last lines, else the log's."""
        lines = list(self.tails.get(self.failed_vertex, ())) or list(self.tail)
        if self.error and all(self.error not in line for line in lines):
            lines.append(f"ERROR: {self.error}")
        # a few KiB whatever the build printed: this goes to the job summary (1 MiB limit)
        return "\n".join(line[:DETAIL_LINE] for line in lines)


@dataclass
class BuildxRun:
    """One finished buildx process."""

    code: int
    log: ProgressLog
    seconds: float
    push_seconds: float | None = None  # of the export/push phase, when it began


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End buildx (and anything it started in its session): SIGINT, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_GRACE)


def run_buildx(
    argv: list[str],
    env: Mapping[str, str],
    io: ActionsIO,
    log: UntrustedLog,
    *,
    cwd: Path,
    idle_timeout: float = IDLE_TIMEOUT,
) -> BuildxRun:
    """Run buildx, print its output inertly as it comes, and keep what the report needs.

    buildx runs in its own session, so the runner's SIGINT reaches only us; a
    Cancelled raised by our signal handler ends buildx before it propagates.
    """
    started = time.monotonic()
    progress = ProgressLog()
    splitter = LineSplitter()
    try:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        raise EngineError(f"Cannot run buildx ({argv[0]}): {e.strerror}") from None
    assert process.stdout is not None
    fd = process.stdout.fileno()
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], idle_timeout)
            if not ready:
                raise BuildError(
                    f"buildx printed nothing for {idle_timeout:.0f} s; stopped it. A build step "
                    "that is silent for that long should print progress"
                )
            data = os.read(fd, READ_CHUNK)
            if not data:
                break
            for line in splitter.feed(data):
                progress.add(line)
                log.write(line)
        for line in splitter.flush():
            progress.add(line)
            log.write(line)
        code = process.wait(STOP_GRACE * 10)
    finally:
        _stop(process)
        process.stdout.close()
    ended = time.monotonic()
    pushing = ended - progress.push_started if progress.push_started is not None else None
    return BuildxRun(code, progress, ended - started, pushing)


def _auth_key(registry: str) -> str:
    return _HUB_AUTH_KEY if registry == DOCKER_HUB else registry


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in ("localhost", "[::1]") or name.startswith("127.")


class Workdir:
    """The run's private directory: docker config, secrets, buildkitd config, metadata."""

    def __init__(self, config: Config) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="deployer-buildx-"))  # mode 0700
        try:
            self._fill(config)
        except BaseException:
            self.remove()
            raise

    def _fill(self, config: Config) -> None:
        self.docker_config = self.path / "docker"
        self.docker_config.mkdir(mode=0o700)
        self.metadata = self.path / "metadata.json"
        self.secret_files: dict[str, Path] = {}
        self.ssh_keys: dict[str, list[Path]] = {}
        auths: dict[str, Any] = {}
        if config.registry_username and config.registry_password:
            pair = f"{config.registry_username}:{config.registry_password.get_secret_value()}"
            auths[_auth_key(config.registry)] = {"auth": base64.b64encode(pair.encode()).decode()}
        self._private(self.docker_config / "config.json", json.dumps({"auths": auths}))
        values = {k: v.get_secret_value().encode() for k, v in config.build_secrets.items()}
        values.update({k: v.get_secret_value() for k, v in config.secret_files.items()})
        if values:
            folder = self.path / "secrets"
            folder.mkdir(mode=0o700)
            for number, (name, value) in enumerate(values.items()):
                path = folder / f"s{number}"
                self._private(path, value)
                self.secret_files[name] = path
        if any(forward.keys for forward in config.ssh):
            folder = self.path / "ssh"
            folder.mkdir(mode=0o700)
            for number, forward in enumerate(config.ssh):
                for key_number, key in enumerate(forward.keys):
                    path = folder / f"k{number}-{key_number}"
                    self._private(path, key.get_secret_value())
                    self.ssh_keys.setdefault(forward.id, []).append(path)

    @staticmethod
    def _private(path: Path, data: str | bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)

    def buildkitd_config(self, registries: set[str]) -> Path | None:
        """A buildkitd.toml marking loopback registries plain HTTP, or None if there are none."""
        loopback = sorted(r for r in registries if _loopback(r))
        if not loopback:
            return None
        path = self.path / "buildkitd.toml"
        lines = []
        for registry in loopback:
            lines += [f'[registry."{registry}"]', "  http = true", "  insecure = true", ""]
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    def env(self, config: Config, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """buildx's whole environment: nothing of ours it does not need."""
        source = host_env if host_env is not None else os.environ
        env = {name: source[name] for name in _PASS_THROUGH if source.get(name)}
        env.update(_BUILDX_ENV)
        env.update(
            {
                "PATH": config.path_env or os.defpath,
                "HOME": str(self.path),
                "DOCKER_CONFIG": str(self.docker_config),
                "DOCKER_HOST": config.docker_host or "unix:///var/run/docker.sock",
            }
        )
        if not config.wants_attestations:
            env["BUILDX_NO_DEFAULT_ATTESTATIONS"] = "1"
        env.update({name: value.get_secret_value() for name, value in config.gha_env.items()})
        return env

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def new_builder_name() -> str:
    return f"deployer-{secrets.token_hex(6)}"


def remove_builder(engine: EngineAPI, name: str) -> list[str]:
    """Remove a docker-container builder's container and state volume; return what failed.

    Done through the engine, not ``buildx rm``: it must also work while cancelling,
    within the runner's few seconds, and whatever state buildx was left in.
    """
    node = f"buildx_buildkit_{name}0"
    problems = []
    calls: tuple[tuple[str, Callable[[], None]], ...] = (
        ("container", lambda: engine.remove_container(node, force=True, v=True)),
        ("volume", lambda: engine.remove_volume(f"{node}_state", force=True)),
    )
    for what, call in calls:
        try:
            call()
        except Exception as e:  # docker.errors.NotFound: never made, or already gone
            if getattr(getattr(e, "response", None), "status_code", None) != 404:
                problems.append(f"{what} {node}: {e}")
    return problems


@contextlib.contextmanager
def private_workdir(config: Config) -> Iterator[Workdir]:
    workdir = Workdir(config)
    try:
        yield workdir
    finally:
        workdir.remove()
