"""Which BuildKit frontend builds the Dockerfile, and when only the standard one may.

The job's credential files are left out of the build context through an ignore
file (:mod:`deployer.buildcontext`), which the standard Dockerfile frontend
applies. BuildKit's file sync, though, sends the files the *frontend* asks for,
with the excludes the frontend passes: a frontend image of the pull request's
choosing (``# syntax=attacker/frontend`` in the Dockerfile, or the
``BUILDKIT_SYNTAX`` build-arg) could ask for ``.git/config`` anyway and send it
out from a ``RUN`` step. So a build whose context holds credential files of the
job runs only with the standard frontend (``docker/dockerfile``, or its
``-upstream`` channel), whatever its tag or digest.

A Dockerfile's parser directives are read as BuildKit detects them, generously:
every ``syntax`` key in the leading block of comment (``#``, ``//``) and blank
lines, case-insensitive, and a JSON document's ``"syntax"`` key.
"""

from __future__ import annotations

import json
import re

from deployer.config import Config
from deployer.errors import BuildError
from deployer.manifests import read_inside

__all__ = ["STANDARD_FRONTENDS", "check_frontend", "frontends"]

STANDARD_FRONTENDS = ("docker/dockerfile", "docker/dockerfile-upstream")
MAX_DOCKERFILE = 1 << 20
_DIRECTIVE = re.compile(r"^\s*(?:#|//)\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*?)\s*$")
_COMMENT = re.compile(r"^\s*(?:#|//)")


def _directive_frontends(text: str) -> list[str]:
    """The ``syntax`` values of a Dockerfile's leading comment block (and of a JSON one)."""
    found = []
    for line in text.lstrip("\ufeff").splitlines():
        if not line.strip():
            continue
        if not _COMMENT.match(line):
            break
        match = _DIRECTIVE.match(line)
        if match and match.group(1).lower() == "syntax":
            found.append(match.group(2))
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("syntax"), str):
        found.append(document["syntax"])
    return found


def frontends(config: Config) -> list[tuple[str, str]]:
    """(where it is named, the frontend) of every frontend this build could run."""
    found = []
    syntax = next((v for k, v in config.build_args.items() if k.upper() == "BUILDKIT_SYNTAX"), "")
    if syntax:
        found.append((f"build-arg BUILDKIT_SYNTAX={syntax[:100]}", syntax))
    try:
        data = read_inside(config.dockerfile, [config.workspace], "Dockerfile", MAX_DOCKERFILE)
    except (OSError, ValueError):
        return found  # nothing to read here: buildx says what is wrong with it
    text = data.decode("utf-8", "replace")
    found += [(f"The Dockerfile's # syntax={s[:100]}", s) for s in _directive_frontends(text)]
    return found


def _repository(reference: str) -> str:
    """``docker.io/docker/dockerfile:1.7@sha256:…`` → ``docker/dockerfile``."""
    name = reference.strip().partition("@")[0]
    slash = name.rfind("/")
    if ":" in name[slash + 1 :]:
        name = name[: slash + 1] + name[slash + 1 :].partition(":")[0]
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if name.lower().startswith(prefix):
            name = name[len(prefix) :]
    return name.lower()


def check_frontend(config: Config, credentials: list[str]) -> None:
    """BuildError when a frontend other than the standard one would build a context that
    holds ``credentials`` (paths of the job's credential files in it)."""
    if not credentials:
        return
    for where, frontend in frontends(config):
        if _repository(frontend) not in STANDARD_FRONTENDS:
            shown = ", ".join(credentials[:5])
            raise BuildError(
                f"{where} names a frontend of its own while the build context holds "
                f"credential files of the job ({shown}): BuildKit sends a frontend the files "
                "it asks for, the ignore file notwithstanding. Check out with "
                "`persist-credentials: false` and keep credential files out of the context "
                "(or build a subdirectory as `context`), or use the standard frontend "
                "(# syntax=docker/dockerfile:1)"
            )
