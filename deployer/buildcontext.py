"""What the build context must not send: credential files the job left in the workspace.

buildx sends the context directory to BuildKit, and a ``COPY . .`` bakes whatever it
holds into the pushed image. The usual steps before ours leave credentials there:

- ``actions/checkout`` without ``persist-credentials: false``: the token as an
  ``http.…extraheader`` in ``.git/config``, and with ``submodules: true`` in
  ``.git/modules/<name>/config`` too (then all of ``.git`` is left out);
- ``google-github-actions/auth``: ``gha-creds-*.json``; ``get-gke-credentials``:
  ``gha-kubeconfig-*``;
- the files ``GOOGLE_APPLICATION_CREDENTIALS``, ``AWS_WEB_IDENTITY_TOKEN_FILE``,
  ``AZURE_FEDERATED_TOKEN_FILE`` and ``KUBECONFIG`` name, when they lie in the context.

Those not already excluded by the user's ignore file are left out through a copy
of the Dockerfile with ``<Dockerfile>.dockerignore`` beside it (which BuildKit
prefers over the context's ``.dockerignore``): the user's patterns, then ours. The
build still runs; the log says what was left out.

The ignore file comes from the checked-out tree, so it is read like a manifest:
a regular file inside the workspace, opened without following a last link, capped
(:func:`deployer.manifests.read_inside`). A ``.dockerignore`` linking to
``/proc/self/environ`` would otherwise copy our environment into what BuildKit
(and a Dockerfile frontend of the pull request's choosing) receives.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from deployer.actions import ActionsIO
from deployer.buildfrontend import check_frontend
from deployer.config import Config
from deployer.errors import BuildError
from deployer.manifests import read_inside

__all__ = [
    "Excluded",
    "check_named_contexts",
    "context_dockerfile",
    "credential_files",
    "job_credential_file",
]

MAX_IGNORE_FILE = 1 << 20
MAX_GIT_CONFIG = 1 << 20
_MAX_GIT_CONFIGS = 200  # submodules' git configs looked at (nested ones included)
# A checkout token (``extraheader``) or a URL with a password (``insteadOf`` rules).
_GIT_CREDENTIAL = re.compile(r"extraheader|://[^/@\s:]+:[^/@\s]+@", re.IGNORECASE)
# Names the auth actions give the files they write into the workspace.
_CREDENTIAL_NAMES = ("gha-creds-*.json", "gha-kubeconfig-*")
_CREDENTIAL_VARIABLES = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
)
# The runner's directories (under RUNNER_TEMP) holding what earlier steps exported (a
# secret written to GITHUB_ENV) and the container's HOME (docker logins, tool configs).
_RUNNER_DIRS = {"_runner_file_commands", "_github_home"}
_GIT_WARNING = (
    "The build context holds a git config with a credential (actions/checkout without "
    "persist-credentials: false writes the token into .git/config, and into "
    ".git/modules/*/config with submodules): all of .git was left out of the build "
    "context. Add `.git` to .dockerignore, or check out with `persist-credentials: false`"
)


@dataclass(frozen=True)
class Excluded:
    """A path of the context (relative, POSIX) left out of the build, and why."""

    path: str
    why: str


def _git_configs(git: Path) -> list[Path]:
    """``.git/config`` and every submodule's ``.git/modules/**/config``, bounded."""
    found = [git / "config"]
    modules = git / "modules"
    if not modules.is_dir() or modules.is_symlink():
        return found
    for top, dirs, files in os.walk(modules):  # links to directories are not entered
        if "config" in files:
            found.append(Path(top) / "config")
        if len(found) >= _MAX_GIT_CONFIGS:
            break
        dirs[:] = [d for d in dirs if d not in ("objects", "refs", "logs", "hooks", "lfs")]
    return found


def _git_holds_credentials(context: Path, workspace: Path) -> bool:
    """Whether any git config in ``context/.git`` holds a credential.

    A config that links outside the workspace is not read (nor anything it names).
    """
    for path in _git_configs(context / ".git"):
        try:
            data = read_inside(path, [workspace], path.name, MAX_GIT_CONFIG)
        except (OSError, ValueError):
            continue
        if _GIT_CREDENTIAL.search(data.decode("utf-8", "replace")):
            return True
    return False


def credential_files(config: Config, context: Path | None = None) -> list[Excluded]:
    """The credential files of the job that lie in ``context`` (default: the build context)."""
    context = context or config.context
    found: list[Excluded] = []
    if _git_holds_credentials(context, config.workspace):
        found.append(Excluded(".git", "a credential in a git config"))
    for pattern in _CREDENTIAL_NAMES:
        for path in sorted(context.glob(pattern)):
            found.append(Excluded(path.name, "written by a Google auth action"))
    for variable, value in _named_paths(config):
        path = Path(value) if Path(value).is_absolute() else config.workspace / value
        try:
            relative = path.resolve().relative_to(context)
        except (OSError, RuntimeError, ValueError):
            continue  # outside the context (or unresolvable): not sent
        shown = relative.as_posix()
        if shown != "." and path.exists() and shown not in [e.path for e in found]:
            found.append(Excluded(shown, f"named by {variable}"))
    return found


