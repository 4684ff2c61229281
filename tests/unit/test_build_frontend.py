"""A frontend of the pull request's choosing never sees the job's credential files.

The credential files of the job are left out of the build context through
``<Dockerfile>.dockerignore``, which the standard Dockerfile frontend applies. But
BuildKit's file sync sends what the *frontend* asks for, with the excludes the
frontend passes: a ``# syntax=`` image of the pull request's choosing (or the
``BUILDKIT_SYNTAX`` build-arg) could ask for ``.git/config`` anyway. So when the
context holds credential files, only the standard frontend (``docker/dockerfile``)
may build it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deployer.actions import ActionsIO
from deployer.build import context_dockerfile
from deployer.errors import BuildError
from tests.unit.test_build_context import TOKEN_CONFIG, config_for

__all__: list[str] = []


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / ".git").mkdir(parents=True)
    return ws


def build(workspace: Path, tmp_path: Path, dockerfile: str, **inputs: str) -> tuple[Path, str]:
    (workspace / "Dockerfile").write_text(dockerfile)
    out = io.StringIO()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return context_dockerfile(config_for(workspace, **inputs), work, ActionsIO(out)), out.getvalue()


@pytest.mark.parametrize(
    ("head", "frontend"),
    [
        ("# syntax=attacker/frontend\n", "attacker/frontend"),
        ("#syntax = ghcr.io/evil/fe:1\n", "ghcr.io/evil/fe:1"),
        ("# escape=`\n\n# Syntax=evil/fe@sha256:" + "a" * 64 + "\n", "evil/fe@sha256:"),
        ("\ufeff# syntax=docker.io/evil/dockerfile:1\n", "docker.io/evil/dockerfile:1"),
        ("# syntax=docker/dockerfile.evil:1\n", "docker/dockerfile.evil:1"),
    ],
)
def test_a_frontend_of_its_own_with_a_credential_in_the_context_is_refused(
    workspace: Path, tmp_path: Path, head: str, frontend: str
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    with pytest.raises(BuildError) as caught:
        build(workspace, tmp_path, head + "FROM scratch\nCOPY . /src/\n")
    message = caught.value.message
    assert f"The Dockerfile's # syntax={frontend}" in message
    assert "holds credential files of the job (.git)" in message
    assert "persist-credentials: false" in message and "docker/dockerfile:1" in message


def test_a_frontend_of_its_own_is_refused_even_when_the_ignore_file_leaves_them_out(
    workspace: Path, tmp_path: Path
) -> None:
    """The frontend chooses the excludes it passes: an ignore file does not bind it."""
    (workspace / "gha-creds-0123abcd.json").write_text("{}")
    (workspace / ".dockerignore").write_text("gha-creds-*.json\n")
    with pytest.raises(BuildError, match=r"\(gha-creds-0123abcd\.json\)"):
        build(workspace, tmp_path, "# syntax=attacker/frontend\nFROM scratch\n")


def test_buildkit_syntax_of_its_own_is_refused_too(workspace: Path, tmp_path: Path) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    with pytest.raises(BuildError, match=r"build-arg BUILDKIT_SYNTAX=attacker/fe:1 names"):
        build(workspace, tmp_path, "FROM scratch\n", build_args="BUILDKIT_SYNTAX=attacker/fe:1")


@pytest.mark.parametrize(
    "head",
    [
        "# syntax=docker/dockerfile:1\n",
        "# syntax=docker.io/docker/dockerfile:1.7-labs@sha256:" + "b" * 64 + "\n",
        "#syntax=docker/dockerfile-upstream:master\n",
        "",
    ],
)
def test_the_standard_frontend_builds_with_the_credentials_left_out(
    workspace: Path, tmp_path: Path, head: str
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    dockerfile, log = build(workspace, tmp_path, head + "FROM scratch\nCOPY . /src/\n")
    assert Path(f"{dockerfile}.dockerignore").read_text() == ".git\n"
    assert "Left out of the build context (credentials): .git" in log


def test_a_frontend_of_its_own_without_credential_files_builds(
    workspace: Path, tmp_path: Path
) -> None:
    dockerfile, _ = build(workspace, tmp_path, "# syntax=example/frontend:2\nFROM scratch\n")
    assert dockerfile == workspace / "Dockerfile"


def test_a_named_context_with_credential_files_needs_the_standard_frontend_too(
    workspace: Path, tmp_path: Path
) -> None:
    from deployer.buildcontext import check_named_contexts

    (workspace / "assets").mkdir()
    (workspace / "assets" / "gha-creds-0123abcd.json").write_text("{}")
    (workspace / "assets" / ".dockerignore").write_text("gha-creds-*.json\n")
    (workspace / "Dockerfile").write_text("# syntax=attacker/frontend\nFROM scratch\n")
    config = config_for(workspace, build_contexts="assets=assets")
    with pytest.raises(BuildError, match=r"\(assets/gha-creds-0123abcd\.json\)"):
        check_named_contexts(config)
    (workspace / "Dockerfile").write_text("# syntax=docker/dockerfile:1\nFROM scratch\n")
    check_named_contexts(config)


@pytest.mark.parametrize(
    ("dockerfile", "frontend"),
    [("//syntax=evil/fe\nFROM scratch\n", "evil/fe"), ('{"syntax": "evil/json"}', "evil/json")],
)
def test_the_other_forms_buildkit_detects_are_read_too(
    workspace: Path, tmp_path: Path, dockerfile: str, frontend: str
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    with pytest.raises(BuildError, match=f"# syntax={frontend} names a frontend of its own"):
        build(workspace, tmp_path, dockerfile)
