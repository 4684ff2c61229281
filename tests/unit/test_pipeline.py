"""The whole run with a fake engine passed in: outputs, summary, exit codes, errors."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from deployer import registry
from deployer.actions import ActionsIO
from deployer.buildx import MAX_LINE, READ_CHUNK, LineSplitter
from deployer.config import Config
from deployer.engine import EngineAPIError, EngineInfo
from deployer.errors import ConfigError, InputProblem
from deployer.pipeline import run
from deployer.rollout import DeploymentResult, RolloutResult
from tests.unit.fake_buildx import CONFIG_DIGEST, DIGEST, SUCCESS, install, read_calls, write_plan
from tests.unit.test_actions import commands, runner_outputs

PASSWORD = "Pa55-w0rd-unit-secret"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def failing_run(step: str, error: str, *, output: str = "") -> dict[str, Any]:
    """A buildx run whose vertex ``#5 <step>`` fails with ``error``."""
    lines = [*SUCCESS[:8], f"#5 {step}"]
    if output:
        lines.append(f"#5 0.201 {output}")
    lines += [f"#5 ERROR: {error}", "", f"ERROR: failed to build: failed to solve: {error}"]
    return {"lines": lines, "code": 1}


def push_failure(error: str) -> dict[str, Any]:
    return failing_run("pushing ghcr.io/acme/web:v1 with docker", error)


class FakeEngine:
    """Stands in for deployer.engine.Engine (info, inspect, remove); records the calls.

    ``containerd_store``: what its ``info()`` says of its image store (Docker 29's
    default: the engine's own BuildKit exports caches, builds several platforms).

    The build itself runs the fake buildx executable of tests/unit/fake_buildx.py,
    through the product's real subprocess code; ``runs`` is what its successive
    ``buildx build`` calls print and return.
    """

    def __init__(
        self,
        runs: list[dict[str, Any]] | None = None,
        *,
        containerd_store: bool = False,
        **plan: Any,
    ) -> None:
        self.containerd_store = containerd_store
        self.api_version: str | None = None  # unknown: a current engine
        self.calls: list[tuple[str, Any]] = []
        self.plan: dict[str, Any] = {"runs": runs or [{}], **plan}
        self.distribution_digest = DIGEST
        self.media_type = MANIFEST
        self.buildx: Path | None = None

    def attach(self, buildx: Path) -> None:
        self.buildx = buildx
        write_plan(buildx, self.plan)
        Path(f"{buildx}.calls.jsonl").unlink(missing_ok=True)

    def info(self) -> EngineInfo:
        self.calls.append(("info", ""))
        return EngineInfo("29.8.1", containerd_store=self.containerd_store)

    def inspect_distribution(self, image: str, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("inspect_distribution", image))
        return {
            "Descriptor": {
                "digest": self.distribution_digest,
                "mediaType": self.media_type,
                "size": 528,
            }
        }

    def remove_container(self, container: str, **kwargs: Any) -> None:
        self.calls.append(("remove_container", container))

    def remove_volume(self, name: str, **kwargs: Any) -> None:
        self.calls.append(("remove_volume", name))

    def buildx_calls(self) -> list[dict[str, Any]]:
        return read_calls(self.buildx) if self.buildx else []

    def builds(self) -> list[list[str]]:
        return [c["argv"] for c in self.buildx_calls() if c["argv"][:1] == ["build"]]

    def names(self) -> list[str]:
        return [f"buildx {c['argv'][0]}" for c in self.buildx_calls()] + [n for n, _ in self.calls]


@pytest.fixture
def runner_env(tmp_path: Path) -> dict[str, str]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "Dockerfile").write_text("FROM scratch\n")
    files = tmp_path / "files"
    files.mkdir()
    (files / "output").touch()
    (files / "summary").touch()
    return {
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(files / "output"),
        "GITHUB_STEP_SUMMARY": str(files / "summary"),
        "GITHUB_SHA": "0123456789abcdef0123",
        "GITHUB_REPOSITORY": "acme/web",
        "DEPLOYER_BUILDX": str(install(tmp_path / "bin")),
        "INPUT_IMAGE": "ghcr.io/acme/web",
        "INPUT_TAGS": "v1,latest",
        "INPUT_REGISTRY-USERNAME": "bob",
        "INPUT_REGISTRY-PASSWORD": PASSWORD,
        "INPUT_BUILD": "true",
        "INPUT_PUSH": "true",
    }