def _named_paths(config: Config) -> list[tuple[str, str]]:
    """(who names it, path) of every credential file the job's environment or inputs name."""
    named = [(v, config.cloud_env.get(v, "")) for v in _CREDENTIAL_VARIABLES]
    named += [("KUBECONFIG", p) for p in (config.kubeconfig_path or "").split(":")]
    named += [("the secret-files or ssh input", str(p)) for p in config.credential_paths]
    return [(who, value) for who, value in named if value]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()  # links followed
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def job_credential_file(config: Config, path: Path) -> str | None:
    """Why ``path`` (links followed) is one of the job's credential files; None if it is not.

    Anything inside a ``.git`` directory (actions/checkout keeps its token in
    ``.git/config`` and ``.git/modules/*/config``), the files the Google auth actions
    write, the runner's file-command and home directories (what earlier steps
    exported, docker logins), and the files the job's environment or inputs name.
    """
    try:
        real = path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if ".git" in real.parts or ".git" in path.parts:
        return "inside .git: actions/checkout keeps its token there"
    if any(real.match(pattern) for pattern in _CREDENTIAL_NAMES):
        return "written by a Google auth action"
    if _RUNNER_DIRS & set(real.parts):
        return "in the runner's file-command or home directory"
    identity = _identity(real)
    for who, value in _named_paths(config):
        named = Path(value) if Path(value).is_absolute() else config.workspace / value
        if identity is not None and _identity(named) == identity:
            return f"named by {who}"
    return None


def _ignore_text(config: Config) -> str:
    """The ignore file BuildKit would use: ``<Dockerfile>.dockerignore``, else the context's.

    Raises BuildError when it is not a regular file inside the workspace.
    """
    own = Path(f"{config.dockerfile}.dockerignore")
    candidates = [(own, own.name), (config.context / ".dockerignore", ".dockerignore")]
    return _read_ignore_file(candidates, config.workspace)


def _read_ignore_file(candidates: list[tuple[Path, str]], workspace: Path) -> str:
    """The first of ``candidates`` (path, name shown) that exists, as text; "" if none."""
    for path, shown in candidates:
        try:
            data = read_inside(path, [workspace], shown, MAX_IGNORE_FILE)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise BuildError(
                f"The build's ignore file cannot be used: {e}. It must be a regular file "
                "inside the workspace"
            ) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BuildError(f"The build's ignore file '{shown}' is not UTF-8 text") from None
    return ""


def _excluded_already(patterns: list[str], path: str, *, directory: bool) -> bool:
    """Whether the ignore patterns leave ``path`` (or a parent of it) out.

    As .dockerignore is read: the last pattern matching the path or a parent wins. A
    directory counts as left out only if no exception (``!…``) follows: one could
    bring back a file inside it.
    """
    from docker.utils.build import PatternMatcher

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        if directory and excluded and pattern.startswith("!"):
            return False
        matcher = PatternMatcher([pattern.lstrip("!")])
        if any(matcher.matches(candidate) for candidate in candidates):
            excluded = not pattern.startswith("!")
    return excluded


def _literal(path: str) -> str:
    """``path`` as an ignore pattern that matches only itself."""
    escaped = re.sub(r"([*?\[\]\\])", r"\\\1", path)
    return "\\" + escaped if escaped.startswith(("!", "#")) else escaped


def _patterns(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def check_named_contexts(config: Config) -> None:
    """Refuse a named local context (``build-contexts``) that would send a credential.

    buildx sends such a directory with its own ``.dockerignore``, which this action cannot
    extend as it does the main context's; so a credential file of the job in it that the
    file does not leave out stops the build before anything is sent. Its ``.dockerignore``
    is read like the main one: a regular file inside the workspace.
    """
    for named in config.build_contexts:
        if named.directory is None:
            continue
        try:
            shown = named.directory.relative_to(config.workspace).as_posix() or "."
        except ValueError:
            shown = str(named.directory)
        ignore = _read_ignore_file(
            [(named.directory / ".dockerignore", f"{shown}/.dockerignore")], config.workspace
        )
        found = credential_files(config, named.directory)
        check_frontend(config, [f"{shown}/{e.path}" for e in found])
        patterns = _patterns(ignore)
        missing = [
            e.path
            for e in found
            if not _excluded_already(
                patterns, e.path, directory=(named.directory / e.path).is_dir()
            )
        ]
        if missing:
            raise BuildError(
                f"build-contexts: '{named.name}' ({shown}) holds credentials of the job that "
                f"its .dockerignore does not leave out ({', '.join(missing)}); a COPY "
                f"--from={named.name} would put them in the image. Add "
                f"{', '.join(_literal(m) for m in missing)} to {shown}/.dockerignore"
            )


def context_dockerfile(config: Config, workdir: Path, io: ActionsIO) -> Path:
    """The Dockerfile to build with: a copy with its own ignore file when credentials must go."""
    found = credential_files(config)
    if not found:
        return config.dockerfile
    check_frontend(config, [e.path for e in found])
    text = _ignore_text(config)
    patterns = _patterns(text)
    missing = [
        e
        for e in found
        if not _excluded_already(patterns, e.path, directory=(config.context / e.path).is_dir())
    ]
    if not missing:
        return config.dockerfile
    folder = workdir / "dockerfile"
    folder.mkdir(mode=0o700)
    copy = folder / "Dockerfile"
    shutil.copyfile(config.dockerfile, copy)
    ours = "\n".join(_literal(e.path) for e in missing)
    (folder / "Dockerfile.dockerignore").write_text(f"{text.rstrip()}\n{ours}\n".lstrip("\n"))
    if any(e.path == ".git" for e in missing):
        io.warning(_GIT_WARNING, title="Credentials in the build context")
    io.info(
        "Left out of the build context (credentials): "
        + ", ".join(f"{e.path} ({e.why})" for e in missing)
    )
    return copy
