"""Hostile and malformed inputs: a clear ConfigError naming the input, never a crash.

Property tests feed any text to every input of action.yml, through ``load_config``
and through the whole ``run`` (fake engine, fake deploy). Kubeconfig bombs must
cost bounded time. See docs/faults.md for the table of what the user sees.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.config import INPUTS, Config, input_env_name, load_config
from deployer.errors import ConfigError
from deployer.kubeconfig import MAX_BYTES, credentials_in
from deployer.pipeline import run
from deployer.rollout import RolloutResult
from tests.unit.fake_buildx import install
from tests.unit.test_actions import commands, runner_outputs
from tests.unit.test_pipeline import FakeDeploy, FakeEngine, web

ROOT = Path(__file__).resolve().parents[2]
ACTION_OUTPUTS = set(yaml.safe_load((ROOT / "action.yml").read_text())["outputs"])

# Text a hostile workflow (or a pull request's branch name, commit message, ...) could
# put into an input: workflow commands, CR/LF, escapes, delimiters, NUL, huge values.
HOSTILE = [
    "::add-mask::x",
    "::error::forged",
    "::set-output name=status::succeeded",
    "a\nstatus=succeeded",
    "a\r\nimage<<EOF\nevil\nEOF",
    "%0A::error::x",
    "ghadelimiter_00000000-0000-0000-0000-000000000000",
    "x\x00y",
    "../../etc/passwd",
    "/etc/passwd",
    "`rm -rf /`",
    "${{ secrets.X }}",
    "a" * 70_000,
    "\u202e\u200b\ufeff",
    "",
    " ",
    "\t\n",
    "-1",
    "9" * 400,
    "nan",
    "inf",
    "1e309s",
    "[" * 5000,
    "*a",
]
ANY_TEXT = st.one_of(st.text(), st.sampled_from(HOSTILE), st.text(alphabet=":%\r\n=<>,\\{}[]&*!"))
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def base_env(workspace: Path, files: Path) -> dict[str, str]:
    (files / "output").write_text("")
    (files / "summary").write_text("")
    return {
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(files / "output"),
        "GITHUB_STEP_SUMMARY": str(files / "summary"),
        "GITHUB_SHA": "0123456789abcdef0123",
        "GITHUB_REPOSITORY": "acme/web",
        input_env_name("image"): "ghcr.io/acme/web",
        input_env_name("registry-username"): "bob",
        input_env_name("registry-password"): "hostile-test-password",
        input_env_name("deployments"): "web",
        "DEPLOYER_BUILDX": str(install(files.parent / "bin")),  # the fake of fake_buildx.py
    }


@pytest.fixture(scope="module")
def dirs() -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    workspace, files = root / "ws", root / "files"
    workspace.mkdir()
    files.mkdir()
    (workspace / "Dockerfile").write_text("FROM scratch\n")
    return workspace, files


def load(env: dict[str, str]) -> Config | ConfigError:
    try:
        return load_config(env)
    except ConfigError as e:
        return e


@pytest.mark.parametrize("name", list(INPUTS))
@PROPERTY
@given(value=ANY_TEXT)
def test_any_text_in_any_input_is_a_config_or_a_config_error(
    dirs: tuple[Path, Path], name: str, value: str
) -> None:
    env = base_env(*dirs)
    env[input_env_name(name)] = value
    started = time.monotonic()
    result = load(env)
    assert time.monotonic() - started < 2
    if isinstance(result, ConfigError):
        assert result.problems
        for problem in result.problems:
            assert problem.input in INPUTS
            assert problem.message().startswith(f"Input '{problem.input}'")


@pytest.mark.parametrize("name", list(INPUTS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=ANY_TEXT)
def test_any_text_in_any_input_ends_the_run_cleanly(
    dirs: tuple[Path, Path], name: str, value: str
) -> None:
    env = base_env(*dirs)
    env[input_env_name(name)] = value
    out = io.StringIO()
    calls: list[str] = []
    result = RolloutResult("succeeded", (web("succeeded"),))
    code = run(
        env,
        out,
        make_docker=lambda _c: FakeEngine(),
        make_deploy=lambda _c: FakeDeploy(calls, result),
    )
    log = out.getvalue()
    assert code in (0, 1)
    assert "Traceback" not in log
    # Every annotation is one line: a newline in a value cannot start a second command.
    lines = log.split("\n")
    assert all("\r" not in line for line in lines)
    errors = [c for c in commands(log) if c.startswith("::error")]
    assert len(errors) == sum(1 for line in lines if line.startswith("::error"))
    if code == 1:
        assert errors, log[-2000:]
    # The hostile value cannot issue a command, and it cannot add or replace an output.
    for command in commands(log):
        assert command.startswith(
            ("::add-mask::", "::error ", "::error::", "::warning", "::group::", "::endgroup::")
        ), command
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert set(outputs) == ACTION_OUTPUTS


def kubeconfig(**extra: object) -> dict[str, object]:
    config: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "tok-123456789"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    config.update(extra)
    return config


BILLION_LAUGHS = "clusters: []\n" + "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{chr(ord('b') + i)}: &{chr(ord('b') + i)} [{', '.join(['*' + chr(ord('a') + i)] * 9)}]"
            for i in range(8)
        ),
    ]
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("clusters: [unclosed\ncontexts: {", "is not valid YAML"),
        ("- just\n- a list\n", "is not a kubeconfig"),
        (yaml.safe_dump(kubeconfig(**{"current-context": ""})), "has no current-context"),
        (yaml.safe_dump(kubeconfig(**{"current-context": "gone"})), "current-context 'gone'"),
        (yaml.safe_dump(kubeconfig(contexts=5)), "'contexts' section that is not a list"),
        (yaml.safe_dump(kubeconfig(users="x")), "'users' section that is not a list"),
        (BILLION_LAUGHS, "uses YAML aliases"),
        ("clusters: " + "[" * 100_000 + "]" * 100_000, "nests deeper than"),
        ("clusters:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)), "nests deeper"),
        ("clusters: []\nx: " + "a" * MAX_BYTES + "\n", "is larger than 1024 KiB"),
        (
            "clusters:\n" + "- {name: c, cluster: {server: 'https://x'}}\n" * 20_000,
            "YAML nodes",
        ),
        ("!!python/object/apply:os.system ['true']", "is not valid YAML"),
        ("bm90IGEga3ViZWNvbmZpZw=", "looks like base64 but does not decode"),
    ],
    ids=[
        "not-yaml",
        "not-a-mapping",
        "no-current-context",
        "current-context-missing",
        "contexts-not-a-list",
        "users-not-a-list",
        "billion-laughs",
        "deeply-nested-flow",
        "deeply-nested-block",
        "over-1-MiB",
        "too-many-nodes",
        "python-tag",
        "broken-base64",
    ],
)
def test_bad_kubeconfig_is_a_clear_config_error_in_bounded_time(
    dirs: tuple[Path, Path], text: str, says: str
) -> None:
    env = base_env(*dirs)
    started = time.monotonic()
    credentials_in(text)  # runs first, before validation: must not raise either
    for value in (text, base64.b64encode(text.encode()).decode()):
        if len(value) > 2 * MAX_BYTES:
            continue
        env[input_env_name("kubeconfig")] = value
        result = load(env)
        assert isinstance(result, ConfigError), "accepted"
        [problem] = result.problems
        assert problem.input == "kubeconfig"
        if value is text or "base64" not in says:
            assert says in problem.problem or "larger than" in problem.problem, problem.problem
        # The message never quotes the kubeconfig's content.
        assert "tok-123456789" not in result.message
    assert time.monotonic() - started < 2


def test_billion_laughs_through_the_whole_run_is_bounded(dirs: tuple[Path, Path]) -> None:
    env = base_env(*dirs)
    env[input_env_name("kubeconfig")] = BILLION_LAUGHS
    out = io.StringIO()
    started = time.monotonic()
    code = run(env, out, make_docker=lambda _c: FakeEngine())
    assert time.monotonic() - started < 2
    assert code == 1
    [error] = [c for c in commands(out.getvalue()) if c.startswith("::error")]
    assert "Input 'kubeconfig': uses YAML aliases" in error


# -- injection: untrusted text that reaches the log, the outputs and the summary ----------------

INJECTIONS = [
    "::add-mask::stolen",
    "::error::forged",
    "::set-output name=status::succeeded",
    "x\n::error::forged-after-LF",
    "x\r::add-mask::stolen-after-CR",
    "x%0A::error::forged-escaped",
    "a\nstatus<<EOF\nsucceeded\nEOF",
    "ghadelimiter_2c4d6e8f-0000-4000-8000-000000000000\nstatus=succeeded",
    "::stop-commands::x\n::error::forged-stop",
    "  ::warning::indented",
    "::endgroup::",
]
ALLOWED = ("::add-mask::", "::error ", "::warning ", "::group::", "::endgroup::")


def assert_inert(log: str, *, errors: int | None = None) -> None:
    """Only our own commands run: nothing injected became a command of its own."""
    executed = commands(log)
    for command in executed:
        assert command.startswith(ALLOWED), command
        if command.startswith("::add-mask::"):
            assert "stolen" not in command, command
    assert "::endgroup::" not in [c for c in executed if c.count("::") > 2]
    if errors is not None:
        assert len([c for c in executed if c.startswith("::error")]) == errors


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize("name", ["tags", "labels", "build-args", "target", "deployments"])
def test_hostile_values_in_inputs_issue_no_command_and_no_output(
    dirs: tuple[Path, Path], name: str, payload: str
) -> None:
    env = base_env(*dirs)
    env[input_env_name(name)] = (
        payload if name in ("tags", "target", "deployments") else (f"KEY={payload}")
    )
    out = io.StringIO()
    result = RolloutResult("succeeded", (web("succeeded"),))
    code = run(
        env,
        out,
        make_docker=lambda _c: FakeEngine(),
        make_deploy=lambda _c: FakeDeploy([], result),
    )
    assert_inert(out.getvalue())
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert set(outputs) == ACTION_OUTPUTS
    assert outputs["status"] == ("succeeded" if code == 0 else "failed")


@pytest.mark.parametrize("payload", INJECTIONS)
def test_hostile_commit_message_and_event_payload(
    dirs: tuple[Path, Path], tmp_path: Path, payload: str
) -> None:
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"head_commit": {"message": payload, "timestamp": payload, "id": payload}})
    )
    env = base_env(*dirs)
    env["GITHUB_EVENT_PATH"] = str(event)
    env["GITHUB_REF"] = "refs/heads/" + payload
    out = io.StringIO()
    code = run(
        env,
        out,
        make_docker=lambda _c: FakeEngine(),
        make_deploy=lambda _c: FakeDeploy([], RolloutResult("succeeded", (web("succeeded"),))),
    )
    assert code == 0, out.getvalue()
    assert_inert(out.getvalue(), errors=0)
    assert set(runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())) == ACTION_OUTPUTS


HOSTILE_TEXT = "\n".join(INJECTIONS) + "\n```\n<img src=x onerror=alert(1)>|cell|"


class HostileKube:
    """A Kube whose Warning events and pod logs are hostile."""

    def request(self, method: str, resource: object, **kwargs: object) -> object:
        if kwargs.get("sub") == "log":
            return HOSTILE_TEXT
        return {
            "items": [
                {"type": "Warning", "reason": "BackOff::error::r", "message": HOSTILE_TEXT},
                {
                    "type": "Warning",
                    "reason": "Failed",
                    "message": "::add-mask::stolen",
                    "count": 9,
                },
            ]
        }


def test_hostile_pod_logs_and_events_through_the_rollout_report(tmp_path: Path) -> None:
    import threading

    from deployer.actions import ActionsIO
    from deployer.diagnose import diagnose_pod
    from deployer.rollout import Stage, _Target

    env = base_env(*_dirs(tmp_path))
    config = load_config(env)
    out = io.StringIO()
    actions = ActionsIO(out, env)
    kube: Any = HostileKube()
    stage = Stage(
        config, "ghcr.io/acme/web@sha256:" + "ab" * 32, kube, actions, threading.Event(), 0
    )
    target = _Target("prod", "web", ("app",), None, None)
    stage.targets.append(target)
    target.outcome, target.reason = "failed", "pod web-1: ImagePullBackOff: " + HOSTILE_TEXT
    target.diagnosis = diagnose_pod(kube, "prod", "pod web-1: " + HOSTILE_TEXT, "web-1", "app")
    assert target.diagnosis.events and target.diagnosis.log
    stage._report_failures([target])
    log = out.getvalue()
    assert_inert(log, errors=1)
    assert "::error::forged-after-LF" in log  # shown, inside stop-commands
    result = stage._result()
    from deployer.report import RunReport, outputs, summary

    report = RunReport(status=result.status, rollout=result)
    actions.set_outputs(outputs(report))
    actions.append_summary(summary(report))
    written = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert set(written) == ACTION_OUTPUTS
    assert written["status"] == "failed"
    assert json.loads(written["deployments"])[0]["reason"] == target.reason
    text = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    # Table cells are HTML-escaped; the diagnosis sits in a fence longer than its ```.
    assert "<img" not in text.split("####")[0]
    assert "````text\n" in text


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    workspace, files = tmp_path / "ws", tmp_path / "files"
    workspace.mkdir()
    files.mkdir()
    (workspace / "Dockerfile").write_text("FROM scratch\n")
    return workspace, files
