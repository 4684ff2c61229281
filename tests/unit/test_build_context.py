"""What the build receives: the Dockerfile (and its ignore file), the builder, the argv.

buildx sends the context itself (BuildKit's file sync honours .dockerignore); the
product only decides which Dockerfile and ignore file it reads, and when a
checkout's token in ``.git/config`` must be kept out (issue 11, item 10).
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from deployer.actions import ActionsIO
from deployer.build import builder_reasons, context_dockerfile
from deployer.buildcontext import MAX_IGNORE_FILE
from deployer.config import Config, load_config
from deployer.errors import BuildError

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
    assert ignore == "*.log\n!keep.log\n.git\n"  # the user's patterns kept, all of .git added
    assert "::warning title=Credentials in the build context::" in log


@pytest.mark.parametrize("patterns", [".git\n", "**/.git\n", ".*\n"])
def test_an_ignored_git_config_needs_nothing(
    workspace: Path, tmp_path: Path, patterns: str
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text(patterns)
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile == workspace / "Dockerfile" and "::warning" not in log


@pytest.mark.parametrize("patterns", [".git\n!.git/config\n", ".git/config\n"])
def test_a_git_dir_not_wholly_ignored_is_left_out(
    workspace: Path, tmp_path: Path, patterns: str
) -> None:
    """Any git config with a credential: all of .git goes (issue 17.5), re-included or not."""
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text(patterns)
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile != workspace / "Dockerfile" and "::warning" in log
    assert Path(f"{dockerfile}.dockerignore").read_text().endswith("\n.git\n")


def test_the_dockerfile_specific_ignore_file_is_the_one_extended(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text(".git\n")  # buildx would not read this one
    (workspace / "Dockerfile.dockerignore").write_text("dist\n")
    dockerfile, _ = choose(config_for(workspace), tmp_path)
    assert Path(f"{dockerfile}.dockerignore").read_text() == "dist\n.git\n"


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


# -- issue 17.1: the ignore file is read like a manifest ----------------------------------------

MARKER_VARIABLE = "DEPLOYER_TEST_ENVIRON_MARKER"


@pytest.mark.parametrize("name", [".dockerignore", "Dockerfile.dockerignore"])
def test_an_ignore_file_linking_to_the_process_environment_is_never_read(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A pull request's ``.dockerignore -> /proc/self/environ`` (was: our environment, the
    registry password and the kubeconfig among it, copied into the ignore file BuildKit
    receives). The build stops with an error naming the file; nothing of it is written."""
    marker = "environ-" + uuid.uuid4().hex
    monkeypatch.setenv(MARKER_VARIABLE, marker)
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)  # so an ignore file is written
    (workspace / name).symlink_to("/proc/self/environ")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BuildError) as raised:
        context_dockerfile(config_for(workspace), work, ActionsIO(io.StringIO()))
    assert f"'{name}' leads outside the workspace" in raised.value.message
    written = [p.read_bytes() for p in work.rglob("*") if p.is_file()]
    assert all(marker.encode() not in data for data in written)