def without_masks(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if not line.startswith("::add-mask::"))


def go(
    env: dict[str, str], engine: FakeEngine, **kwargs: Any
) -> tuple[int, str, dict[str, str], str]:
    if Path(env.get("DEPLOYER_BUILDX", "/nonexistent")).is_file():
        engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    code = run(env, out, make_docker=lambda _config: engine, **kwargs)
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    return code, out.getvalue(), outputs, Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def test_build_and_push(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 0, log
    assert outputs["image"] == f"ghcr.io/acme/web@{DIGEST}"
    assert outputs["digest"] == DIGEST
    assert outputs["image-id"] == CONFIG_DIGEST
    assert json.loads(outputs["tags"]) == ["ghcr.io/acme/web:v1", "ghcr.io/acme/web:latest"]
    assert outputs["status"] == "succeeded"
    assert float(outputs["duration"]) >= 0
    [call] = engine.buildx_calls()
    argv = call["argv"]
    assert argv[:3] == ["build", "--progress=plain", argv[2]]
    assert argv[2].startswith("--metadata-file=")
    assert "--tag=ghcr.io/acme/web:v1" in argv and "--tag=ghcr.io/acme/web:latest" in argv
    assert "--label=org.opencontainers.image.revision=0123456789abcdef0123" in argv
    assert "--label=org.opencontainers.image.source=https://github.com/acme/web" in argv
    assert "--push" in argv and argv[-1] == runner_env["GITHUB_WORKSPACE"]
    assert not any(a.startswith("--builder") for a in argv)  # the engine's own BuildKit
    # the login reached buildx in a private docker config, never in argv
    assert PASSWORD not in json.dumps(argv)
    auths = json.loads(call["docker_config"])["auths"]
    assert set(auths) == {"ghcr.io"}
    assert base64.b64decode(auths["ghcr.io"]["auth"]).decode() == f"bob:{PASSWORD}"
    assert not Path(call["env"]["DOCKER_CONFIG"]).exists()  # removed at the end
    assert call["env"]["BUILDX_GIT_INFO"] == "0"  # buildx runs no git in the context
    assert "INPUT_REGISTRY-PASSWORD" not in call["env"]
    assert ("inspect_distribution", f"ghcr.io/acme/web@{DIGEST}") in engine.calls
    # the build log's ::add-mask:: was printed inertly
    assert "::add-mask::evil" not in commands(log)
    assert "Builder: the engine's own BuildKit" in log
    assert f"`{DIGEST}`" in summary and summary.startswith("## ✅ Succeeded")


def test_bad_input_builds_nothing(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    runner_env["INPUT_IMAGE"] = "ghcr.io/acme/web:v1"
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 1
    assert engine.names() == []
    errors = [c for c in commands(log) if c.startswith("::error")]
    assert len(errors) == 1 and "Input 'image'" in errors[0]
    assert outputs["status"] == "failed"
    assert "Invalid input" in summary
    assert "Traceback" not in log


def test_failed_build_names_the_step_and_shows_its_last_lines(runner_env: dict[str, str]) -> None:
    failure = failing_run(
        "[2/2] RUN exit 3",
        'process "/bin/sh -c exit 3" did not complete successfully: exit code: 3',
        output="oops from the build",
    )
    engine = FakeEngine([failure])
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 1
    assert len(engine.builds()) == 1  # a build failure is not retried
    assert "inspect_distribution" not in engine.names()
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "failed at [2/2] RUN exit 3:" in error and "exit code: 3" in error
    assert "oops from the build" in summary
    assert outputs["status"] == "failed" and outputs["digest"] == ""


def test_a_forged_step_line_in_the_output_is_not_the_failing_step(
    runner_env: dict[str, str],
) -> None:
    failure = failing_run("[2/2] RUN ./test.sh", "exit code: 1", output="#9 [1/1] RUN evil")
    failure["lines"].insert(9, "#5 0.300 \r#9 [9/9] [Approve](https://evil)")
    code, log, _, _ = go(runner_env, FakeEngine([failure]))
    assert code == 1
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "at [2/2] RUN ./test.sh:" in error and "evil" not in error


@pytest.mark.parametrize(
    "forged",
    [
        # a name printed after the vertex's ERROR (as in the error block buildx prints last)
        ["#9 ERROR: exit code: 1", "#9 [evil] [Approve](https://evil)"],
        # a "name" that is no BuildKit step line
        ["#9 [Approve](https://evil)", "#9 ERROR: exit code: 1"],
        ["#9 Step 2/2 : [Approve](https://evil)", "#9 ERROR: exit code: 1"],
        ["#9 pushing [Approve](https://evil)", "#9 ERROR: exit code: 1"],
    ],
)
def test_only_a_step_line_before_its_error_is_the_failing_step(
    runner_env: dict[str, str], forged: list[str]
) -> None:
    lines = [*SUCCESS[:8], "#5 [2/2] RUN ./test.sh", "#5 0.201 testing", *forged]
    lines += ["", "ERROR: failed to build: failed to solve: exit code: 1"]
    code, log, _, summary = go(runner_env, FakeEngine([{"lines": lines, "code": 1}]))
    assert code == 1
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "failed: exit code: 1" in error and "evil" not in error and "Approve" not in error
    assert "Approve" not in summary.split("Last lines of the log")[0]


def test_push_error_is_never_success(runner_env: dict[str, str]) -> None:
    engine = FakeEngine([push_failure("manifest invalid: manifest invalid")])
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1
    assert outputs["status"] == "failed" and outputs["image"] == ""
    assert "::error title=Push failed::" in log


def test_wrong_password_is_not_retried_and_names_registry_and_user(
    runner_env: dict[str, str],
) -> None:
    engine = FakeEngine([push_failure("unauthorized: authentication required")])
    code, log, _, summary = go(runner_env, engine)
    assert code == 1
    assert len(engine.builds()) == 1
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "ghcr.io refused user 'bob'" in error
    assert PASSWORD not in without_masks(log) and PASSWORD not in summary


def test_a_private_base_image_refused_names_the_login(runner_env: dict[str, str]) -> None:
    refused = failing_run(
        "[internal] load metadata for ghcr.io/acme/base:1",
        "failed to resolve source metadata for ghcr.io/acme/base:1: unauthorized",
    )
    code, log, _, _ = go(runner_env, FakeEngine([refused]))
    assert code == 1
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "Registry refused the credentials" in error and "pulling a base image" in error


def test_transient_push_errors_are_retried_with_a_cap(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(registry, "backoff_sleep", slept.append)
    flaky = push_failure("received unexpected HTTP status: 503 Service Unavailable")
    engine = FakeEngine([flaky, flaky, {}])
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 0, log
    assert slept == [1.0, 2.0]
    assert len(engine.builds()) == 3
    assert outputs["digest"] == DIGEST
    engine = FakeEngine([flaky])
    slept.clear()
    code, log, _, _ = go(runner_env, engine)
    assert code == 1
    assert len(engine.builds()) == 4
    assert "after 4 attempts" in log


def test_push_without_digest_is_not_success(runner_env: dict[str, str]) -> None:
    engine = FakeEngine([{"digest": ""}])
    code, log, _, _ = go(runner_env, engine)
    assert code == 1 and "reported no digest" in log


def test_digest_read_back_must_match(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    engine.distribution_digest = "sha256:" + "ef" * 32
    code, log, _, _ = go(runner_env, engine)
    assert code == 1 and "not the pushed digest" in log


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        MANIFEST,
    ],
)
def test_indexes_and_manifests_are_accepted_when_read_back(
    runner_env: dict[str, str], media_type: str
) -> None:
    engine = FakeEngine()
    engine.media_type = media_type
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 0, log
    assert outputs["image"] == f"ghcr.io/acme/web@{DIGEST}"


def test_something_else_under_the_digest_does_not_count(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    engine.media_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1 and outputs["image"] == ""
    assert "not an image manifest or index" in log


def test_build_false_resolves_the_digest(runner_env: dict[str, str]) -> None:
    runner_env["INPUT_BUILD"] = "false"
    engine = FakeEngine()
    code, _, outputs, _ = go(runner_env, engine)
    assert code == 0
    assert engine.names() == ["inspect_distribution"]
    assert outputs["image"] == f"ghcr.io/acme/web@{DIGEST}"


def test_an_image_given_by_digest_is_deployed_exactly_once_the_registry_has_it(
    runner_env: dict[str, str],
) -> None:
    runner_env.update(
        {"INPUT_BUILD": "false", "INPUT_TAGS": "", "INPUT_IMAGE": f"ghcr.io/acme/web@{DIGEST}"}
    )
    engine = FakeEngine()
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 0, log
    assert engine.calls == [("inspect_distribution", f"ghcr.io/acme/web@{DIGEST}")]
    assert outputs["image"] == f"ghcr.io/acme/web@{DIGEST}" and outputs["digest"] == DIGEST
    assert json.loads(outputs["tags"]) == []


def test_a_digest_the_registry_lacks_is_refused(runner_env: dict[str, str]) -> None:
    runner_env.update(
        {"INPUT_BUILD": "false", "INPUT_TAGS": "", "INPUT_IMAGE": f"ghcr.io/acme/web@{DIGEST}"}
    )

    class Missing(FakeEngine):
        def inspect_distribution(self, image: str, **kwargs: Any) -> Mapping[str, Any]:
            self.calls.append(("inspect_distribution", image))
            raise RuntimeError("manifest unknown: manifest unknown")

    code, log, outputs, _ = go(runner_env, Missing())
    assert code == 1 and outputs["image"] == ""
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "manifest unknown" in error and DIGEST in error


class FakeDeploy:
    """Stands in for the Kubernetes stage; records the order of calls."""

    def __init__(
        self,
        calls: list[str],
        result: RolloutResult | None = None,
        check_error: Exception | None = None,
    ) -> None:
        self.calls = calls
        self.result = result
        self.check_error = check_error

    def check(self, config: Config, io: ActionsIO, cancel: threading.Event) -> None:
        self.calls.append("check")
        if self.check_error:
            raise self.check_error

    def roll_out(
        self, config: Config, image: str, io: ActionsIO, cancel: threading.Event
    ) -> RolloutResult:
        self.calls.append(f"roll_out {image}")
        assert self.result is not None
        return self.result

    def close(self) -> None:
        self.calls.append("close")


def web(result: str, reason: str = "") -> DeploymentResult:
    return DeploymentResult(
        "prod",
        "web",
        ("web",),
        "ghcr.io/acme/web@sha256:old",
        f"ghcr.io/acme/web@{DIGEST}",
        3,
        result,
        reason,
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("succeeded", 0),
        ("planned", 0),
        ("paused", 0),  # an Argo Rollout waiting for a promotion, with on-pause: succeed
        ("rolled-back", 1),
        ("failed", 1),
        ("cancelled", 1),
    ],
)
def test_rollout_status_decides_status_and_exit_code(
    runner_env: dict[str, str], status: str, code: int
) -> None:
    runner_env["INPUT_DEPLOYMENTS"] = "web"
    calls: list[str] = []
    result = RolloutResult(status, (web(status, "" if code == 0 else "ImagePullBackOff"),))
    got, _, outputs, summary = go(
        runner_env, FakeEngine(), make_deploy=lambda _c: FakeDeploy(calls, result)
    )
    assert got == code
    assert outputs["status"] == status
    assert json.loads(outputs["revision"]) == {"web": 3}
    assert json.loads(outputs["deployments"])[0]["result"] == status
    assert calls == ["check", f"roll_out ghcr.io/acme/web@{DIGEST}", "close"]
    assert "| `deployment/web` |" in summary


def test_cluster_problems_stop_the_run_before_the_build(runner_env: dict[str, str]) -> None:
    runner_env["INPUT_DEPLOYMENTS"] = "wbe"
    calls: list[str] = []
    problem = ConfigError(
        [InputProblem("deployments", "no Deployment 'wbe' in namespace prod", "web")]
    )
    engine = FakeEngine()
    code, log, outputs, _ = go(
        runner_env, engine, make_deploy=lambda _c: FakeDeploy(calls, check_error=problem)
    )
    assert code == 1
    assert engine.calls == []
    assert calls == ["check", "close"]
    assert "Input 'deployments'" in next(c for c in commands(log) if c.startswith("::error"))
    assert outputs["status"] == "failed"


def test_sigterm_mid_build_ends_buildx_removes_the_builder_and_cancels(
    runner_env: dict[str, str],
) -> None:
    runner_env["INPUT_PLATFORMS"] = "linux/amd64,linux/arm64"  # a docker-container builder
    engine = FakeEngine([{"lines": ["#5 [2/2] RUN sleep 60"], "sleep": 60}])
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    code, log, outputs, _ = go(runner_env, engine)
    took = time.monotonic() - started
    timer.cancel()
    assert code == 1
    assert outputs["status"] == "cancelled" and outputs["digest"] == ""
    assert "SIGTERM" in log
    assert took < 8
    [create, build] = engine.buildx_calls()
    assert create["argv"][0] == "create"
    with pytest.raises(ProcessLookupError):
        os.kill(build["pid"], 0)  # buildx was ended, not left behind
    name = next(a for a in create["argv"] if a.startswith("--name=")).split("=", 1)[1]
    assert ("remove_container", f"buildx_buildkit_{name}0") in engine.calls
    assert "inspect_distribution" not in engine.names()
    assert not Path(build["env"]["DOCKER_CONFIG"]).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_secrets_never_reach_log_outputs_or_summary(runner_env: dict[str, str]) -> None:
    runner_env["INPUT_BUILD-ARGS"] = f"TOKEN={PASSWORD}"
    engine = FakeEngine([push_failure(f"denied: bob:{PASSWORD} rejected")])
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 1
    visible = without_masks(log) + json.dumps(outputs) + summary
    assert PASSWORD not in visible
    assert "::add-mask::" + PASSWORD in log
    [call] = engine.buildx_calls()
    assert PASSWORD not in json.dumps(call["argv"])  # the build arg's value went by env
    assert "--build-arg=TOKEN" in call["argv"] and call["env"]["TOKEN"] == PASSWORD


def test_build_secrets_are_masked_and_reach_buildx_as_private_files(
    runner_env: dict[str, str],
) -> None:
    value = "npm_Q7xK2mP9vL4-build-secret"
    runner_env["INPUT_SECRETS"] = f"NPM_TOKEN={value}\nother=two words"
    engine = FakeEngine([{"lines": [*SUCCESS, f"#3 0.2 leaked {value}"]}])
    code, log, _, summary = go(runner_env, engine)
    assert code == 0, log
    assert f"::add-mask::{value}" in log
    assert value not in without_masks(log) and value not in summary
    [call] = engine.buildx_calls()
    assert value not in json.dumps(call["argv"]) and value not in json.dumps(call["env"])
    assert call["secrets"]["NPM_TOKEN"] == [value, "0o600", "0o700"]
    assert call["secrets"]["other"][0] == "two words"
    src = next(a for a in call["argv"] if a.startswith("--secret=id=NPM_TOKEN,src="))
    assert not Path(src.split("src=", 1)[1]).exists()  # removed with the private directory


def test_a_cache_export_gets_a_builder_for_this_run_removed_after_success_and_failure(
    runner_env: dict[str, str],
) -> None:
    runner_env["INPUT_IMAGE"] = "127.0.0.1:5000/acme/web"
    runner_env["INPUT_CACHE-TO"] = "type=registry,ref=127.0.0.1:5000/acme/web:cache,mode=max"
    runner_env["INPUT_CACHE-FROM"] = "127.0.0.1:5000/acme/web:cache"
    runner_env["DEPLOYER_BUILDKIT_IMAGE"] = "local/buildkit:test"
    for runs, code in (([{}], 0), ([failing_run("[2/2] RUN x", "exit code: 1")], 1)):
        engine = FakeEngine(runs)
        got, log, _, _ = go(runner_env, engine)
        assert got == code, log
        create, build = engine.buildx_calls()
        name = next(a for a in create["argv"] if a.startswith("--name=")).split("=", 1)[1]
        assert "--driver=docker-container" in create["argv"]
        assert "--driver-opt=network=host" in create["argv"]
        assert "--driver-opt=image=local/buildkit:test" in create["argv"]
        assert '[registry."127.0.0.1:5000"]' in create["buildkitd"]
        assert "http = true" in create["buildkitd"]
        assert f"--builder={name}" in build["argv"]
        assert (
            "--cache-to=type=registry,ref=127.0.0.1:5000/acme/web:cache,mode=max" in build["argv"]
        )
        assert "--cache-from=type=registry,ref=127.0.0.1:5000/acme/web:cache" in build["argv"]
        assert "because of cache-to type=registry" in log
        assert ("remove_container", f"buildx_buildkit_{name}0") in engine.calls
        assert ("remove_volume", f"buildx_buildkit_{name}0_state") in engine.calls
        assert f"Removed builder {name}" in log


def test_with_the_containerd_image_store_the_engines_buildkit_does_caches_and_platforms(
    runner_env: dict[str, str],
) -> None:
    runner_env["INPUT_CACHE-TO"] = "type=registry,ref=ghcr.io/acme/web:cache,mode=max"
    runner_env["INPUT_PLATFORMS"] = "linux/amd64,linux/arm64"
    engine = FakeEngine(containerd_store=True)
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    assert [c["argv"][0] for c in engine.buildx_calls()] == ["build"]  # no `buildx create`
    [argv] = engine.builds()
    assert not any(a.startswith("--builder") for a in argv)
    assert "--cache-to=type=registry,ref=ghcr.io/acme/web:cache,mode=max" in argv
    assert "--platform=linux/amd64,linux/arm64" in argv
    assert (
        "Builder: the engine's own BuildKit (buildx docker driver); it does cache-to "
        "type=registry; 2 platforms itself, since the engine keeps its images in containerd "
        "(no builder to create)"
    ) in log
    assert not [n for n, _ in engine.calls if n.startswith("remove_")]


def test_an_engine_that_will_not_say_what_it_offers_is_an_error_before_the_build(
    runner_env: dict[str, str],
) -> None:
    class Silent(FakeEngine):
        def info(self) -> EngineInfo:
            raise EngineAPIError(500, "info is broken")

    runner_env["INPUT_CACHE-TO"] = "type=registry,ref=ghcr.io/acme/web:cache,mode=max"
    engine = Silent()
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1 and outputs["status"] == "failed"
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "The Docker engine did not say what it offers (GET /info): info is broken" in error
    assert engine.buildx_calls() == []  # nothing built


def test_a_plain_build_does_not_ask_the_engine_what_it_offers(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    assert "info" not in [n for n, _ in engine.calls]
    assert "Builder: the engine's own BuildKit (buildx docker driver); nothing in this" in log


def test_the_image_id_under_the_containerd_store_is_the_manifest_digest(
    runner_env: dict[str, str],
) -> None:
    # BuildKit reports no config digest for what it put in a containerd image store:
    # the engine names the image by its manifest digest.
    engine = FakeEngine([{"metadata": {"containerimage.config.digest": None}}])
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 0, log
    assert outputs["image-id"] == DIGEST


def test_build_push_action_inputs_become_buildx_flags(runner_env: dict[str, str]) -> None:
    runner_env.update(
        {
            "INPUT_PLATFORMS": "linux/amd64\nlinux/arm64",
            "INPUT_NO-CACHE": "true",
            "INPUT_PULL": "true",
            "INPUT_PROVENANCE": "mode=max",
            "INPUT_SBOM": "false",
            "INPUT_TARGET": "runtime",
        }
    )
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    argv = engine.builds()[0]
    for flag in (
        "--platform=linux/amd64,linux/arm64",
        "--no-cache",
        "--pull",
        "--provenance=mode=max",
        "--sbom=false",
        "--target=runtime",
    ):
        assert flag in argv
    build_env = engine.buildx_calls()[-1]["env"]
    assert "BUILDX_NO_DEFAULT_ATTESTATIONS" not in build_env  # provenance was asked for


def test_type_gha_passes_the_runner_variables_to_buildx_unprinted(
    runner_env: dict[str, str],
) -> None:
    token = "ghs_runtime-token-0123456789"
    runner_env.update(
        {
            "INPUT_CACHE-FROM": "type=gha",
            "INPUT_CACHE-TO": "type=gha,mode=max",
            "ACTIONS_RUNTIME_TOKEN": token,
            "ACTIONS_RESULTS_URL": "https://results-receiver.actions.githubusercontent.com/",
        }
    )
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    env = engine.buildx_calls()[-1]["env"]
    assert env["ACTIONS_RUNTIME_TOKEN"] == token
    assert env["ACTIONS_RESULTS_URL"].startswith("https://results-receiver")
    assert token not in without_masks(log)
    assert "because of cache-to type=gha" in log


def test_missing_buildx_is_a_clear_error(runner_env: dict[str, str], tmp_path: Path) -> None:
    runner_env["DEPLOYER_BUILDX"] = str(tmp_path / "nowhere" / "buildx")
    code, log, outputs, _ = go(runner_env, FakeEngine())
    assert code == 1 and outputs["status"] == "failed"
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "buildx was not found at" in error and "DEPLOYER_BUILDX" in error
    assert "Traceback" not in log


def test_git_config_with_a_token_header_is_left_out_of_the_context(
    runner_env: dict[str, str],
) -> None:
    workspace = Path(runner_env["GITHUB_WORKSPACE"])
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text(
        '[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic eC1hY2Nlc3M=\n'
    )
    (workspace / ".dockerignore").write_text("node_modules\n")
    engine = FakeEngine()
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    warning = next(c for c in commands(log) if c.startswith("::warning"))
    assert ".git/config" in warning and "persist-credentials: false" in warning
    [call] = engine.buildx_calls()
    assert call["dockerignore"] == "node_modules\n.git\n"  # all of .git (issue 17.5)
    dockerfile = next(a for a in call["argv"] if a.startswith("--file=")).split("=", 1)[1]
    assert dockerfile != str(workspace / "Dockerfile")
    # excluded by the user already: nothing to do, no warning
    (workspace / ".dockerignore").write_text(".git\n")
    code, log, _, _ = go(runner_env, engine)
    assert code == 0 and not [c for c in commands(log) if c.startswith("::warning")]
    assert engine.buildx_calls()[0]["dockerignore"] is None


def test_build_log_lines_are_whole_and_a_huge_line_is_cut(runner_env: dict[str, str]) -> None:
    engine = FakeEngine(
        [{"lines": ["#1 [1/1] FROM scratch", "#1 0.1 half a line"], "raw_bytes": 1 << 20}]
    )
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    block = log.split("::stop-commands::", 1)[1].split("\n")[1:4]
    assert block[:2] == ["#1 [1/1] FROM scratch", "#1 0.1 half a line"]
    assert block[2].endswith(f"[... {(1 << 20) - MAX_LINE} more bytes of this line not shown]")
    assert len(block[2]) < MAX_LINE + 100
    assert "Building ghcr.io/acme/web:v1 (context ., Dockerfile) ..." in log


def test_log_splitter_is_linear_and_bounded_for_16_mib_without_a_newline() -> None:
    splitter = LineSplitter()
    chunk = b"y" * READ_CHUNK
    started = time.monotonic()
    for _ in range((16 << 20) // READ_CHUNK):
        assert splitter.feed(chunk) == []
        assert len(splitter._pending) <= MAX_LINE
    [line] = splitter.flush()
    took = time.monotonic() - started
    assert line.startswith("y" * 100) and line.endswith(
        f"{(16 << 20) - MAX_LINE} more bytes of this line not shown]"
    )
    assert took < 5, f"{took:.1f} s"  # the bound (was 69 s); typically ~0.05 s


def test_log_splitter_joins_lines_split_across_chunks() -> None:
    splitter = LineSplitter()
    got = splitter.feed(b"#1 [1/2] FROM") + splitter.feed(b" scratch\n#1 0.1 half a li")
    got += splitter.feed(b"ne\r\n\xe2\x82") + splitter.feed(b"\xac\n") + splitter.flush()
    assert got == ["#1 [1/2] FROM scratch", "#1 0.1 half a line\r", "€"]


def test_a_token_inside_a_cache_entry_is_masked(runner_env: dict[str, str]) -> None:
    token = "gha-inline-token-123456"
    runner_env["INPUT_CACHE-FROM"] = f"type=gha,url=https://cache.example/,token={token}"
    engine = FakeEngine([{"lines": [*SUCCESS, f"#3 0.3 cache said {token}"]}])
    code, log, _, _ = go(runner_env, engine)
    assert code == 0, log
    assert f"::add-mask::{token}" in log and token not in without_masks(log)


def test_error_details_stay_small_whatever_the_build_printed(runner_env: dict[str, str]) -> None:
    huge = "z" * 100_000
    failure = failing_run("[2/2] RUN big", "exit code: 1", output=huge)
    code, _, _, summary = go(runner_env, FakeEngine([failure]))
    assert code == 1
    assert "zzzz" in summary and len(summary) < 20_000
