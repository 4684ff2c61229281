"""build-push-action's further build inputs: named contexts, SSH, secret files and
variables, annotations and no-cache filters.

Each parser takes one input's text (and what it needs of the job) and returns what
buildx is to be given, or raises ValueError saying what is wrong; a message never
quotes a secret. :mod:`deployer.config` calls them and collects the problems.

Trust: the input values come from the workflow author, but the files they name lie in
the checked-out tree, which a pull request controls. So a file named by
``secret-files`` or ``ssh`` is read here, once, like a manifest: a regular file that,
every link followed, lies inside the workspace or the runner's temporary directory,
size-capped. buildx then gets a private copy (:mod:`deployer.buildx`): what it reads is
what was checked, and ``secret-files: npmrc=.npmrc`` linking to ``~/.docker/config.json``
or ``/proc/self/environ`` is an input error, not a leak into a Dockerfile's ``RUN``.
Only ``SSH_AUTH_SOCK`` (job environment, trusted) names a socket to forward.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr

from deployer.manifests import read_inside

__all__ = [
    "MAX_SECRET_BYTES",
    "NamedContext",
    "SshForward",
    "file_roots",
    "parse_annotations",
    "parse_build_contexts",
    "parse_no_cache_filters",
    "parse_secret_envs",
    "parse_secret_files",
    "parse_ssh",
]

# BuildKit refuses a secret over 500 KiB (session/secrets/secretsprovider: MaxSecretSize).
MAX_SECRET_BYTES = 500 * 1024
MAX_KEY_BYTES = 64 * 1024  # an SSH private key is a few KiB
MAX_LINES = 64  # entries of one input
MAX_ANNOTATION = 4096  # characters of one annotation line
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")  # a secret or SSH id
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A named context's name: what FROM or COPY --from=… says, an image reference included.
_CONTEXT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")
_ANNOTATION_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_LEVEL_RE = re.compile(r"^(manifest|index|manifest-descriptor|index-descriptor)(?:\[([^\]]+)\])?$")
_PLATFORM_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_.]+)?$")
_REMOTE_SCHEMES = ("https://", "http://", "git@", "ssh://", "git://")
_USERINFO_RE = re.compile(r"^[a-z]+://[^/@]*@")
_WHERE = "the workspace or the runner's temporary directory"


class NamedContext(BaseModel):
    """One ``build-contexts`` entry: ``--build-context=<name>=<source>``."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: str  # what buildx gets after "name=": an absolute path or a URL
    directory: Path | None = None  # a local directory, inside the workspace


class SshForward(BaseModel):
    """One ``ssh`` entry: the agent's socket, or private copies of key files."""

    model_config = ConfigDict(frozen=True)

    id: str
    agent: str | None = None  # the socket SSH_AUTH_SOCK names
    keys: tuple[SecretBytes, ...] = ()
    key_paths: tuple[Path, ...] = ()  # where the keys were read (left out of the context)


def file_roots(workspace: Path, env: Mapping[str, str]) -> list[Path]:
    """Where ``secret-files`` and ``ssh`` keys may lie: the workspace and RUNNER_TEMP."""
    roots = [workspace]
    temp = env.get("RUNNER_TEMP", "").strip()
    if temp and Path(temp).is_absolute() and Path(temp).is_dir():
        roots.append(Path(temp).resolve())
    return roots


def _lines(text: str) -> list[tuple[int, str]]:
    """Numbered non-empty lines (``#`` starts a comment line), at most MAX_LINES."""
    found = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if len(found) > MAX_LINES:
        raise ValueError(f"has {len(found)} entries; at most {MAX_LINES}")
    return found


def _shown(text: str, limit: int = 60) -> str:
    return _USERINFO_RE.sub("***@", text)[:limit]


def _read_file(path_text: str, roots: Sequence[Path], limit: int) -> tuple[bytes, Path]:
    """The bytes of the file ``path_text`` names (relative to the workspace), and its path."""
    if "\0" in path_text:
        raise ValueError("a path contains a NUL character")
    path = Path(path_text)
    path = path if path.is_absolute() else roots[0] / path
    shown = _shown(path_text)
    try:
        data = read_inside(path, roots, shown, limit, _WHERE)
    except FileNotFoundError:
        hint = (
            ""
            if not Path(path_text).is_absolute() or _under(path, roots[0])
            else ": a container action sees only the workspace of the runner's machine, so "
            "write the file into the workspace (it is left out of the build context)"
        )
        raise ValueError(f"'{shown}' does not exist{hint}") from None
    except IsADirectoryError:  # os.fdopen refuses a directory before read_inside's fstat
        raise ValueError(f"'{shown}' is not a regular file") from None
    except OSError as e:
        raise ValueError(f"'{shown}' cannot be read: {e.strerror}") from None
    return data, path.resolve()


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def parse_no_cache_filters(text: str) -> tuple[str, ...]:
    """``no-cache-filters``: build stages to run without the cache, comma or newline separated."""
    stages = [s.strip() for s in re.split(r"[,\n]", text) if s.strip()]
    for stage in stages:
        if not _STAGE_RE.match(stage):
            raise ValueError(f"'{_shown(stage)}' is not a build stage name")
    return tuple(dict.fromkeys(stages))