def test_an_ignore_file_linking_outside_the_workspace_is_refused(
    workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "runner_temp_secret"
    outside.write_text("TOKEN=not-for-the-build\n")
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").symlink_to(outside)
    with pytest.raises(BuildError, match="leads outside the workspace"):
        choose(config_for(workspace), tmp_path)


def test_an_ignore_file_over_the_cap_or_not_a_file_is_refused(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / ".dockerignore").write_text("x\n" * (MAX_IGNORE_FILE // 2 + 1))
    with pytest.raises(BuildError, match="larger than 1 MiB"):
        choose(config_for(workspace), tmp_path)
    (workspace / ".dockerignore").unlink()
    os.mkfifo(workspace / ".dockerignore")  # opened without blocking: never a hang
    with pytest.raises(BuildError, match="not a regular file"):
        choose(config_for(workspace), tmp_path)


def test_an_ignore_file_linking_inside_the_workspace_is_used(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".git" / "config").write_text(TOKEN_CONFIG)
    (workspace / "ci").mkdir()
    (workspace / "ci" / "ignore").write_text("dist\n")
    (workspace / ".dockerignore").symlink_to("ci/ignore")
    dockerfile, _ = choose(config_for(workspace), tmp_path)
    assert Path(f"{dockerfile}.dockerignore").read_text() == "dist\n.git\n"


# -- issue 17.5: every credential file of the job stays out of the context ----------------------


def test_a_submodules_git_config_with_a_token_leaves_all_of_git_out(
    workspace: Path, tmp_path: Path
) -> None:
    """``submodules: true`` writes the checkout's extraheader into .git/modules/*/config."""
    (workspace / ".git" / "config").write_text("[core]\n\tbare = false\n")
    module = workspace / ".git" / "modules" / "libs" / "inner"
    module.mkdir(parents=True)
    (module / "config").write_text(TOKEN_CONFIG)
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert Path(f"{dockerfile}.dockerignore").read_text() == ".git\n"
    assert "::warning title=Credentials in the build context::" in log
    assert "Left out of the build context (credentials): .git (a credential in a git config)" in log


def test_credentials_in_a_git_url_count_too(workspace: Path, tmp_path: Path) -> None:
    (workspace / ".git" / "config").write_text(
        '[url "https://x-access-token:ghs_abc@github.com/"]\n\tinsteadOf = https://github.com/\n'
    )
    dockerfile, _ = choose(config_for(workspace), tmp_path)
    assert Path(f"{dockerfile}.dockerignore").read_text() == ".git\n"


def test_the_files_of_the_auth_actions_and_the_job_are_left_out(
    workspace: Path, tmp_path: Path
) -> None:
    """gha-creds-*.json, gha-kubeconfig-*, and what the job's credential variables name."""
    (workspace / "gha-creds-0123abcd.json").write_text("{}")
    (workspace / "gha-kubeconfig-5678").write_text("apiVersion: v1\n")
    (workspace / "tokens").mkdir()
    for name in ("aws-token", "azure-token", "google.json", "kubeconfig"):
        (workspace / "tokens" / name).write_text("x")
    outside = tmp_path / "elsewhere-token"
    outside.write_text("x")
    env = {
        "GITHUB_WORKSPACE": str(workspace),
        "INPUT_IMAGE": "ghcr.io/acme/web",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(workspace / "tokens" / "aws-token"),
        "AZURE_FEDERATED_TOKEN_FILE": "tokens/azure-token",  # relative: to the workspace
        "GOOGLE_APPLICATION_CREDENTIALS": str(workspace / "tokens" / "google.json"),
        "KUBECONFIG": f"{outside}:{workspace / 'tokens' / 'kubeconfig'}",
    }
    (workspace / ".dockerignore").write_text("*.md\n")
    out = io.StringIO()
    work = tmp_path / "work"
    work.mkdir()
    dockerfile = context_dockerfile(load_config(env), work, ActionsIO(out))
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    assert ignore == [
        "*.md",
        "gha-creds-0123abcd.json",
        "gha-kubeconfig-5678",
        "tokens/google.json",
        "tokens/aws-token",
        "tokens/azure-token",
        "tokens/kubeconfig",
    ]
    log = out.getvalue()
    assert "tokens/aws-token (named by AWS_WEB_IDENTITY_TOKEN_FILE)" in log
    assert "::warning" not in log  # nothing for the user to fix: the auth actions write these


def test_credential_files_already_ignored_need_no_copy(workspace: Path, tmp_path: Path) -> None:
    (workspace / "gha-creds-0123abcd.json").write_text("{}")
    (workspace / ".dockerignore").write_text("gha-creds-*.json\n")
    dockerfile, log = choose(config_for(workspace), tmp_path)
    assert dockerfile == workspace / "Dockerfile" and "Left out" not in log
