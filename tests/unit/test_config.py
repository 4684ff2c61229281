"""Inputs as the runner passes them → Config, or one clear problem per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config import INPUTS, input_env_name, load_config, parse_duration, split_image
from deployer.errors import ConfigError


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


def env_for(workspace: Path, **inputs: str) -> dict[str, str]:
    env = {"GITHUB_WORKSPACE": str(workspace), "GITHUB_SHA": "0123456789abcdef"}
    env.update({input_env_name(k.replace("_", "-")): v for k, v in inputs.items()})
    env.setdefault("INPUT_IMAGE", "ghcr.io/acme/web")
    return env


def problems(env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    return {p.input: p.message() for p in caught.value.problems}


def test_input_env_names_keep_hyphens() -> None:
    assert input_env_name("registry-password") == "INPUT_REGISTRY-PASSWORD"
    assert input_env_name("dry-run") == "INPUT_DRY-RUN"


def test_defaults(workspace: Path) -> None:
    config = load_config(env_for(workspace))
    assert config.tags == ("sha-0123456",)
    assert config.tag_references == ["ghcr.io/acme/web:sha-0123456"]
    assert config.context == workspace.resolve()
    assert config.dockerfile == workspace.resolve() / "Dockerfile"
    assert config.registry == "ghcr.io"
    assert config.build and config.push and config.rollback_on_failure and not config.dry_run
    assert config.timeout == 300
    assert config.deployments == ()


def test_empty_strings_mean_defaults(workspace: Path) -> None:
    """The runner passes unset inputs as empty strings."""
    env = env_for(workspace, **{name.replace("-", "_"): "" for name in INPUTS if name != "image"})
    config = load_config(env)
    assert config.timeout == 300 and config.build and not config.dry_run


def test_lists_pairs_and_booleans(workspace: Path) -> None:
    config = load_config(
        env_for(
            workspace,
            tags="v1.2.3, latest\nstable",
            build_args="A=1\n\nB=x=y\n",
            labels="org.example.team=web",
            deployments="web,\nworker",
            dry_run="TRUE",
            rollback_on_failure="False",
            context="app",
            timeout="1h30m",
        )
    )
    assert config.tags == ("v1.2.3", "latest", "stable")
    assert config.build_args == {"A": "1", "B": "x=y"}
    assert config.oci_labels()["org.example.team"] == "web"
    assert config.deployments == ("web", "worker")
    assert config.dry_run and not config.rollback_on_failure
    assert config.dockerfile == (workspace / "app" / "Dockerfile").resolve()
    assert config.timeout == 5400


def test_oci_labels_from_github_env(workspace: Path) -> None:
    env = env_for(workspace, labels="org.opencontainers.image.source=https://example.com/own")
    env.update(GITHUB_REPOSITORY="acme/web", GITHUB_SERVER_URL="https://github.com")
    labels = load_config(env).oci_labels()
    assert labels["org.opencontainers.image.revision"] == "0123456789abcdef"
    assert labels["org.opencontainers.image.source"] == "https://example.com/own"  # user wins
    assert labels["org.opencontainers.image.created"].endswith("Z")


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("web", "docker.io"),
        ("acme/web", "docker.io"),
        ("docker.io/acme/web", "docker.io"),
        ("index.docker.io/acme/web", "docker.io"),
        ("localhost:5000/web", "localhost:5000"),
        ("127.0.0.1:5000/team/web-app", "127.0.0.1:5000"),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        ),
        ("europe-docker.pkg.dev/proj/repo/web", "europe-docker.pkg.dev"),
    ],
)
def test_valid_images(image: str, registry: str) -> None:
    name = split_image(image)
    assert name.registry == registry
    assert name.repository == image


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("", "is required"),
        ("ghcr.io/acme/web app", "white space"),
        ("ghcr.io//web", "empty path component"),
        ("ghcr.io/acme/web:v1", "contains a tag"),
        ("ghcr.io/acme/web@sha256:" + "a" * 64, "contains a digest"),
        ("https://ghcr.io/acme/web", "URL scheme"),
        ("ghcr.io/acme/-web", "not a valid repository name"),
    ],
)
def test_invalid_images(workspace: Path, image: str, says: str) -> None:
    found = problems(env_for(workspace, image=image))
    assert list(found) == ["image"]
    assert says in found["image"]
    assert "Example: image: ghcr.io/acme/web" in found["image"]


@pytest.mark.parametrize(
    ("inputs", "name", "says"),
    [
        ({"tags": "v1,-bad"}, "tags", "'-bad' is not a valid tag"),
        ({"tags": "a" * 129}, "tags", "not a valid tag"),
        ({"tags": "has space"}, "tags", "not a valid tag"),
        ({"build_args": "A=1\nNOEQUALS"}, "build-args", "line 2"),
        ({"labels": "nolabel"}, "labels", "has no '='"),
        ({"context": "missing"}, "context", "not a directory"),
        ({"context": ".."}, "context", "outside the workspace"),
        ({"dockerfile": "nope/Dockerfile"}, "dockerfile", "not a file"),
        ({"dockerfile": "../outside"}, "dockerfile", "not a file"),
        ({"timeout": "5 minutes"}, "timeout", "not a duration"),
        ({"timeout": "0s"}, "timeout", "longer than zero"),
        ({"build": "yes"}, "build", "use true or false"),
        ({"push": "1"}, "push", "use true or false"),
        ({"dry_run": "maybe"}, "dry-run", "use true or false"),
        ({"rollback_on_failure": "on"}, "rollback-on-failure", "use true or false"),
        ({"registry_password": "s3cret-value"}, "registry-username", "give both"),
        ({"registry_username": "bob"}, "registry-password", "give both"),
        ({"registry": "docker.io"}, "registry", "not the registry of image"),
        ({"namespace": "Prod"}, "namespace", "not a valid namespace"),
        ({"deployments": "web,Web_2"}, "deployments", "not a valid Deployment name"),
        ({"deployments": "web,web"}, "deployments", "more than once"),
        ({"container": "a b"}, "container", "not a valid container name"),
        ({"kubeconfig": "{{{"}, "kubeconfig", "not valid YAML"),
        ({"kubeconfig": "a: 1"}, "kubeconfig", "not a kubeconfig"),
        ({"target": "bad stage"}, "target", "not a valid build stage"),
        ({"deployments": "web", "push": "false"}, "push", "only run an image that was pushed"),
        ({"cache_from": "type=nfs,ref=x"}, "cache-from", "line 1 has type 'nfs'"),
        ({"cache_to": "\ntype=registry,mode=max"}, "cache-to", "line 2 (type=registry) has no ref"),
        ({"cache_to": "type=local,dest=../../tmp/c"}, "cache-to", "outside the workspace"),
        ({"cache_from": "type=registry, ref=a/b"}, "cache-from", "white space"),
        ({"platforms": "linux/amd64,Windows"}, "platforms", "not a platform"),
        ({"secrets": "NPM_TOKEN"}, "secrets", "line 1 has no '='"),
        ({"secrets": "A=1\nA=2"}, "secrets", "repeats the id 'A'"),
        ({"no_cache": "yes"}, "no-cache", "use true or false"),
        ({"pull": "1"}, "pull", "use true or false"),
        ({"provenance": "max mode"}, "provenance", "not true, false or key=value"),
        ({"sbom": "yes please"}, "sbom", "not true, false or key=value"),
        ({"cache_to": "type=gha"}, "cache-to", "crazy-max/ghaction-github-runtime"),
        (
            {"tags": "v1", "build": "false", "image": "ghcr.io/acme/web@sha256:" + "a" * 64},
            "tags",
            "cannot be used with an image given by digest",
        ),
    ],
)
def test_each_bad_input_is_named(
    workspace: Path, inputs: dict[str, str], name: str, says: str
) -> None:
    found = problems(env_for(workspace, **inputs))
    assert list(found) == [name]
    assert found[name].startswith(f"Input '{name}'")
    assert says in found[name]
    assert f"Example: {name}: " in found[name]


def test_every_bad_input_is_reported_at_once(workspace: Path) -> None:
    found = problems(env_for(workspace, image="", tags="-x", build="nah", timeout="soon"))
    assert set(found) == {"image", "tags", "build", "timeout"}


def test_secret_values_are_not_echoed(workspace: Path) -> None:
    found = problems(
        env_for(workspace, registry_password="hunter2-secret", kubeconfig="token: hunter3")
    )
    assert "hunter2" not in " ".join(found.values())
    assert "hunter3" not in " ".join(found.values())


def test_build_false_needs_no_build_files(tmp_path: Path) -> None:
    env = env_for(tmp_path, build="false", context="missing")
    assert not load_config(env).build


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("2.5m", 150)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_created_is_the_commit_time_so_rebuilds_hit_the_cache(workspace: Path) -> None:
    event = workspace / "event.json"
    event.write_text('{"head_commit": {"timestamp": "2026-01-02T03:04:05+01:00"}}')
    env = env_for(workspace)
    env["GITHUB_EVENT_PATH"] = str(event)
    assert (
        load_config(env).oci_labels()["org.opencontainers.image.created"] == "2026-01-02T02:04:05Z"
    )
    env["SOURCE_DATE_EPOCH"] = "0"
    assert load_config(env).created == "1970-01-01T00:00:00Z"


def test_build_push_action_inputs(workspace: Path) -> None:
    config = load_config(
        env_for(
            workspace,
            cache_from="ghcr.io/acme/web:cache\n# a comment\ntype=registry,ref=ghcr.io/acme/b:c",
            cache_to="type=registry,ref=ghcr.io/acme/web:cache,mode=max",
            platforms="linux/amd64, linux/arm64/v8\nlinux/amd64",
            secrets="NPM_TOKEN=a=b=c\nempty=",
            no_cache="true",
            pull="true",
            provenance="mode=max",
            sbom="false",
        )
    )
    assert config.cache_from == (
        "type=registry,ref=ghcr.io/acme/web:cache",  # a bare ref is a registry cache
        "type=registry,ref=ghcr.io/acme/b:c",
    )
    assert config.cache_to == ("type=registry,ref=ghcr.io/acme/web:cache,mode=max",)
    assert config.platforms == ("linux/amd64", "linux/arm64/v8")
    assert {k: v.get_secret_value() for k, v in config.build_secrets.items()} == {
        "NPM_TOKEN": "a=b=c",
        "empty": "",
    }
    assert config.no_cache and config.pull
    assert config.provenance == "mode=max" and config.sbom == "false"
    assert config.wants_attestations


def test_build_secret_values_are_never_echoed(workspace: Path) -> None:
    found = problems(env_for(workspace, secrets="GOOD=x\nnpm_Q7xK2mP9vL4-secret-value"))
    assert "npm_Q7xK2mP9vL4" not in found["secrets"] and "line 2" in found["secrets"]


def test_gha_cache_without_the_runner_variables_is_an_input_error(workspace: Path) -> None:
    found = problems(env_for(workspace, cache_from="type=gha", cache_to="type=gha,mode=max"))
    assert set(found) == {"cache-from", "cache-to"}
    message = found["cache-to"]
    assert "ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL (or ACTIONS_CACHE_URL) are not" in message
    assert "crazy-max/ghaction-github-runtime" in message and "type=registry" in message
    env = env_for(workspace, cache_to="type=gha,mode=max")
    env["ACTIONS_RUNTIME_TOKEN"] = "token"
    assert "is not in this action's environment" in problems(env)["cache-to"]
    env["ACTIONS_RESULTS_URL"] = "https://results-receiver.actions.githubusercontent.com/"
    config = load_config(env)
    assert set(config.gha_env) == {"ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL"}
    # the registry cache needs nothing from the runner
    assert load_config(env_for(workspace, cache_to="type=registry,ref=ghcr.io/a/b:c"))


def test_an_image_by_digest_needs_build_false(workspace: Path) -> None:
    digest = "sha256:" + "ab" * 32
    config = load_config(env_for(workspace, image=f"ghcr.io/acme/web@{digest}", build="false"))
    assert config.image.repository == "ghcr.io/acme/web" and config.image_digest == digest
    assert config.tag_references == []
    found = problems(env_for(workspace, image=f"ghcr.io/acme/web@{digest}"))
    assert "set build: false" in found["image"]
    found = problems(env_for(workspace, image="ghcr.io/acme/web@sha256:abc", build="false"))
    assert "malformed digest" in found["image"]


def test_buildx_is_found_by_env_then_plugin_dirs_then_path(tmp_path: Path) -> None:
    from deployer.config import find_buildx

    home_plugin = tmp_path / "home" / ".docker" / "cli-plugins" / "docker-buildx"
    home_plugin.parent.mkdir(parents=True)
    home_plugin.write_text("#!/bin/sh\n")
    home_plugin.chmod(0o755)
    on_path = tmp_path / "bin" / "buildx"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    env = {"HOME": str(tmp_path / "home"), "PATH": str(on_path.parent)}
    assert find_buildx({**env, "DEPLOYER_BUILDX": "/opt/buildx"}) == "/opt/buildx"
    assert find_buildx(env) == str(home_plugin)
    home_plugin.unlink()
    assert find_buildx(env) == str(on_path)
    assert find_buildx({"PATH": str(tmp_path / "empty")}) is None


def test_created_comes_from_the_commit_in_the_workspace(workspace: Path) -> None:
    import subprocess

    git = ["git", "-C", str(workspace), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", "x"],
        check=True,
        env={"GIT_COMMITTER_DATE": "2026-03-04T05:06:07Z", "PATH": "/usr/bin:/bin"},
    )
    env = env_for(workspace)
    env.pop("GITHUB_SHA")  # workflow_dispatch: no commit in the event
    assert load_config(env).created == "2026-03-04T05:06:07Z"
    subprocess.run([*git, "gc", "-q"], check=True)  # packed objects and refs
    assert load_config(env).created == "2026-03-04T05:06:07Z"
