"""Run GitHub Actions workflows with nektos/act against the test environment (test code).

act (``TEST_ACT``, built by scripts/build-tools.sh) runs a workflow file here,
offline, the way the runner would on a GitHub-hosted machine:

* every job runs in a container of ``TEST_ACT_RUNNER_IMAGE`` (the action's
  Debian base with bash, python3 and the docker CLI; scripts/testenv/tools-up.sh
  builds it) for the usual ``runs-on`` labels, on the host network with the
  engine's socket, so ``127.0.0.1`` is the test registry and API server; with
  ``on_host=True`` the steps run on this host instead (``-self-hosted``);
* a Docker container action (ours: ``uses: ./`` or ``uses: acme/deployer@v1``)
  is built by act from its Dockerfile with the test engine (``DOCKER_HOST``) and
  run in the job container's network with the engine's socket mounted; the
  Dockerfile must build from local images, see :func:`action_tree`;
* ``actions/checkout`` of the repository under test is act's own: it copies
  the repository (``repo``, git-ignored files left out) into the workspace;
* remote actions cannot be fetched: each ``uses: owner/repo[/path]@ref`` of the
  workflow is mapped with ``--local-repository`` to a directory, either one the
  caller gives (``actions={"acme/deployer": tree}``) or a stand-in from
  ``testenv/act/actions/<owner>/<repo>/`` (what each fakes is in its
  action.yml). An action that has neither is an error before act starts;
* secrets, env, vars and inputs go to act through private files, never argv;
  act masks the secrets in its log as ``***``.

Use from tests::

    repo = git_repo(tmp_path / "repo")            # a git work tree act runs in
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/ci.yml").write_text(WORKFLOW)
    result = run_workflow(repo, ".github/workflows/ci.yml", secrets={"TOKEN": "..."})
    assert result.returncode == 0, result.log

The action's image needs ``deployer-base:bookworm``, ``deployer-buildx-bin:local``
and ``deployer-tools:local`` in the engine: ``scripts/action-image.sh`` makes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import need_service, read_testenv

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "testenv" / "act" / "actions"
# runs-on labels act maps to the runner image (it picks the first label it knows).
RUNS_ON = ("ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04", "self-hosted", "linux")
# The Dockerfile's image ARGs and the local images scripts/action-image.sh makes.
LOCAL_IMAGES = {
    "BASE_IMAGE": "deployer-base:bookworm",
    "BUILDX_IMAGE": "deployer-buildx-bin:local",
    "TOOLS_IMAGE": "deployer-tools:local",
}
# What act's Dockerfile build needs of this repository (the rest is .dockerignore'd).
ACTION_FILES = ("action.yml", "Dockerfile", ".dockerignore", "entrypoint.py", "requirements.lock")
ACTION_DIRS = ("deployer", "wheels")
_USES = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?P<path>/[^@]*)?@(?P<ref>\S+)$")


class UnknownActionError(Exception):
    """A workflow uses a remote action that has no stand-in and no local copy."""


@dataclass(frozen=True)
class ActResult:
    """What act did: its exit code and its whole log (stdout and stderr, in order)."""

    returncode: int
    log: str


def git_repo(path: Path, repository: str = "acme/web", branch: str = "main") -> Path:
    """A git work tree with one commit and ``origin`` = github.com/<repository>.

    act reads ``github.repository``, ``github.sha`` and ``github.ref`` from it.
    Files already in ``path`` are committed.
    """
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(path), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", branch], check=True)
    subprocess.run(
        [*git, "remote", "add", "origin", f"https://github.com/{repository}.git"], check=True
    )
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "test"], check=True)
    return path


def action_tree(dest: Path) -> Path:
    """Copy this repository's action into ``dest``, its Dockerfile built from local images.

    The Dockerfile's ``ARG BASE_IMAGE/BUILDX_IMAGE/TOOLS_IMAGE`` defaults name
    images by digest or on GHCR, which cannot be pulled here, and act passes no
    build arguments; so the copy's defaults name the local images that
    scripts/action-image.sh makes. Nothing else differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ACTION_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for name in ACTION_DIRS:
        shutil.copytree(
            ROOT / name,
            dest / name,
            ignore=shutil.ignore_patterns("__pycache__"),
            dirs_exist_ok=True,
        )
    dockerfile = (dest / "Dockerfile").read_text()
    for arg, image in LOCAL_IMAGES.items():
        dockerfile, count = re.subn(
            rf"^ARG {arg}=\S+$", f"ARG {arg}={image}", dockerfile, flags=re.MULTILINE
        )
        assert count == 1, f"the Dockerfile has no ARG {arg}=..."
    (dest / "Dockerfile").write_text(dockerfile)
    return dest


def remote_actions(workflow: Mapping[str, Any]) -> set[str]:
    """The ``owner/repo[/path]@ref`` references a workflow's jobs and steps use."""
    found: set[str] = set()
    for job in (workflow.get("jobs") or {}).values():
        uses = [job.get("uses")] + [s.get("uses") for s in job.get("steps") or []]
        found.update(u for u in uses if isinstance(u, str) and _USES.match(u))
    return found


