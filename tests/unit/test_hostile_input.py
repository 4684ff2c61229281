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
    # (Our notice, e.g. an image lower-cased, quotes the value escaped, after its title.)
    for command in commands(log):
        assert command.startswith(
            (
                "::add-mask::",
                "::error ",
                "::error::",
                "::warning",
                "::notice title=",
                "::group::",
                "::endgroup::",
            )
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
        (
            yaml.safe_dump(kubeconfig(**{"current-context": "tok-gone"})),
            "has a current-context that none of its contexts is named",
        ),
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
        ("clusters: []\nx: !!timestamp x\n", "has a value YAML cannot read"),
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
        "bad-timestamp",
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
        assert "tok-" not in result.message
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
    from deployer.actions import ActionsIO
    from deployer.rollout.diagnose import diagnose_pod
    from deployer.rollout.kinds import DEPLOYMENT
    from deployer.rollout.result import report_failures, result_of
    from deployer.rollout.state import RunState, Workload

    env = base_env(*_dirs(tmp_path))
    out = io.StringIO()
    actions = ActionsIO(out, env)
    kube: Any = HostileKube()
    target = Workload(DEPLOYMENT, "prod", "web", ("app",), None, None)
    state = RunState(workloads=[target])
    target.fail(
        "pod web-1: ImagePullBackOff: " + HOSTILE_TEXT,
        diagnose_pod(kube, "prod", "pod web-1: " + HOSTILE_TEXT, "web-1", "app"),
    )
    assert target.diagnosis.events and target.diagnosis.log
    report_failures(actions, [target])
    log = out.getvalue()
    assert_inert(log, errors=1)
    assert "::error::forged-after-LF" in log  # shown, inside stop-commands
    result = result_of(state, "ghcr.io/acme/web@sha256:" + "ab" * 32)
    from deployer.report import RunReport, outputs, summary

    report = RunReport(status=result.status, rollout=result)
    actions.set_outputs(outputs(report, redact=actions.redact))
    actions.append_summary(summary(report, redact=actions.redact))
    written = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert set(written) == ACTION_OUTPUTS
    assert written["status"] == "failed"
    assert json.loads(written["deployments"])[0]["reason"] == target.reason
    text = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    # Outside code spans and fences nothing of it remains; the diagnosis sits in a
    # fence longer than its ```.
    assert "<img" not in text.split("````text\n")[0]
    assert "````text\n" in text


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    workspace, files = tmp_path / "ws", tmp_path / "files"
    workspace.mkdir()
    files.mkdir()
    (workspace / "Dockerfile").write_text("FROM scratch\n")
    return workspace, files


# -- manifests: the same guards as the kubeconfig (issue 11, item 4) ----------------------

MANIFEST_HEAD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n"
# 6 levels of ten, ~500 bytes: a million nodes (seconds) to load before.
MANIFEST_LAUGHS = (
    MANIFEST_HEAD
    + "data:\n"
    + "\n".join(
        [
            '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
            *(
                f"  {chr(ord('b') + i)}: &{chr(ord('b') + i)} "
                f"[{', '.join(['*' + chr(ord('a') + i)] * 10)}]"
                for i in range(5)
            ),
        ]
    )
)


class ManifestDeploy(FakeDeploy):
    """The deploy stage's preflight as far as it touches files: it loads the manifests."""

    def check(self, config: Config, io: Any, cancel: Any) -> None:
        from deployer.manifests import load_manifests

        super().check(config, io, cancel)
        load_manifests(
            config.workspace, config.manifests, config.image.repository, "ghcr.io/acme/web@x"
        )


def run_with_manifest(tmp_path: Path, text: str) -> tuple[int, str, dict[str, str], str, float]:
    workspace, files = _dirs(tmp_path)
    (workspace / "k8s.yaml").write_text(text)
    env = base_env(workspace, files)
    env[input_env_name("manifests")] = "k8s.yaml"
    out = io.StringIO()
    started = time.monotonic()
    code = run(
        env,
        out,
        make_docker=lambda _c: FakeEngine(),
        make_deploy=lambda _c: ManifestDeploy([], RolloutResult("succeeded", (web("succeeded"),))),
    )
    elapsed = time.monotonic() - started
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    return code, out.getvalue(), outputs, Path(env["GITHUB_STEP_SUMMARY"]).read_text(), elapsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (MANIFEST_LAUGHS, "uses YAML aliases, which deployer does not accept in manifests"),
        (MANIFEST_HEAD + "data: " + "[" * 100_000 + "]" * 100_000, "nests deeper than 100"),
        (
            MANIFEST_HEAD + "data:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)),
            "nests deeper than 100",
        ),
        (
            MANIFEST_HEAD + "data: [" + "0," * 1_100_000 + "0]\n",
            "has more than 1000000 YAML nodes",
        ),
        (MANIFEST_HEAD + "data: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
    ids=["aliases", "deeply-nested-flow", "deeply-nested-block", "too-many-nodes", "python-tag"],
)
def test_a_manifest_bomb_is_an_input_error_in_bounded_time(
    tmp_path: Path, text: str, says: str
) -> None:
    code, log, outputs, summary, elapsed = run_with_manifest(tmp_path, text)
    assert elapsed < 3, f"{elapsed:.1f} s"
    assert code == 1
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert error.startswith(
        "::error title=Invalid input 'manifests'::Input 'manifests': 'k8s.yaml'"
    )
    assert says in error
    assert "Traceback" not in log
    assert set(outputs) == ACTION_OUTPUTS and outputs["status"] == "failed"
    assert "Invalid input" in summary


DOCUMENT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
# Values the safe loader turns into something other than JSON, or fails to construct.
YAML_VALUES = [
    f"x: {v}\n"
    for v in (
        "!!set {a}",
        "!!binary aGVsbG8=",
        "2001-13-45",
        "2001-12-14t21:59:43.10-05:00",
        "!!int x",
        "!!float x",
        "0x_",
        "1" * 5000,
        "!!timestamp x",
        ".nan",
        "!!str",
        "!<tag:yaml.org,2002:python/none> ''",
    )
]
MANIFEST_TEXT = st.one_of(
    st.text(),
    st.text(alphabet="[]{}&*!|>-:,#'\"\n ?%@`"),
    DOCUMENT.map(lambda d: yaml.safe_dump(d) if d is not None else ""),
    st.builds(
        lambda doc, junk: MANIFEST_HEAD + yaml.safe_dump({"data": doc}) + junk,
        DOCUMENT,
        st.sampled_from(
            ["", "---\n", "--- [\n", "...\n", "*x\n", "&a b\n", "\0", "\ufeff", *YAML_VALUES]
        ),
    ),
)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text=MANIFEST_TEXT)
def test_any_manifest_text_loads_or_is_a_clear_input_error(text: str) -> None:
    from deployer.manifests import load_manifests

    with tempfile.TemporaryDirectory() as root:
        workspace = Path(root)
        (workspace / "k8s.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        started = time.monotonic()
        result: list[Any] | ConfigError
        try:
            result = load_manifests(workspace, ("k8s.yaml",), "ghcr.io/acme/web", "img@x")
        except ConfigError as e:
            result = e
        if isinstance(result, ConfigError):
            assert result.problems and {p.input for p in result.problems} == {"manifests"}
        else:
            for m in result:  # what is sent as the request body
                assert m.kind and m.name and m.api_version
                json.dumps(m.doc)
        assert time.monotonic() - started < 1


# -- the last resort: a bug still ends in one error, the outputs and the summary ----------


class BuggyDeploy(FakeDeploy):
    def check(self, config: Config, io: Any, cancel: Any) -> None:
        raise KeyError("value-from-a-server-that-may-hold-hostile-password")

    @classmethod
    def factory(cls, _config: Config) -> BuggyDeploy:
        return cls([])


def test_an_unexpected_exception_is_one_error_with_outputs_and_summary(
    dirs: tuple[Path, Path],
) -> None:
    env = base_env(*dirs)
    out = io.StringIO()
    code = run(env, out, make_docker=lambda _c: FakeEngine(), make_deploy=BuggyDeploy.factory)
    log = out.getvalue()
    assert code == 1
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert error.startswith(
        "::error title=Internal error::deployer stopped on an unexpected KeyError"
    )
    assert "Traceback" not in log
    # Where it happened goes to the debug log; what the exception said goes nowhere.
    assert any(c.startswith("::debug::KeyError at ") and " in check" in c for c in commands(log))
    assert "value-from-a-server" not in log
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert set(outputs) == ACTION_OUTPUTS and outputs["status"] == "failed"
    text = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "Internal error" in text and "This is a bug in deployer" in text
    assert "value-from-a-server" not in text


@pytest.mark.parametrize("variable", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"])
@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_missing_runner_file_directory_is_a_warning_and_the_exit_code_stands(
    tmp_path: Path, variable: str, outcome: str
) -> None:
    env = base_env(*_dirs(tmp_path))
    env[variable] = str(tmp_path / "gone" / "file")
    result = RolloutResult(outcome, (web(outcome),))
    out = io.StringIO()
    code = run(
        env,
        out,
        make_docker=lambda _c: FakeEngine(),
        make_deploy=lambda _c: FakeDeploy([], result),
    )
    log = out.getvalue()
    assert code == (0 if outcome == "succeeded" else 1)
    warnings = [c for c in commands(log) if c.startswith("::warning")]
    assert any(f"could not be written to {variable}" in w for w in warnings), log
    assert f"The run's status is {outcome}" in log
    assert log.splitlines()[-1].startswith(f"deployer: {outcome} in ")
    other = "GITHUB_STEP_SUMMARY" if variable == "GITHUB_OUTPUT" else "GITHUB_OUTPUT"
    assert Path(env[other]).read_text()  # the other file is still written
