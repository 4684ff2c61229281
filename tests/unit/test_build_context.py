"""What the build receives: the Dockerfile (and its ignore file), the builder, the argv.

buildx sends the context itself (BuildKit's file sync honours .dockerignore); the
product only decides which Dockerfile and ignore file it reads, and when a
checkout's token in ``.git/config`` must be kept out (issue 11, item 10).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deployer.actions import ActionsIO
from deployer.build import builder_reasons, context_dockerfile
from deployer.config import Config, load_config

TOKEN_CONFIG = '[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic eC1hY2Nlc3M=\n'


def config_for(workspace: Path, **inputs: str) -> Config:
    env = {"GITHUB_WORKSPACE": str(workspace), "INPUT_IMAGE": "ghcr.io/acme/web"}
    env.update({f"INPUT_{k.replace('_', '-').upper()}": v for k, v in inputs.items()})
    return load_config(env)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / ".git").mkdir(parents=True)
    (ws / "Dockerfile").write_text("FROM scratch\nCOPY . /src/\n")
    return ws


def choose(config: Config, tmp_path: Path) -> tuple[Path, str]:
    out = io.StringIO()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return context_dockerfile(config, work, ActionsIO(out)), out.getvalue()


def test_a_token_header_not_ignored_is_left_out_with_a_warning(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text("*.log\n!keep.log\n")
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile != workspace / "Dockerfile"
    assert dockerfile.read_text() == (workspace / "Dockerfile").read_text()
    ignore = Path(f"{dockerfile}.dockerignore").read_text()
    assert ignore == "*.log\n!keep.log\n.git/config\n"  # the user's patterns kept
    assert "::warning title=Credentials in the build context::" in log


@pytest.mark.parametrize("patterns", [".git\n", ".git/config\n", "**/.git\n", ".*\n"])
def test_an_ignored_git_config_needs_nothing(
    workspace: Path, tmp_path: Path, patterns: str
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text(patterns)
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile == workspace / "Dockerfile" and "::warning" not in log


def test_a_re_included_git_config_is_left_out(workspace: Path, tmp_path: Path) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text(".git\n!.git/config\n")
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile != workspace / "Dockerfile" and "::warning" in log


def test_the_dockerfile_specific_ignore_file_is_the_one_extended(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text(".git\n")  # buildx would not read this one
    (workspace / "Dockerfile.dockerignore").write_text("dist\n")
    dockerfile, _ = choose(config_for(workspace), tmp_path)
    assert Path(f"{dockerfile}.dockerignore").read_text() == "dist\n.git/config\n"


def test_no_token_header_no_change(workspace: Path, tmp_path: Path) -> None:
    (workspace / ".git" / "config").write_text('[remote "origin"]\n\turl = https://x/y\n')
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile == workspace / "Dockerfile" and "::warning" not in log


def test_a_git_config_outside_the_workspace_is_not_read(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "runner_temp_config"
    outside.write_text(TOKEN_CONFIG)
    (workspace / ".git" / "config").symlink_to(outside)
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile == workspace / "Dockerfile" and "::warning" not in log


@pytest.mark.parametrize(
    ("inputs", "reasons"),
    [
        ({}, []),
        ({"cache_to": "type=inline"}, []),
        ({"cache_from": "ghcr.io/acme/web:cache"}, []),
        ({"platforms": "linux/arm64"}, []),
        ({"cache_to": "type=registry,ref=ghcr.io/acme/web:cache"}, ["cache-to type=registry"]),
        ({"cache_from": "type=gha"}, ["cache-from type=gha"]),
        ({"platforms": "linux/amd64,linux/arm64"}, ["2 platforms"]),
        ({"provenance": "mode=max"}, ["attestations"]),
        ({"sbom": "true"}, ["attestations"]),
        ({"provenance": "false", "sbom": "false"}, []),
    ],
)
def test_the_engine_builds_unless_the_request_needs_a_builder_of_its_own(
    workspace: Path, inputs: dict[str, str], reasons: list[str]
) -> None:
    env_extra = {"ACTIONS_RUNTIME_TOKEN": "t", "ACTIONS_RESULTS_URL": "https://r/"}
    env = {"GITHUB_WORKSPACE": str(workspace), "INPUT_IMAGE": "ghcr.io/acme/web", **env_extra}
    env.update({f"INPUT_{k.replace('_', '-').upper()}": v for k, v in inputs.items()})
    found = builder_reasons(load_config(env))
    assert len(found) == len(reasons)
    for got, want in zip(found, reasons, strict=True):
        assert got.startswith(want)
