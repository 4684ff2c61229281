"""The whole run with a fake engine passed in: outputs, summary, exit codes, errors."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import ConfigError, InputProblem
from deployer.pipeline import run
from deployer.rollout import DeploymentResult, RolloutResult
from tests.unit.test_actions import commands, runner_outputs

DIGEST = "sha256:" + "ab" * 32
PASSWORD = "Pa55-w0rd-unit-secret"


class FakeEngine:
    """Stands in for docker.APIClient: streams like the engine, records every call."""

    def __init__(
        self,
        build_stream: list[dict[str, Any]] | None = None,
        push_streams: list[list[dict[str, Any]]] | None = None,
    ) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.build_stream = build_stream or [
            {"stream": "Step 1/2 : FROM scratch\n"},
            {"stream": "::add-mask::evil\n"},
            {"aux": {"ID": "sha256:" + "cd" * 32}},
            {"stream": "Successfully built cdcdcdcdcdcd\n"},
        ]
        self.push_streams = push_streams or []
        self.distribution_digest = DIGEST

    def build(self, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        self.calls.append(("build", kwargs))
        yield from self.build_stream

    def tag(self, image: str, repository: str, tag: str | None = None) -> bool:
        self.calls.append(("tag", (image, repository, tag)))
        return True

    def push(self, repository: str, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        self.calls.append(("push", (repository, kwargs)))
        if self.push_streams:
            yield from self.push_streams.pop(0)
            return
        yield {"status": "The push refers to repository [x]"}
        yield {"status": f"{kwargs['tag']}: digest: {DIGEST} size: 528"}
        yield {"aux": {"Tag": kwargs["tag"], "Digest": DIGEST, "Size": 528}}

    def inspect_distribution(self, image: str, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("inspect_distribution", image))
        return {"Descriptor": {"digest": self.distribution_digest, "size": 528}}

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


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
    out = io.StringIO()
    code = run(env, out, make_docker=lambda _config: engine, **kwargs)
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    return code, out.getvalue(), outputs, Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def test_build_and_push(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 0
    assert outputs["image"] == f"ghcr.io/acme/web@{DIGEST}"
    assert outputs["digest"] == DIGEST
    assert outputs["image-id"] == "sha256:" + "cd" * 32
    assert json.loads(outputs["tags"]) == ["ghcr.io/acme/web:v1", "ghcr.io/acme/web:latest"]
    assert outputs["status"] == "succeeded"
    assert float(outputs["duration"]) >= 0
    build = dict(engine.calls)["build"]
    assert build["tag"] == "ghcr.io/acme/web:v1"
    assert build["labels"]["org.opencontainers.image.revision"] == "0123456789abcdef0123"
    assert build["labels"]["org.opencontainers.image.source"] == "https://github.com/acme/web"
    assert ("tag", ("sha256:" + "cd" * 32, "ghcr.io/acme/web", "latest")) in engine.calls
    pushes = [args for name, args in engine.calls if name == "push"]
    assert [p[1]["tag"] for p in pushes] == ["v1", "latest"]
    assert pushes[0][1]["auth_config"]["username"] == "bob"
    assert ("inspect_distribution", f"ghcr.io/acme/web@{DIGEST}") in engine.calls
    # the build log's ::add-mask:: was printed inertly
    assert "::add-mask::evil" not in commands(log)
    assert f"`{DIGEST}`" in summary and summary.startswith("## ✅ Succeeded")


def test_bad_input_builds_nothing(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    runner_env["INPUT_IMAGE"] = "ghcr.io/Acme/web"
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 1
    assert engine.calls == []
    errors = [c for c in commands(log) if c.startswith("::error")]
    assert len(errors) == 1 and "Input 'image'" in errors[0]
    assert outputs["status"] == "failed"
    assert "Invalid input" in summary
    assert "Traceback" not in log


def test_failed_build_step_and_log_tail(runner_env: dict[str, str]) -> None:
    engine = FakeEngine(
        build_stream=[
            {"stream": "Step 1/2 : FROM scratch\n"},
            {"stream": "Step 2/2 : RUN exit 3\n"},
            {"stream": "oops from the build\n"},
            {
                "error": "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
                "errorDetail": {
                    "code": 3,
                    "message": "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
                },
            },
        ]
    )
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 1
    assert "push" not in engine.names()
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "Step 2/2 : RUN exit 3" in error and "non-zero code: 3" in error
    assert "oops from the build" in summary
    assert outputs["status"] == "failed" and outputs["digest"] == ""


def test_push_error_in_stream_is_never_success(runner_env: dict[str, str]) -> None:
    engine = FakeEngine(
        push_streams=[
            [{"error": "manifest invalid", "errorDetail": {"message": "manifest invalid"}}]
        ]
    )
    code, _, outputs, _ = go(runner_env, engine)
    assert code == 1
    assert outputs["status"] == "failed" and outputs["image"] == ""


def test_wrong_password_is_not_retried_and_names_registry_and_user(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(
        push_streams=[[{"errorDetail": {"message": "unauthorized: authentication required"}}]]
    )
    code, log, _, summary = go(runner_env, engine)
    assert code == 1
    assert engine.names().count("push") == 1
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "ghcr.io refused user 'bob'" in error
    assert PASSWORD not in without_masks(log) and PASSWORD not in summary


def test_transient_errors_are_retried_with_a_cap(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    flaky = [
        {"errorDetail": {"message": "received unexpected HTTP status: 503 Service Unavailable"}}
    ]
    engine = FakeEngine(push_streams=[flaky, flaky])
    code, _, outputs, _ = go(runner_env, engine)
    assert code == 0, outputs
    assert slept == [1.0, 2.0]
    engine = FakeEngine(push_streams=[flaky] * 10)
    slept.clear()
    code, log, _, _ = go(runner_env, engine)
    assert code == 1
    assert engine.names().count("push") == 4
    assert "after 4 attempts" in log


def test_push_without_digest_is_not_success(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    engine = FakeEngine(push_streams=[[{"status": "done"}]] * 10)
    code, log, _, _ = go(runner_env, engine)
    assert code == 1 and "without a digest" in log


def test_digest_read_back_must_match(runner_env: dict[str, str]) -> None:
    engine = FakeEngine()
    engine.distribution_digest = "sha256:" + "ef" * 32
    code, log, _, _ = go(runner_env, engine)
    assert code == 1 and "not the pushed digest" in log


def test_build_false_resolves_the_digest(runner_env: dict[str, str]) -> None:
    runner_env["INPUT_BUILD"] = "false"
    engine = FakeEngine()
    code, _, outputs, _ = go(runner_env, engine)
    assert code == 0
    assert engine.names() == ["inspect_distribution"]
    assert outputs["image"] == f"ghcr.io/acme/web@{DIGEST}"


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
    [("succeeded", 0), ("planned", 0), ("rolled-back", 1), ("failed", 1), ("cancelled", 1)],
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


def test_sigterm_mid_build_cancels(runner_env: dict[str, str]) -> None:
    class SlowEngine(FakeEngine):
        def build(self, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
            yield {"stream": "Step 1/1 : RUN sleep 60\n"}
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)
            yield {"aux": {"ID": "sha256:" + "cd" * 32}}

    engine = SlowEngine()
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1
    assert outputs["status"] == "cancelled"
    assert "SIGTERM" in log
    assert "push" not in engine.names()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_secrets_never_reach_log_outputs_or_summary(runner_env: dict[str, str]) -> None:
    runner_env["INPUT_BUILD-ARGS"] = f"TOKEN={PASSWORD}"
    engine = FakeEngine(
        push_streams=[[{"errorDetail": {"message": f"denied: bob:{PASSWORD} rejected"}}]]
    )
    code, log, outputs, summary = go(runner_env, engine)
    assert code == 1
    visible = without_masks(log) + json.dumps(outputs) + summary
    assert PASSWORD not in visible
    assert "::add-mask::" + PASSWORD in log


def test_build_log_lines_split_across_chunks_print_whole(runner_env: dict[str, str]) -> None:
    engine = FakeEngine(
        build_stream=[
            {"stream": "Step 1/2 : FROM scratch"},
            {"stream": "\n"},
            {"stream": " ---> Running in abc\nhalf a li"},
            {"stream": "ne\n"},
            {"aux": {"ID": "sha256:" + "cd" * 32}},
        ]
    )
    code, log, _, _ = go(runner_env, engine)
    assert code == 0
    block = log.split("::stop-commands::", 1)[1].split("\n")[1:4]
    assert block == ["Step 1/2 : FROM scratch", " ---> Running in abc", "half a line"]
    assert "Building ghcr.io/acme/web:v1 (context ., Dockerfile) ..." in log
