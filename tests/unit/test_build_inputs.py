"""build-push-action's inputs under their own names (issue 19, items 3 and 4).

``file``, ``tags`` as full references, ``build-contexts``, ``no-cache-filters``, ``ssh``,
``secret-files``, ``secret-envs``, ``annotations``, and an ``image`` with upper case.
Config-level checks call ``load_config``; what buildx receives is seen through the fake
buildx executable the product runs as it would run buildx (tests/unit/fake_buildx.py).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.build import builder_reasons
from deployer.config import Config, input_env_name, load_config
from deployer.errors import ConfigError
from tests.unit.fake_buildx import SUCCESS
from tests.unit.test_actions import commands
from tests.unit.test_pipeline import FakeEngine, go, runner_env, without_masks

__all__ = ["runner_env"]  # a fixture used here

SECRET = "s3cr3t-" + "Zq8Lw2Vx" * 3  # what no log, argv or environment of buildx may hold


def env_for(workspace: Path, **inputs: str) -> dict[str, str]:
    env = {"GITHUB_WORKSPACE": str(workspace), "GITHUB_SHA": "0123456789abcdef"}
    env.update({input_env_name(k.replace("_", "-")): v for k, v in inputs.items()})
    env.setdefault("INPUT_IMAGE", "ghcr.io/acme/web")
    return env


def config_for(workspace: Path, extra_env: dict[str, str] | None = None, **inputs: str) -> Config:
    return load_config({**env_for(workspace, **inputs), **(extra_env or {})})


def problems(
    workspace: Path, extra_env: dict[str, str] | None = None, **inputs: str
) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        config_for(workspace, extra_env, **inputs)
    return {p.input: p.message() for p in caught.value.problems}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "docker").mkdir(parents=True)
    (ws / "Dockerfile").write_text("FROM scratch\n")
    (ws / "docker" / "Dockerfile").write_text("FROM scratch\n")
    return ws


def build_argv_of(engine: FakeEngine) -> list[str]:
    [argv] = engine.builds()
    return argv


# -- file: build-push-action's name for dockerfile ----------------------------------------------


def test_file_is_the_dockerfile_under_build_push_actions_name(workspace: Path) -> None:
    config = config_for(workspace, file="docker/Dockerfile")
    assert config.dockerfile == workspace / "docker" / "Dockerfile"
    both = config_for(workspace, file="./docker/Dockerfile", dockerfile="docker/Dockerfile")
    assert both.dockerfile == workspace / "docker" / "Dockerfile"


def test_file_and_dockerfile_naming_different_files_is_an_input_error(workspace: Path) -> None:
    found = problems(workspace, file="docker/Dockerfile", dockerfile="Dockerfile")
    assert list(found) == ["file"]
    assert "'docker/Dockerfile' and dockerfile 'Dockerfile' name different files" in found["file"]


def test_a_missing_file_is_reported_under_the_input_that_named_it(workspace: Path) -> None:
    found = problems(workspace, file="nope/Dockerfile")
    assert list(found) == ["file"] and "'nope/Dockerfile' is not a file" in found["file"]


# -- tags: bare tags or full references of the image's repository --------------------------------


def test_tags_take_full_references_of_the_images_repository(workspace: Path) -> None:
    # docker/metadata-action's `tags` output: full references, the repository lower-cased
    config = config_for(
        workspace,
        image="ghcr.io/Octo-Org/web",
        tags="ghcr.io/octo-org/web:sha-0123456\nghcr.io/Octo-Org/web:main, v1.2.3",
    )
    assert config.tags == ("sha-0123456", "main", "v1.2.3")
    assert config.tag_references == [
        "ghcr.io/octo-org/web:sha-0123456",
        "ghcr.io/octo-org/web:main",
        "ghcr.io/octo-org/web:v1.2.3",
    ]
    hub = config_for(workspace, image="nginx", tags="docker.io/library/nginx:1.27,library/nginx")
    assert hub.tags == ("1.27", "latest")  # no tag: latest, as docker reads it


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ("docker.io/acme/web:v1", "is in repository docker.io/acme/web, not in the image's"),
        ("ghcr.io/acme/api:v1", "is in repository ghcr.io/acme/api"),
        ("ghcr.io/acme/web@sha256:" + "a" * 64, "names a digest"),
        ("ghcr.io/acme/web:-bad", "'-bad' is not a valid tag"),
        ("ghcr.io//web:v1", "is not an image reference"),
    ],
)
def test_a_tag_reference_elsewhere_is_an_input_error_naming_it(
    workspace: Path, tags: str, says: str
) -> None:
    found = problems(workspace, tags=tags)
    assert list(found) == ["tags"] and says in found["tags"], found


# -- image: upper case is lower-cased with a notice, as docker/metadata-action does ---------------


def test_an_image_with_upper_case_is_lower_cased_with_a_notice(workspace: Path) -> None:
    config = config_for(workspace, image="GHCR.io/Octo-Org/Web")
    assert config.image.repository == "ghcr.io/octo-org/web"
    assert config.tag_references == ["ghcr.io/octo-org/web:sha-0123456"]
    [notice] = config.notices
    assert "'GHCR.io/Octo-Org/Web' has upper-case letters" in notice
    assert "using 'ghcr.io/octo-org/web'" in notice
    pinned = config_for(workspace, image="ghcr.io/Acme/web@sha256:" + "c" * 64, build="false")
    assert pinned.image.repository == "ghcr.io/acme/web" and pinned.image_digest


def test_the_run_says_the_notice_and_pushes_the_lower_cased_repository(
    runner_env: dict[str, str],
) -> None:
    runner_env["INPUT_IMAGE"] = "ghcr.io/${{ github.repository_owner }}/web".replace(
        "${{ github.repository_owner }}", "Octo-Org"
    )
    engine = FakeEngine()
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 0, log
    notices = [c for c in commands(log) if c.startswith("::notice")]
    assert len(notices) == 1 and "using 'ghcr.io/octo-org/web'" in notices[0], log
    assert "--tag=ghcr.io/octo-org/web:v1" in build_argv_of(engine)
    assert outputs["image"].startswith("ghcr.io/octo-org/web@sha256:")


# -- no-cache-filters -------------------------------------------------------------------------------


def test_no_cache_filters_reach_buildx_one_flag_a_stage(runner_env: dict[str, str]) -> None:
    runner_env["INPUT_NO-CACHE-FILTERS"] = "deps, test\ndeps"
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    argv = build_argv_of(engine)
    assert [a for a in argv if a.startswith("--no-cache-filter")] == [
        "--no-cache-filter=deps",
        "--no-cache-filter=test",
    ]


def test_a_no_cache_filter_that_is_no_stage_name_is_an_input_error(workspace: Path) -> None:
    found = problems(workspace, no_cache_filters="deps,--no-cache")
    assert "'--no-cache' is not a build stage name" in found["no-cache-filters"]


# -- annotations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "annotations"),
    [
        ({}, ("manifest:org.opencontainers.image.title=web",)),
        (
            {"platforms": "linux/amd64,linux/arm64"},
            ("manifest,index:org.opencontainers.image.title=web",),
        ),
        ({"provenance": "mode=max"}, ("manifest,index:org.opencontainers.image.title=web",)),
    ],
)
def test_an_annotation_goes_on_the_manifest_and_on_the_index_when_there_is_one(
    workspace: Path, inputs: dict[str, str], annotations: tuple[str, ...]
) -> None:
    config = config_for(workspace, annotations="org.opencontainers.image.title=web", **inputs)
    assert config.annotations == annotations


def test_annotations_with_buildx_levels_pass_as_written(workspace: Path) -> None:
    # what docker/metadata-action's `annotations` output holds (DOCKER_METADATA_ANNOTATIONS_LEVELS)
    text = (
        "manifest:org.opencontainers.image.description=The web app, with = and : in it\n"
        "index:org.opencontainers.image.vendor=Acme\n"
        "manifest[linux/arm64],manifest-descriptor:com.example.arch=arm64\n"
    )
    config = config_for(workspace, annotations=text, platforms="linux/amd64,linux/arm64")
    assert config.annotations == tuple(text.splitlines())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("index:a=b", "line 1 annotates the image index, but this build makes a single manifest"),
        ("manifest-descriptor:a=b", "annotates the image index"),
        ("index-descriptor:a=b", "index-descriptor annotates an OCI layout's index"),
        ("layer:a=b", "has the level 'layer'"),
        ("manifest[linux]:a=b", "'linux' is not os/arch"),
        ("\nno-equals", "line 2 has no '='"),
        ("bad key=b", "invalid key"),
    ],
)
def test_an_annotation_buildkit_would_refuse_is_an_input_error(
    workspace: Path, text: str, says: str
) -> None:
    found = problems(workspace, annotations=text)
    assert list(found) == ["annotations"] and says in found["annotations"], found


def test_annotations_reach_buildx_and_need_a_builder_of_their_own(
    runner_env: dict[str, str],
) -> None:
    runner_env["INPUT_ANNOTATIONS"] = "org.opencontainers.image.title=web"
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    argv = build_argv_of(engine)
    assert "--annotation=manifest:org.opencontainers.image.title=web" in argv
    # seen on the engine's BuildKit (docker driver): the pushed manifest has no annotations
    assert any(a.startswith("--builder=") for a in argv)
    assert "annotations (the engine's image store keeps none)" in log


# -- secret-envs ------------------------------------------------------------------------------------


def test_secret_envs_read_the_steps_environment_into_a_private_file(
    runner_env: dict[str, str],
) -> None:
    runner_env["INPUT_SECRET-ENVS"] = "npm_token=NPM_TOKEN\nhost=DOCKER_HOST"
    runner_env["NPM_TOKEN"] = SECRET
    runner_env["DOCKER_HOST"] = "unix:///var/run/docker.sock"
    engine = FakeEngine([{"lines": [*SUCCESS, f"#3 0.2 leaked {SECRET}"]}])
    code, log, _, summary = go(runner_env, engine)
    assert code == 0, log
    assert f"::add-mask::{SECRET}" in log
    assert SECRET not in without_masks(log) and SECRET not in summary
    [call] = engine.buildx_calls()
    assert SECRET not in json.dumps(call["argv"]) and SECRET not in json.dumps(call["env"])
    assert call["secrets"]["npm_token"] == [SECRET, "0o600", "0o700"]
    assert call["secrets"]["host"][0] == "unix:///var/run/docker.sock"
    assert "NPM_TOKEN" not in call["env"]  # buildx's environment takes nothing an input names


@pytest.mark.parametrize(
    ("inputs", "name", "says"),
    [
        ({"secret_envs": "npm=MISSING_VAR"}, "secret-envs", "MISSING_VAR is not set in this step"),
        ({"secret_envs": "npm"}, "secret-envs", "line 1 is not ID=ENVVAR"),
        ({"secret_envs": "npm=NOT-A-NAME"}, "secret-envs", "line 1 is not ID=ENVVAR"),
        ({"secret_envs": "a=HOME\na=HOME"}, "secret-envs", "line 2 repeats the id 'a'"),
        ({"secrets": "a=1", "secret_envs": "a=HOME"}, "secret-envs", "repeats the id 'a'"),
    ],
)
def test_a_bad_secret_env_is_an_input_error(
    workspace: Path, inputs: dict[str, str], name: str, says: str
) -> None:
    found = problems(workspace, {"HOME": "/root"}, **inputs)
    assert list(found) == [name] and says in found[name], found


# -- secret-files -----------------------------------------------------------------------------------


def test_a_secret_file_is_copied_privately_masked_and_left_out_of_the_context(
    runner_env: dict[str, str],
) -> None:
    workspace = Path(runner_env["GITHUB_WORKSPACE"])
    line = f"//registry.npmjs.org/:_authToken={SECRET}"
    (workspace / ".npmrc").write_text(line + "\n")
    runner_env["INPUT_SECRET-FILES"] = "npmrc=.npmrc"
    # a RUN step that prints the mounted file (the runner masks whole registered lines)
    engine = FakeEngine([{"lines": [*SUCCESS, f"#3 0.2 {line}"]}])
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    assert f"::add-mask::{line}" in log and SECRET not in without_masks(log)
    [call] = engine.buildx_calls()
    content, mode, folder_mode = call["secrets"]["npmrc"]
    assert content == (workspace / ".npmrc").read_text() and (mode, folder_mode) == (
        "0o600",
        "0o700",
    )
    src = next(a for a in call["argv"] if a.startswith("--secret=id=npmrc,src="))
    assert str(workspace) not in src  # buildx reads the checked copy, not the tree's file
    assert call["dockerignore"] is not None and ".npmrc" in call["dockerignore"].splitlines()


def test_a_secret_file_in_runner_temp_is_read(workspace: Path, tmp_path: Path) -> None:
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    (temp / "token").write_bytes(b"\x00\xffbinary")
    config = config_for(workspace, {"RUNNER_TEMP": str(temp)}, secret_files=f"t={temp}/token")
    assert config.secret_files["t"].get_secret_value() == b"\x00\xffbinary"


@pytest.fixture
def outside_file(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "config.json"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda ws, out: (ws / "creds").symlink_to(out), "'creds' leads outside the workspace"),
        (lambda ws, out: (ws / "creds").symlink_to("/proc/self/environ"), "leads outside"),
        (lambda ws, out: (ws / "creds").mkdir(), "'creds' is not a regular file"),
        (
            lambda ws, out: (ws / "creds").write_bytes(b"x" * (500 * 1024 + 1)),
            "larger than 500 KiB",
        ),
        (lambda ws, out: None, "'creds' does not exist"),
    ],
)
def test_a_secret_file_outside_not_regular_or_too_big_is_an_input_error_never_read(
    workspace: Path, outside_file: Path, make: object, says: str
) -> None:
    make(workspace, outside_file)  # type: ignore[operator]
    found = problems(workspace, secret_files="npmrc=creds")
    assert list(found) == ["secret-files"] and says in found["secret-files"], found
    assert SECRET not in json.dumps(found)


def test_a_secret_file_by_an_absolute_path_elsewhere_says_what_the_container_sees(
    workspace: Path,
) -> None:
    found = problems(workspace, secret_files="npmrc=/home/runner/work/_temp/npmrc")
    assert "a container action sees only the workspace" in found["secret-files"]


# -- ssh ---------------------------------------------------------------------------------------------


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    try:
        yield str(path)
    finally:
        server.close()


def test_ssh_default_forwards_the_agent_ssh_auth_sock_names(
    runner_env: dict[str, str], agent_socket: str
) -> None:
    runner_env["SSH_AUTH_SOCK"] = agent_socket
    runner_env["INPUT_SSH"] = f"default\ngithub={agent_socket}"
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    [call] = engine.buildx_calls()
    assert f"--ssh=default={agent_socket}" in call["argv"]
    assert call["ssh"] == {"default": ["socket"], "github": ["socket"]}
    assert "SSH_AUTH_SOCK" not in call["env"]


def test_an_ssh_key_is_copied_privately_and_masked(runner_env: dict[str, str]) -> None:
    workspace = Path(runner_env["GITHUB_WORKSPACE"])
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n-----END OPENSSH PRIVATE KEY-----\n"
    (workspace / "deploy_key").write_text(key)
    runner_env["INPUT_SSH"] = "github=deploy_key"
    engine = FakeEngine([{"lines": [*SUCCESS, f"#3 0.2 {SECRET}"]}])
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    assert f"::add-mask::{SECRET}" in log and SECRET not in without_masks(log)
    [call] = engine.buildx_calls()
    assert call["ssh"]["github"] == [[key, "0o600"]]
    flag = next(a for a in call["argv"] if a.startswith("--ssh="))
    assert str(workspace) not in flag and SECRET not in json.dumps(call["argv"])
    assert "deploy_key" in call["dockerignore"].splitlines()


@pytest.mark.parametrize(
    ("ssh", "env", "says"),
    [
        ("default", {}, "SSH_AUTH_SOCK is not set"),
        ("default", {"SSH_AUTH_SOCK": "/nonexistent/agent.sock"}, "is not a socket this action"),
        ("github=/etc/passwd", {}, "leads outside the workspace"),
        ("github=", {}, "line 1 is not default, ID or ID=KEYFILE"),
        ("default\ndefault", {"SSH_AUTH_SOCK": "x"}, "line 1 asks for the SSH agent"),
    ],
)
def test_a_bad_ssh_entry_is_an_input_error(
    workspace: Path, ssh: str, env: dict[str, str], says: str
) -> None:
    found = problems(workspace, env, ssh=ssh)
    assert list(found) == ["ssh"] and says in found["ssh"], found


def test_a_link_to_the_engines_socket_is_never_forwarded(
    workspace: Path, agent_socket: str
) -> None:
    (workspace / "key").symlink_to(agent_socket)  # a socket outside: not a key, not the agent
    found = problems(workspace, ssh="default=key")
    assert "leads outside the workspace" in found["ssh"]


# -- build-contexts ----------------------------------------------------------------------------------


def test_build_contexts_reach_buildx_with_local_paths_resolved(
    runner_env: dict[str, str],
) -> None:
    workspace = Path(runner_env["GITHUB_WORKSPACE"])
    (workspace / "assets").mkdir()
    (workspace / "layout").mkdir()
    runner_env["INPUT_BUILD-CONTEXTS"] = (
        "assets=./assets\n"
        "alpine=docker-image://alpine:3.20@sha256:" + "b" * 64 + "\n"
        "docs=https://github.com/acme/docs.git#main\n"
        "base=oci-layout://layout:v1\n"
    )
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    flags = [a for a in build_argv_of(engine) if a.startswith("--build-context=")]
    assert flags == [
        f"--build-context=assets={workspace / 'assets'}",
        "--build-context=alpine=docker-image://alpine:3.20@sha256:" + "b" * 64,
        "--build-context=docs=https://github.com/acme/docs.git#main",
        f"--build-context=base=oci-layout://{workspace / 'layout'}:v1",
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("up=..", "'..' lies outside the workspace"),
        ("x=missing", "'missing' is not a directory in the workspace"),
        ("x=oci-layout://../../etc", "lies outside the workspace"),
        ("x=https://bob:" + SECRET + "@git.example.com/r.git", "has credentials in its URL"),
        ("x=s3://bucket/key", "a source type buildx does not know"),
        ("=assets", "line 1 is not NAME=SOURCE"),
        ("a=assets\na=assets", "line 2 repeats the name 'a'"),
    ],
)
def test_a_bad_build_context_is_an_input_error(workspace: Path, text: str, says: str) -> None:
    (workspace / "assets").mkdir()
    found = problems(workspace, build_contexts=text)
    assert list(found) == ["build-contexts"] and says in found["build-contexts"], found
    assert SECRET not in json.dumps(found)


def test_a_named_context_holding_a_credential_its_ignore_file_keeps_is_refused(
    runner_env: dict[str, str],
) -> None:
    workspace = Path(runner_env["GITHUB_WORKSPACE"])
    (workspace / "assets").mkdir()
    (workspace / "assets" / "gha-creds-1a2b.json").write_text("{}")
    runner_env["INPUT_BUILD-CONTEXTS"] = "assets=assets"
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 1 and engine.builds() == []
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "'assets' (assets) holds credentials of the job" in error
    assert "Add gha-creds-1a2b.json to assets/.dockerignore" in error
    (workspace / "assets" / ".dockerignore").write_text("gha-creds-*.json\n")
    code, log, _, _ = go(runner_env, FakeEngine())
    assert code == 0, log


@pytest.mark.parametrize(
    ("api", "needs_builder"), [("1.41", True), ("1.42", False), ("1.47", False), (None, False)]
)
def test_build_contexts_need_a_builder_only_on_an_engine_older_than_23(
    workspace: Path, api: str | None, needs_builder: bool
) -> None:
    (workspace / "assets").mkdir()
    config = config_for(workspace, build_contexts="assets=assets")
    reasons = builder_reasons(config, api)
    assert bool(reasons) is needs_builder, reasons
    if needs_builder:
        assert reasons == ["build-contexts (engine API 1.41: its BuildKit predates named contexts)"]


def test_nothing_is_read_for_these_inputs_when_nothing_is_built(workspace: Path) -> None:
    config = config_for(
        workspace,
        build="false",
        ssh="default",
        secret_files="x=missing",
        secret_envs="x=MISSING_VAR",
        build_contexts="x=missing",
    )
    assert not (config.ssh or config.secret_files or config.build_contexts)
    assert os.environ.get("MISSING_VAR") is None
