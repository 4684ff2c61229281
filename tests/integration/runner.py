"""Run the action's image exactly the way the GitHub Actions runner runs a container action.

What the runner does (docs/development.md, and the runner's ContainerActionHandler):

* ``docker run --name <unique> --label <x> --workdir /github/workspace --rm``;
* every input declared in action.yml as ``-e INPUT_<NAME>`` (upper case, spaces to
  ``_``, hyphens KEPT), defaults filled in from action.yml, an unset input as an
  empty string; values travel in the docker CLI's environment (``-e NAME`` without a
  value), never on the command line;
* the ``GITHUB_*``/``RUNNER_*`` variables, ``GITHUB_ACTIONS=true``, ``CI=true`` and
  ``HOME=/github/home``; GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_ENV, GITHUB_PATH
  and GITHUB_STATE are fresh files in ``/github/file_commands`` for every step;
* the engine's socket mounted at ``/var/run/docker.sock`` and NO ``DOCKER_HOST``;
  ``/github/workspace``, ``/github/home``, ``/github/workflow`` (event.json),
  ``/github/file_commands`` and ``/github/runner_temp`` mounted from the host.

One difference, on purpose: ``--network host``. The runner puts the container on the
job's network; here the registry and the kube-apiserver listen on the host's
loopback (127.0.0.1), which from inside a bridged container is the container
itself. Pushes are made by the engine, so the registry would work either way; the
kube-apiserver would not.

Use from tests::

    runner = ActionRunner(tmp_path, docker_host=settings["DOCKER_HOST"])
    result = runner.run({"image": "127.0.0.1:5000/web", "kubeconfig": text, ...})
    result.code, result.outputs["status"], result.summary

``runner.start(inputs)`` returns a :class:`RunningAction` (a ``subprocess.Popen``
underneath) for tests that must act while it runs, e.g. :meth:`RunningAction.cancel`,
the runner's cancel sequence.

CLI (used by scripts/demo.sh)::

    python3 -m tests.integration.runner --workspace DIR --input image=... \\
        --input-file kubeconfig=PATH --input-env registry-password=VAR --outputs-json FILE

streams the log the way the runner's log view shows it (masked secrets, groups,
annotations), then prints the outputs and the job summary; exits with the
action's exit code.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from tests.conftest import ROOT, read_testenv
from tests.unit.test_actions import commands, runner_outputs

__all__ = [
    "IMAGE",
    "LABEL",
    "ActionResult",
    "ActionRunner",
    "RunningAction",
    "action_inputs",
    "input_env_name",
    "render_log",
]

IMAGE = "deployer-action:local"
LABEL = "deployer.test-harness"  # every harness container has it: `docker ps -f label=...`
WORKSPACE = "/github/workspace"
# The runner's cancel sequence: SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after that.
CANCEL_SIGTERM_AFTER = 7.5
CANCEL_KILL_AFTER = 2.5


def action_inputs(action_yml: Path = ROOT / "action.yml") -> dict[str, str]:
    """Input name -> default, as declared in action.yml (no default: empty string)."""
    data = yaml.safe_load(action_yml.read_text())
    return {
        name: "" if spec is None or spec.get("default") is None else str(spec["default"])
        for name, spec in (data.get("inputs") or {}).items()
    }


def input_env_name(name: str) -> str:
    """The runner's name for an input: ``INPUT_`` + upper case, spaces -> ``_``, hyphens kept."""
    return "INPUT_" + name.replace(" ", "_").upper()


def _socket_path(docker_host: str) -> str:
    if not docker_host.startswith("unix://"):
        raise ValueError(f"the harness mounts a unix socket; DOCKER_HOST is {docker_host!r}")
    return docker_host.removeprefix("unix://")


@dataclass
class ActionResult:
    """One finished step: what the runner would have afterwards."""

    name: str
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    seconds: float
    argv: list[str] = field(repr=False)

    @property
    def log(self) -> str:
        """The step's log as the runner shows it (both streams; commands on stdout)."""
        return self.stdout + self.stderr

    @property
    def commands(self) -> list[str]:
        """Workflow commands the runner would execute (stop-commands blocks skipped)."""
        return commands(self.stdout)


