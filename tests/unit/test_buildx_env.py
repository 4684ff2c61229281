"""Issue 17.8-17.10, 17.12: what reaches buildx, and through which door.

The whole run with the fake buildx of fake_buildx.py (a real executable that records
its argv and environment): no value on buildx's command line, no build-arg that
reconfigures buildx, cache entries read as the CSV buildx reads, loopback registries
told by address, and the builder on the runner's network only when it must be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer.buildx import Workdir, loopback_registry
from deployer.config import load_config
from deployer.errors import ConfigError
from tests.unit.fake_buildx import SUCCESS
from tests.unit.test_pipeline import FakeEngine, go, runner_env, without_masks

__all__ = ["runner_env"]  # fixture used here

VALUE = "value-never-in-argv-7f3a"


@pytest.mark.parametrize("key", ["app.version", "app-version", "Version_2", "SOURCE_DATE_EPOCH"])
def test_every_build_arg_value_goes_through_the_environment(
    runner_env: dict[str, str], key: str
) -> None:
    """Keys with '.' or '-' put their value in argv (against docs/faults.md): buildx reads
    any name without '=' from its environment (docker/buildx listToMap, os.LookupEnv)."""
    runner_env["INPUT_BUILD-ARGS"] = f"{key}={VALUE}"
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    [call] = engine.buildx_calls()
    assert VALUE not in json.dumps(call["argv"])
    assert f"--build-arg={key}" in call["argv"] and call["env"][key] == VALUE


@pytest.mark.parametrize(
    "key",
    [
        "BUILDX_CONFIG",
        "BUILDX_BUILDER",
        "DOCKER_HOST",
        "DOCKER_CONFIG",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "PATH",
        "HOME",
        "ACTIONS_RUNTIME_TOKEN",
        "BUILDKIT_PROGRESS",
        "GODEBUG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ],
)
def test_a_build_arg_named_like_buildxs_own_variables_is_an_input_error(
    runner_env: dict[str, str], key: str
) -> None:
    """Was: BUILDX_CONFIG, HTTPS_PROXY, SSL_CERT_FILE reconfigured buildx (or, for the names
    we set, went into argv). Now nothing is built and the error says what to do."""
    runner_env["INPUT_BUILD-ARGS"] = f"{key}=http://attacker.example:3128"
    engine = FakeEngine()
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1 and outputs["status"] == "failed"
    assert engine.buildx_calls() == []
    error = next(line for line in log.splitlines() if line.startswith("::error"))
    assert f"Input 'build-args': '{key}' is a variable buildx itself reads" in error
    assert f"Rename the ARG in the Dockerfile, e.g. APP_{key}" in error


@pytest.mark.parametrize("key", ["BUILDKIT_INLINE_CACHE", "BUILDKIT_SYNTAX", "GOPROXY", "GOOS"])
def test_buildkits_own_build_args_and_other_names_still_work(
    runner_env: dict[str, str], key: str
) -> None:
    runner_env["INPUT_BUILD-ARGS"] = f"{key}=1"
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    assert engine.buildx_calls()[0]["env"][key] == "1"


def test_aws_names_are_reserved_with_an_s3_cache_only(tmp_path: Path) -> None:
    env = {
        "GITHUB_WORKSPACE": str(tmp_path),
        "INPUT_IMAGE": "ghcr.io/acme/web",
        "INPUT_BUILD-ARGS": "AWS_REGION=eu-west-1",
    }
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert load_config(env).build_args == {"AWS_REGION": "eu-west-1"}
    env["INPUT_CACHE-TO"] = "type=s3,region=eu-west-1,bucket=b"
    with pytest.raises(ConfigError, match="AWS_\\* with a type=s3 cache"):
        load_config(env)


def test_credentials_in_cache_entries_reach_buildx_by_environment_and_are_masked(
    runner_env: dict[str, str],
) -> None:
    """Was: in argv, and session_token not masked."""
    key, secret, session = "AKIACACHEKEY0001", "cache-secret-key-0001", "cache-session-token-0001"
    token = "gha-cache-token-0001"
    runner_env["INPUT_CACHE-FROM"] = f"type=gha,url=https://cache.example/,token={token}"
    runner_env["INPUT_CACHE-TO"] = (
        f"type=s3,region=eu-west-1,bucket=b,access_key_id={key},"
        f"secret_access_key={secret},session_token={session}"
    )
    engine = FakeEngine([{"lines": [*SUCCESS, f"#3 0.3 {secret} {session} {token}"]}])
    code, log, _, summary = go(runner_env, engine)
    assert code == 0, log
    build = engine.buildx_calls()[-1]
    argv = json.dumps(build["argv"])
    for value in (key, secret, session, token):
        assert value not in argv
        assert value not in without_masks(log) and value not in summary
    assert "--cache-from=type=gha,url=https://cache.example/" in build["argv"]
    assert "--cache-to=type=s3,region=eu-west-1,bucket=b" in build["argv"]
    assert build["env"]["ACTIONS_RUNTIME_TOKEN"] == token
    assert (
        build["env"]["AWS_ACCESS_KEY_ID"],
        build["env"]["AWS_SECRET_ACCESS_KEY"],
        build["env"]["AWS_SESSION_TOKEN"],
    ) == (key, secret, session)
    assert f"::add-mask::{session}" in log


@pytest.mark.parametrize(
    "entry",
    [
        "type=azblob,account_url=https://a.blob.core.windows.net/,secret_access_key=k",
        "type=azblob,account_url=https://a.blob.core.windows.net/?sv=1&sig=abc,name=c",
    ],
)
def test_an_azure_blob_key_would_need_argv_and_is_an_input_error(
    tmp_path: Path, entry: str
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {"GITHUB_WORKSPACE": str(tmp_path), "INPUT_IMAGE": "ghcr.io/a/b", "INPUT_CACHE-TO": entry}
    with pytest.raises(ConfigError, match="takes only on its command line"):
        load_config(env)


GHTOKEN = "ghp_cacheGhToken0123456789abcdefABCD"
SAS = "sv=2022-11-02&ss=b&sig=sasSignature0123456789"


@pytest.mark.parametrize(
    ("entry", "secret"),
    [
        (f"type=gha,mode=max,repository=a/b,ghtoken={GHTOKEN}", GHTOKEN),
        (f"type=azblob,account_url=https://a.blob.core.windows.net/?{SAS},name=c", SAS),
        (
            "type=azblob,account_url=https://a.blob.core.windows.net/,secret_access_key=k3y-1",
            "k3y-1",
        ),
    ],
)
def test_a_cache_credential_buildx_reads_only_from_argv_is_masked_and_refused(
    runner_env: dict[str, str], entry: str, secret: str
) -> None:
    """gha's ``ghtoken`` (a GitHub token; buildx has no variable for it) was neither
    masked nor refused: it went to buildx's command line. An azblob SAS was not masked."""
    runner_env["INPUT_CACHE-TO"] = entry
    runner_env["ACTIONS_RUNTIME_TOKEN"] = "runtime-token-0001"
    runner_env["ACTIONS_CACHE_URL"] = "https://cache.example/"
    engine = FakeEngine()
    code, log, _, summary = go(runner_env, engine)
    assert code == 1, log
    assert "takes only on its command line" in log
    assert f"::add-mask::{secret}" in log
    assert secret not in without_masks(log) and secret not in summary
    assert engine.buildx_calls() == []