def parse_annotations(text: str, *, index: bool) -> tuple[str, ...]:
    """``annotations``: ``[LEVELS:]KEY=VALUE`` lines → buildx ``--annotation`` values.

    A line without levels annotates the image manifest, and the index too when the
    build makes one (``index``: several platforms, or attestations), so that registries
    that show an index's annotations (GHCR's description) show them. Levels are
    buildx's: ``manifest``, ``index``, ``manifest-descriptor``, each with an optional
    ``[os/arch]``; ``index-descriptor`` exists only in an OCI layout, which is not pushed.
    """
    found: list[str] = []
    for number, line in _lines(text):
        if len(line) > MAX_ANNOTATION:
            raise ValueError(f"line {number} is longer than {MAX_ANNOTATION} characters")
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number} has no '='; write KEY=VALUE, one per line")
        levels_text, colon, key = key.strip().rpartition(":")
        if not _ANNOTATION_KEY_RE.match(key):
            raise ValueError(f"line {number} has an invalid key '{_shown(key)}'")
        levels = _levels(number, levels_text, index) if colon else None
        if levels is None:
            levels = "manifest,index" if index else "manifest"
        found.append(f"{levels}:{key}={value}")
    return tuple(found)


def _levels(number: int, text: str, index: bool) -> str:
    """The levels before an annotation's key, checked against what the build makes."""
    levels = [part.strip() for part in re.split(r",(?![^\[]*\])", text)]
    for level in levels:
        match = _LEVEL_RE.match(level)
        if not match:
            raise ValueError(
                f"line {number} has the level '{_shown(level, 40)}'; use manifest, index or "
                "manifest-descriptor (optionally with [os/arch]), comma separated"
            )
        kind, platform = match.groups()
        if platform and not _PLATFORM_RE.match(platform):
            raise ValueError(f"line {number}: '{_shown(platform, 40)}' is not os/arch[/variant]")
        if kind == "index-descriptor":
            raise ValueError(
                f"line {number}: index-descriptor annotates an OCI layout's index, which "
                "this action does not make; use index"
            )
        if kind in ("index", "manifest-descriptor") and not index:
            raise ValueError(
                f"line {number} annotates the image index, but this build makes a single "
                "manifest (an index comes with several platforms or with provenance/sbom); "
                "use manifest"
            )
    return ",".join(levels)


def parse_secret_envs(text: str, env: Mapping[str, str]) -> dict[str, SecretStr]:
    """``secret-envs``: ``ID=ENVVAR`` lines; each value is read from the step's environment.

    The runner hands a container action the job's and the step's ``env:``. The value
    goes to BuildKit as a private file, like ``secrets``: buildx's own environment never
    takes a variable an input names (``id=DOCKER_HOST`` reconfigures nothing).
    """
    found: dict[str, SecretStr] = {}
    for number, line in _lines(text):
        secret_id, sep, name = (part.strip() for part in line.partition("="))
        if not sep or not _ID_RE.match(secret_id) or not _ENV_NAME_RE.match(name):
            raise ValueError(
                f"line {number} is not ID=ENVVAR (an id of letters, digits, '_', '.', '-'; "
                "an environment variable name)"
            )
        if secret_id in found:
            raise ValueError(f"line {number} repeats the id '{secret_id}'")
        value = env.get(name, "")
        if not value:
            raise ValueError(
                f"line {number}: {name} is not set in this step's environment; add "
                f"`env: {name}: ${{{{ secrets.{name} }}}}` to the step"
            )
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise ValueError(f"line {number}: {name} is larger than BuildKit's 500 KiB")
        found[secret_id] = SecretStr(value)
    return found


def parse_secret_files(
    text: str, roots: Sequence[Path]
) -> tuple[dict[str, SecretBytes], tuple[Path, ...]]:
    """``secret-files``: ``ID=PATH`` lines → each file's bytes, and where they were read."""
    found: dict[str, SecretBytes] = {}
    paths: list[Path] = []
    for number, line in _lines(text):
        secret_id, sep, path_text = (part.strip() for part in line.partition("="))
        if not sep or not _ID_RE.match(secret_id) or not path_text:
            raise ValueError(
                f"line {number} is not ID=PATH (an id of letters, digits, '_', '.', '-')"
            )
        if secret_id in found:
            raise ValueError(f"line {number} repeats the id '{secret_id}'")
        try:
            data, real = _read_file(path_text, roots, MAX_SECRET_BYTES)
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
        found[secret_id] = SecretBytes(data)
        paths.append(real)
    return found, tuple(paths)