def _local_repositories(uses: set[str], actions: Mapping[str, Path]) -> list[str]:
    """``--local-repository owner/repo@ref=DIR`` arguments for every remote action."""
    args: list[str] = []
    for ref in sorted(uses):
        match = _USES.match(ref)
        assert match
        repo = match["repo"]
        where = actions.get(repo) or STANDINS / repo
        if not where.is_dir():
            raise UnknownActionError(
                f"{ref}: no stand-in in {STANDINS.relative_to(ROOT)}/{repo} and no local copy "
                "given (actions={...}); act cannot fetch actions here"
            )
        args += ["--local-repository", f"{repo}@{match['ref']}={where}"]
    return args


def _called_workflows_uses(uses: set[str], actions: Mapping[str, Path]) -> set[str]:
    """What the reusable workflows among ``uses`` (local copies in ``actions``) use in turn.

    act maps those with the same ``--local-repository`` arguments; one level deep, as
    GitHub allows a called workflow to call others (up to four) but the examples do not.
    """
    found: set[str] = set()
    for ref in uses:
        match = _USES.match(ref)
        path = (match["path"] or "") if match else ""
        if match and path.endswith((".yml", ".yaml")) and match["repo"] in actions:
            called = actions[match["repo"]] / path.lstrip("/")
            found |= remote_actions(yaml.safe_load(called.read_text()) or {})
    return found


def _dotenv(path: Path, values: Mapping[str, str]) -> Path:
    """Write ``NAME="value"`` lines (act reads them with godotenv), mode 600."""
    path.touch(mode=0o600)
    lines = [f"{name}={json.dumps(value)}" for name, value in values.items()]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_workflow(
    repo: Path,
    workflow: str | Path,
    *,
    event: str = "push",
    payload: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    job: str | None = None,
    actor: str | None = None,
    actions: Mapping[str, Path] | None = None,
    cache_server: bool = False,
    on_host: bool = False,
    timeout: float = 900,
) -> ActResult:
    """Run ``workflow`` (a path in ``repo``) for ``event`` with act; return its exit code and log.

    ``payload`` is the event's JSON (act makes a minimal one otherwise);
    ``inputs`` are workflow_dispatch inputs; ``env`` is added to every job's
    environment; ``actor`` is ``github.actor`` (act's default: nektos/act);
    ``cache_server`` runs act's Actions cache service on loopback (ACTIONS_CACHE_URL,
    what ``type=gha`` build caches use); ``actions`` maps ``owner/repo`` to a directory holding that
    action (it wins over a stand-in). ``on_host`` runs the steps on this host
    instead of in the runner image: faster, the host's tools, but a Docker
    container action then fails (act hands its container the host's paths).
    """
    settings = need_service("TEST_ACT", "TEST_ACT_RUNNER_IMAGE")
    act = settings["TEST_ACT"]
    testenv = read_testenv()
    workflow_path = repo / workflow
    uses = remote_actions(yaml.safe_load(workflow_path.read_text()) or {})
    uses |= _called_workflows_uses(uses, actions or {})
    local = _local_repositories(uses, actions or {})
    with tempfile.TemporaryDirectory(prefix="act-") as tmp:
        private = Path(tmp)
        argv = [act, event, "-W", str(workflow_path), "-C", str(repo), *local]
        platform = "-self-hosted" if on_host else settings["TEST_ACT_RUNNER_IMAGE"]
        argv += [arg for label in RUNS_ON for arg in ("-P", f"{label}={platform}")]
        argv += [
            "--action-cache-path", str(private / "cache"),
            "--secret-file", str(_dotenv(private / "secrets", secrets or {})),
            "--env-file", str(_dotenv(private / "env", env or {})),
            "--var-file", str(_dotenv(private / "vars", variables or {})),
            "--input-file", str(_dotenv(private / "inputs", inputs or {})),
            # act's cache service, only when asked for: on loopback, not its LAN default
            *(
                ["--cache-server-addr", "127.0.0.1", "--cache-server-path", str(private / "cache-server")]
                if cache_server
                else ["--no-cache-server"]
            ),
            "--pull=false",  # nothing can be pulled; local images only
        ]  # fmt: skip
        if payload is not None:
            (private / "event.json").write_text(json.dumps(payload))
            argv += ["-e", str(private / "event.json")]
        if job:
            argv += ["-j", job]
        if actor:
            argv += ["--actor", actor]
        process_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(private / "home"),
            "ACT_DISABLE_VERSION_CHECK": "1",  # act asks its notices server otherwise
            "DOCKER_HOST": testenv.get("DOCKER_HOST", "unix:///run/docker-test.sock"),
        }
        (private / "home").mkdir()
        try:
            done = subprocess.run(
                argv,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            out = (
                e.stdout
                if isinstance(e.stdout, str)
                else (e.stdout or b"").decode(errors="replace")
            )
            raise AssertionError(f"act did not finish within {timeout} s:\n{out}") from None
        return ActResult(done.returncode, done.stdout)