# -- 17.9: cache entries are CSV ----------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        'type=local,"dest=/github/file_commands"',
        '"type=local","dest=../outside"',
        'type=local,"src=/etc"',
    ],
)
def test_a_quoted_local_cache_path_outside_the_workspace_is_refused(
    tmp_path: Path, entry: str
) -> None:
    """buildx parses entries as CSV: a quoted field is still ``dest=…`` (was: passed the
    naive comma split, and buildx wrote the cache into /github/file_commands)."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {"GITHUB_WORKSPACE": str(tmp_path), "INPUT_IMAGE": "ghcr.io/a/b", "INPUT_CACHE-TO": entry}
    with pytest.raises(ConfigError, match="is outside the workspace"):
        load_config(env)


@pytest.mark.parametrize("entry", ['type=local,dest="/x"', 'type=local,"dest=a""b"', '"type=gha'])
def test_an_entry_buildx_would_read_otherwise_is_refused(tmp_path: Path, entry: str) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {"GITHUB_WORKSPACE": str(tmp_path), "INPUT_IMAGE": "ghcr.io/a/b", "INPUT_CACHE-TO": entry}
    with pytest.raises(ConfigError, match=r"line 1 (is not valid CSV|has a quote inside a field)"):
        load_config(env)


# -- 17.10: loopback registries by address ----------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.9.8.7", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("127.0.0.1.nip.io:5000", False),
        ("127.attacker.example", False),
        ("127.evil:5000", False),
        ("ghcr.io", False),
        ("[::2]:5000", False),
    ],
)
def test_loopback_registries_are_told_by_address(registry: str, loopback: bool) -> None:
    """Was: ``127.anything.example`` configured as a plain-HTTP registry with credentials."""
    assert loopback_registry(registry) is loopback


def test_a_registry_named_like_loopback_is_not_made_plain_http(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    config = load_config({"GITHUB_WORKSPACE": str(tmp_path), "INPUT_IMAGE": "ghcr.io/a/b"})
    workdir = Workdir(config)
    try:
        settings = workdir.buildkitd_config({"127.attacker.example", "127.0.0.1:5000"})
        assert settings is not None
        text = settings.read_text()
    finally:
        workdir.remove()
    assert '[registry."127.0.0.1:5000"]' in text and "attacker" not in text


# -- 17.12: the builder's network ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "host_network"), [("ghcr.io/acme/web", False), ("127.0.0.1:5000/acme/web", True)]
)
def test_the_builder_shares_the_runners_network_only_for_a_loopback_registry(
    runner_env: dict[str, str], image: str, host_network: bool
) -> None:
    """network=host let every RUN step use the runner's network, loopback included; it is
    needed only to reach a registry on the runner's loopback."""
    runner_env["INPUT_IMAGE"] = image
    runner_env["INPUT_PLATFORMS"] = "linux/amd64,linux/arm64"  # a docker-container builder
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    create = engine.buildx_calls()[0]
    assert create["argv"][0] == "create"
    assert ("--driver-opt=network=host" in create["argv"]) is host_network


def test_every_variable_we_give_buildx_is_a_reserved_build_arg_name(tmp_path: Path) -> None:
    """An invariant for whoever adds a variable to buildx's environment: a build-arg of the
    same name would replace it, so reserved_build_arg must refuse it."""
    from deployer.buildenv import reserved_build_arg

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {
        "GITHUB_WORKSPACE": str(tmp_path),
        "INPUT_IMAGE": "ghcr.io/a/b",
        "ACTIONS_RUNTIME_TOKEN": "t",
        "ACTIONS_RESULTS_URL": "https://results.example/",
        "ACTIONS_CACHE_URL": "https://cache.example/",
    }
    config = load_config(env)
    proxies = {name: "http://proxy.example:3128" for name in ("HTTPS_PROXY", "no_proxy")}
    workdir = Workdir(config)
    try:
        given = workdir.env(config, {**proxies, "SSL_CERT_FILE": "/x", "TMPDIR": "/tmp"})
    finally:
        workdir.remove()
    assert {"PATH", "HOME", "DOCKER_CONFIG", "ACTIONS_RUNTIME_TOKEN", "HTTPS_PROXY"} <= set(given)
    assert [name for name in given if not reserved_build_arg(name, s3_cache=False)] == []