def parse_ssh(text: str, env: Mapping[str, str], roots: Sequence[Path]) -> tuple[SshForward, ...]:
    """``ssh``: ``default``, ``ID`` (the agent at SSH_AUTH_SOCK) or ``ID=KEYFILE[,KEYFILE]``.

    ``ID=<the SSH_AUTH_SOCK path>`` (docker's documented
    ``default=${{ env.SSH_AUTH_SOCK }}``) is the agent too. Key files are read like
    secret files; no other socket is forwarded: a link in the checked-out tree to
    ``/var/run/docker.sock`` must not reach a ``RUN --mount=type=ssh``.
    """
    found: dict[str, SshForward] = {}
    for number, line in _lines(text):
        ssh_id, sep, paths_text = (part.strip() for part in line.partition("="))
        if not _ID_RE.match(ssh_id) or (sep and not paths_text):
            raise ValueError(
                f"line {number} is not default, ID or ID=KEYFILE[,KEYFILE] "
                "(an id of letters, digits, '_', '.', '-')"
            )
        if ssh_id in found:
            raise ValueError(f"line {number} repeats the id '{ssh_id}'")
        agent = env.get("SSH_AUTH_SOCK", "").strip()
        if not sep or paths_text == agent:
            found[ssh_id] = SshForward(id=ssh_id, agent=_agent_socket(number, agent))
            continue
        keys, key_paths = [], []
        for path_text in (p.strip() for p in paths_text.split(",")):
            try:
                data, real = _read_file(path_text, roots, MAX_KEY_BYTES)
            except ValueError as e:
                raise ValueError(f"line {number}: {e}") from None
            keys.append(SecretBytes(data))
            key_paths.append(real)
        found[ssh_id] = SshForward(id=ssh_id, keys=tuple(keys), key_paths=tuple(key_paths))
    return tuple(found.values())


def _agent_socket(number: int, path: str) -> str:
    """SSH_AUTH_SOCK, checked to be a socket this process can reach."""
    if not path:
        raise ValueError(
            f"line {number} asks for the SSH agent, but SSH_AUTH_SOCK is not set: start an "
            "agent in an earlier step (webfactory/ssh-agent), or give a key file, ID=PATH"
        )
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except (OSError, ValueError):
        is_socket = False
    if not is_socket:
        raise ValueError(
            f"line {number} asks for the SSH agent, but SSH_AUTH_SOCK ('{_shown(path)}') is "
            "not a socket this action can reach: a container action sees only the workspace "
            "of the runner's machine, so start the agent with its socket there "
            "(webfactory/ssh-agent: `ssh-auth-sock: ${{ github.workspace }}/.ssh-agent.sock`)"
        )
    return path


def parse_build_contexts(text: str, workspace: Path) -> tuple[NamedContext, ...]:
    """``build-contexts``: ``NAME=SOURCE`` lines, as buildx's ``--build-context``.

    SOURCE is a directory inside the workspace (relative to it), ``docker-image://REF``,
    ``oci-layout://DIR[:TAG|@DIGEST]`` with DIR inside the workspace, or a Git or HTTPS
    URL without credentials in it (a URL's password would be in buildx's argv and log).
    """
    found: dict[str, NamedContext] = {}
    for number, line in _lines(text):
        name, sep, source = (part.strip() for part in line.partition("="))
        if not sep or not _CONTEXT_NAME_RE.match(name) or not source:
            raise ValueError(
                f"line {number} is not NAME=SOURCE (a name as FROM or COPY --from= says it)"
            )
        if name in found:
            raise ValueError(f"line {number} repeats the name '{_shown(name)}'")
        if any(c.isspace() or ord(c) < 32 for c in source) or len(source) > 2000:
            raise ValueError(f"line {number} has white space or control characters in its source")
        try:
            found[name] = _named_context(name, source, workspace)
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
    return tuple(found.values())


def _named_context(name: str, source: str, workspace: Path) -> NamedContext:
    if source.startswith("docker-image://"):
        return NamedContext(name=name, source=source)
    if source.startswith(_REMOTE_SCHEMES):
        if _USERINFO_RE.match(source) or re.match(r"^[a-z]+://[^/]*:[^/]*@", source):
            raise ValueError(
                f"'{_shown(source)}' has credentials in its URL; a Git context authenticates "
                "with the ssh input, not with a password in the URL"
            )
        return NamedContext(name=name, source=source)
    layout = source.startswith("oci-layout://")
    path_text = source.removeprefix("oci-layout://") if layout else source
    if layout:  # oci-layout://DIR[:TAG|@DIGEST]
        path_text = re.sub(r"(?:@sha256:[0-9a-f]{64}|:[\w][\w.-]{0,127})$", "", path_text)
    if "://" in path_text:
        raise ValueError(f"'{_shown(source)}' has a source type buildx does not know")
    try:
        directory = (workspace / path_text).resolve()
    except (OSError, RuntimeError, ValueError):
        raise ValueError(f"'{_shown(source)}' cannot be resolved") from None
    if not _under(directory, workspace):
        raise ValueError(f"'{_shown(source)}' lies outside the workspace")
    if not directory.is_dir():
        raise ValueError(f"'{_shown(source)}' is not a directory in the workspace")
    rest = source[len("oci-layout://") + len(path_text) :] if layout else ""
    shown = f"oci-layout://{directory}{rest}" if layout else str(directory)
    return NamedContext(name=name, source=shown, directory=None if layout else directory)