class RunningAction:
    """A ``docker run`` in the background; its lines are collected as they come."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        files: dict[str, Path],
        docker_env: dict[str, str],
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self._files = files
        self._docker_env = docker_env
        self._echo = echo
        self._lines: list[str] = []
        self._err: list[str] = []
        self._changed = threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line)
                self._changed.notify_all()
            if self._echo is not None:
                self._echo(line)
        stream.close()

    @property
    def stdout(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        """Block until a stdout line matches the regex ``pattern``; return it."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self._lines)
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"the action exited ({self.proc.returncode}) before a line matched "
                        f"{pattern!r}; log:\n{''.join(self._lines + self._err)}"
                    )
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no line matched {pattern!r} in {timeout} s; log:\n{''.join(self._lines)}"
                    )
                self._changed.wait(min(left, 0.5))

    def _kill(self, signal_name: str | None) -> None:
        argv = ["docker", "kill", *(["--signal", signal_name] if signal_name else []), self.name]
        # The container may be gone already: that is not an error here.
        subprocess.run(argv, env=self._docker_env, capture_output=True, timeout=30, check=False)

    def cancel(self) -> tuple[float, str]:
        """The runner's cancel: SIGINT, SIGTERM after 7.5 s, kill after another 2.5 s.

        Returns (seconds from the SIGINT until ``docker run`` exited, the last signal
        that was needed: ``INT``, ``TERM`` or ``KILL``).
        """
        start = time.monotonic()
        self._kill("INT")
        if self._exits_by(start + CANCEL_SIGTERM_AFTER):
            return time.monotonic() - start, "INT"
        self._kill("TERM")
        if self._exits_by(start + CANCEL_SIGTERM_AFTER + CANCEL_KILL_AFTER):
            return time.monotonic() - start, "TERM"
        self._kill(None)
        self.proc.wait(timeout=30)
        return time.monotonic() - start, "KILL"

    def _exits_by(self, moment: float) -> bool:
        try:
            self.proc.wait(timeout=max(0.0, moment - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def wait(self, timeout: float | None = None) -> ActionResult:
        """Wait for the step to end (killing it after ``timeout``) and collect everything."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(None)
            self.proc.wait(timeout=30)
            for reader in self._readers:
                reader.join(10)
            raise AssertionError(
                f"the action did not finish in {timeout} s; log:\n{self.stdout}"
            ) from None
        for reader in self._readers:
            reader.join(10)
        seconds = time.monotonic() - self.started
        output_file = self._files["GITHUB_OUTPUT"]
        summary_file = self._files["GITHUB_STEP_SUMMARY"]
        return ActionResult(
            name=self.name,
            code=self.proc.returncode,
            stdout=self.stdout,
            stderr="".join(self._err),
            outputs=runner_outputs(output_file.read_text(encoding="utf-8")),
            summary=summary_file.read_text(encoding="utf-8"),
            seconds=seconds,
            argv=self.argv,
        )

    def close(self) -> None:
        """Make sure nothing is left running (for ``finally`` blocks)."""
        if self.proc.poll() is None:
            self._kill(None)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck CLI
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(10)


class ActionRunner:
    """A job's worth of runner directories under ``root``; each :meth:`run` is one step.

    ``root`` takes the runner's ``_work`` layout: ``_work/<repo>/<repo>`` is the
    workspace (pass ``workspace`` to use another directory), ``_work/_temp`` holds
    ``_github_home``, ``_github_workflow`` and ``_runner_file_commands``.
    """

    def __init__(
        self,
        root: Path,
        *,
        docker_host: str | None = None,
        image: str = IMAGE,
        workspace: Path | None = None,
        network: str | None = "host",
        github: Mapping[str, str] | None = None,
        event: Mapping[str, object] | None = None,
    ) -> None:
        self.image = image
        self.network = network
        self.docker_host = docker_host or read_testenv().get("DOCKER_HOST") or ""
        if not self.docker_host:
            raise ValueError("no DOCKER_HOST given and none in .testenv/env (make env-up)")
        self.socket = _socket_path(self.docker_host)
        work = root / "_work"
        temp = work / "_temp"
        self.workspace = workspace or work / "web" / "web"
        self.home = temp / "_github_home"
        self.workflow = temp / "_github_workflow"
        self.file_commands = temp / "_runner_file_commands"
        self.runner_temp = temp
        for directory in (self.workspace, self.home, self.workflow, self.file_commands):
            directory.mkdir(parents=True, exist_ok=True)
        sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.github = {
            "GITHUB_JOB": "deploy",
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_REF_NAME": "main",
            "GITHUB_REF_TYPE": "branch",
            "GITHUB_SHA": sha,
            "GITHUB_REPOSITORY": "acme/web",
            "GITHUB_REPOSITORY_OWNER": "acme",
            "GITHUB_RUN_ID": str(int(time.time())),
            "GITHUB_RUN_NUMBER": "1",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_ACTOR": "octocat",
            "GITHUB_TRIGGERING_ACTOR": "octocat",
            "GITHUB_WORKFLOW": "deploy",
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": "https://api.github.com",
            "GITHUB_GRAPHQL_URL": "https://api.github.com/graphql",
            "GITHUB_ACTION": "deploy",
            "GITHUB_ACTION_REPOSITORY": "acme/deployer",
            "GITHUB_ACTION_REF": "v1",
            "GITHUB_WORKSPACE": WORKSPACE,
            "GITHUB_EVENT_PATH": "/github/workflow/event.json",
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "HOME": "/github/home",
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_NAME": "GitHub Actions 2",
            "RUNNER_ENVIRONMENT": "github-hosted",
            "RUNNER_TEMP": "/github/runner_temp",
            "RUNNER_TOOL_CACHE": "/opt/hostedtoolcache",
            "RUNNER_WORKSPACE": "/home/runner/work/web",
        }
        self.github.update(github or {})
        payload = event or {
            "head_commit": {"id": sha, "timestamp": "2026-11-27T00:00:00Z", "message": "change"}
        }
        (self.workflow / "event.json").write_text(json.dumps(payload))
        self.inputs = action_inputs()

    def command(
        self, inputs: Mapping[str, str]
    ) -> tuple[str, list[str], dict[str, str], dict[str, Path]]:
        """The container's name, the ``docker run`` argv, the CLI's environment, the files."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise ValueError(f"not inputs of action.yml: {', '.join(unknown)}")
        name = f"deployer-harness-{uuid.uuid4().hex[:12]}"
        step = uuid.uuid4()
        files = {
            "GITHUB_OUTPUT": self.file_commands / f"set_output_{step}",
            "GITHUB_STEP_SUMMARY": self.file_commands / f"step_summary_{step}",
            "GITHUB_ENV": self.file_commands / f"set_env_{step}",
            "GITHUB_PATH": self.file_commands / f"add_path_{step}",
            "GITHUB_STATE": self.file_commands / f"save_state_{step}",
        }
        for path in files.values():
            path.write_text("")
        container_env = {
            input_env_name(n): str(inputs.get(n, default)) for n, default in self.inputs.items()
        }
        container_env.update(self.github)
        container_env.update({k: f"/github/file_commands/{p.name}" for k, p in files.items()})
        # The docker CLI's own environment: where the engine is, plus the values
        # that `-e NAME` picks up. DOCKER_HOST is for the CLI, never passed in.
        cli_env = {
            **container_env,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DOCKER_HOST": self.docker_host,
        }
        argv = [
            "docker",
            "run",
            "--name",
            name,
            "--label",
            LABEL,
            "--workdir",
            WORKSPACE,
            "--rm",
        ]
        for env_name in container_env:
            # PATH is the CLI's own: a workflow's `env: PATH` goes in by value.
            if env_name == "PATH":
                argv += ["-e", f"PATH={container_env['PATH']}"]
            else:
                argv += ["-e", env_name]
        if self.network:
            argv += ["--network", self.network]
        mounts = [
            (self.socket, "/var/run/docker.sock"),
            (str(self.home), "/github/home"),
            (str(self.workflow), "/github/workflow"),
            (str(self.file_commands), "/github/file_commands"),
            (str(self.runner_temp), "/github/runner_temp"),
            (str(self.workspace), WORKSPACE),
        ]
        for host, inside in mounts:
            argv += ["-v", f"{host}:{inside}"]
        argv.append(self.image)
        return name, argv, cli_env, files

    def start(
        self, inputs: Mapping[str, str], *, echo: Callable[[str], None] | None = None
    ) -> RunningAction:
        name, argv, cli_env, files = self.command(inputs)
        docker_env = {"PATH": cli_env["PATH"], "DOCKER_HOST": self.docker_host}
        return RunningAction(name, argv, cli_env, files, docker_env, echo)

    def run(
        self,
        inputs: Mapping[str, str],
        *,
        timeout: float = 600,
        echo: Callable[[str], None] | None = None,
    ) -> ActionResult:
        running = self.start(inputs, echo=echo)
        try:
            return running.wait(timeout)
        finally:
            running.close()


# -- the runner's log view, for people (the CLI) ---------------------------------------


class LogView:
    """Shows workflow-command lines roughly as the runner's log viewer does.

    ``::add-mask::`` values are hidden from then on (also in the summary);
    groups become "▸ title"; annotations become "Error: ..." etc.; lines between
    ``::stop-commands::TOKEN`` and ``::TOKEN::`` are shown as plain text.
    """

    _COMMAND = re.compile(r"^::([a-z-]+)(?: ([^:]*))?::(.*)$")

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.secrets: set[str] = set()
        self._stopped_by: str | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _unescape(text: str) -> str:
        return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")

    def mask(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __call__(self, line: str) -> None:
        with self._lock:
            shown = self._render(line.rstrip("\n"))
            if shown is not None:
                self.out.write(self.mask(shown) + "\n")
                self.out.flush()

    def _render(self, line: str) -> str | None:
        stripped = line.lstrip()
        if self._stopped_by is not None:
            if stripped == f"::{self._stopped_by}::":
                self._stopped_by = None
                return None
            return line
        match = self._COMMAND.match(stripped)
        if not match:
            return line
        command, props, data = match.groups()
        data = self._unescape(data)
        if command == "add-mask":
            value = data.strip()
            if value:
                self.secrets.add(value)
                self.secrets.update(p.strip() for p in value.splitlines() if p.strip())
            return None
        if command == "stop-commands":
            self._stopped_by = data
            return None
        if command == "group":
            return f"▸ {data}"
        if command == "endgroup":
            return None
        if command in ("error", "warning", "notice"):
            title = ""
            for prop in (props or "").split(","):
                key, _, value = prop.partition("=")
                if key == "title":
                    title = self._unescape(value).replace("%3A", ":").replace("%2C", ",")
            label = command.capitalize()
            return f"{label}: {title + ': ' if title else ''}{data}"
        if command == "debug":
            return None
        return line


def render_log(text: str) -> str:
    """A whole log through :class:`LogView` (masked, commands rendered)."""
    sink = io.StringIO()
    view = LogView(sink)
    for line in text.splitlines():
        view(line)
    return sink.getvalue()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.integration.runner",
        description="Run the action image like the GitHub Actions runner (one step).",
    )
    parser.add_argument("--workspace", type=Path, required=True, help="checkout to mount")
    parser.add_argument("--image", default=IMAGE, help=f"action image (default {IMAGE})")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--input-file", action="append", default=[], metavar="NAME=PATH", help="value from a file"
    )
    parser.add_argument(
        "--input-env",
        action="append",
        default=[],
        metavar="NAME=VAR",
        help="value from an environment variable (keeps secrets off command lines)",
    )
    parser.add_argument("--outputs-json", type=Path, help="write the step's outputs here")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    inputs: dict[str, str] = {}
    for item in args.input:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--input {item!r}: write NAME=VALUE")
        inputs[name] = value
    for item in args.input_file:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--input-file {item!r}: write NAME=PATH")
        inputs[name] = Path(path).read_text()
    for item in args.input_env:
        name, sep, var = item.partition("=")
        if not sep or var not in os.environ:
            parser.error(f"--input-env {item!r}: write NAME=VAR, with VAR set")
        inputs[name] = os.environ[var]

    root = Path(tempfile.mkdtemp(prefix="deployer-harness-"))
    try:
        runner = ActionRunner(root, image=args.image, workspace=args.workspace.resolve())
        view = LogView(sys.stdout)
        print(f"$ docker run ... {args.image}   (as the runner runs it; log follows)", flush=True)
        result = runner.run(inputs, timeout=args.timeout, echo=view)
        print(f"\n[step finished in {result.seconds:.1f} s with exit code {result.code}]")
        print("\nOutputs:")
        width = max((len(n) for n in result.outputs), default=0)
        for name, value in result.outputs.items():
            print(f"  {name.ljust(width)}  {view.mask(value)}")
        print("\nJob summary (Markdown, as GitHub renders it on the run's page):\n")
        print(view.mask(result.summary).rstrip() or "(empty)")
        if args.outputs_json:
            args.outputs_json.write_text(json.dumps(result.outputs, indent=2))
        return result.code
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_main())
