"""The run: mask secrets, validate inputs, build, push, roll out, report.

``run`` is the one top-level handler: every :class:`DeployerError` becomes
``::error::`` lines, a summary section and exit code 1; nothing a user did
wrong ends in a traceback. Any other exception (a bug) ends the same way, as an
:class:`InternalError`, with its frames (never its text) in the debug log; the
outputs and the summary are always written. Clients are made here and passed to the stages.
"""

from __future__ import annotations

import base64
import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from deployer.actions import ActionsIO
from deployer.buildenv import cache_fields, cache_secrets
from deployer.config import Config, load_config, raw_inputs
from deployer.errors import (
    Cancelled,
    ConfigError,
    DeployerError,
    InternalError,
    NoCredentials,
    PushError,
)
from deployer.kubeconfig import credentials_in, read_kubeconfig_files
from deployer.report import RunReport, outputs, summary

if TYPE_CHECKING:
    from deployer.rollout import RolloutResult

__all__ = ["main", "mask_secrets", "run"]

# Job environment variables that hold cloud secrets (the runner masks only secrets.*).
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AAD_SERVICE_PRINCIPAL_CLIENT_SECRET",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)
_TRACE_FRAMES = 12  # innermost frames of an unexpected exception shown in the debug log


def mask_file_secrets(io: ActionsIO, config: Config) -> None:
    """Mask what the inputs' files hold (secret-files, SSH keys), once they were read."""
    contents = [*config.secret_files.values(), *(k for s in config.ssh for k in s.keys)]
    for secret in contents:
        io.mask(secret.get_secret_value().decode("utf-8", "replace"))


def say_notices(io: ActionsIO, config: Config) -> None:
    for notice in config.notices:
        io.notice(notice, title="Input adjusted")


def mask_secrets(io: ActionsIO, env: Mapping[str, str]) -> None:
    """Mask every credential in the raw inputs, before anything else can print."""
    inputs = raw_inputs(env)
    password = inputs["registry-password"]
    io.mask(password)
    if password:
        pair = f"{inputs['registry-username'].strip()}:{password}"
        io.mask(pair)
        io.mask(base64.b64encode(pair.encode()).decode())
    if inputs["kubeconfig"].strip():  # (an empty input would still cost the YAML import)
        for secret in credentials_in(inputs["kubeconfig"]):
            io.mask(secret)
    if env.get("KUBECONFIG") and not inputs["kubeconfig"].strip():
        try:
            kubeconfig, _ = read_kubeconfig_files(env["KUBECONFIG"])
        except ValueError:
            pass  # reported, redacted, when the deploy stage loads it
        else:
            for secret in kubeconfig.credentials():
                io.mask(secret)
    for name in SECRET_ENV:
        io.mask(env.get(name))
    io.mask(inputs["github-token"].strip())  # the pull request comment's
    for line in inputs["secrets"].splitlines():  # build secrets: id=value
        io.mask(line.partition("=")[2])
    if inputs["helm-set"].strip():  # (the render modules cost ~19 ms to import)
        from deployer.render.helm import looks_secret

        for line in inputs["helm-set"].splitlines():  # key=value; masked when it looks secret
            key, _, value = line.partition("=")
            if looks_secret(key.strip(), value):
                io.mask(value)
    for line in inputs["secret-envs"].splitlines():  # build secrets: id=ENVVAR
        io.mask(env.get(line.partition("=")[2].strip()))
    io.mask(env.get("ACTIONS_RUNTIME_TOKEN"))  # passed to buildx for type=gha caches
    for line in (inputs["cache-from"] + "\n" + inputs["cache-to"]).splitlines():
        for secret in cache_secrets(_cache_fields(line)):  # its own token=, ghtoken=, SAS
            io.mask(secret)


def _cache_fields(line: str) -> list[tuple[str, str]]:
    """A cache entry's fields as buildx reads them (CSV); split at commas if it is not CSV."""
    try:
        return cache_fields(line.strip())
    except ValueError:  # refused by the input checks later; masked whichever way it splits
        fields = (field.strip().strip('"').partition("=") for field in line.split(","))
        return [(key.strip().lower(), value.strip().strip('"')) for key, _, value in fields]


class CancelScope:
    """Where the runner's cancel (SIGINT, then SIGTERM) lands in the run.

    By default the first signal raises :class:`Cancelled` where the main thread
    is (a build or a push ends at once). Inside :meth:`deferred` it only sets the
    event: the rollout notices it within a tick, between two requests, so every
    change it made is recorded and put back (issue 16: within 5 s).
    """

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.signal = ""  # SIGINT or SIGTERM, once one came
        self._deferred = False

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        first = not self.cancel.is_set()
        self.cancel.set()
        if first:
            self.signal = signal.Signals(signum).name
            if not self._deferred:
                raise Cancelled(f"Cancelled by {self.signal}")

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals only set the event while the body runs."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False


@contextmanager
def cancellation(cancel: threading.Event) -> Iterator[CancelScope]:
    """SIGINT/SIGTERM (the runner's cancel) set ``cancel`` and raise Cancelled, once."""
    scope = CancelScope(cancel)
    if threading.current_thread() is not threading.main_thread():
        yield scope
        return
    previous = {s: signal.signal(s, scope.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield scope
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def docker_client(config: Config) -> Any:
    """The Docker engine at DOCKER_HOST (or the mounted socket), once it answered."""
    from deployer.engine import connect

    return connect(config.docker_host)


class Deploy(Protocol):
    """The deploy stage as the pipeline drives it; tests pass a fake."""

    def check(self, config: Config, io: ActionsIO, cancel: threading.Event) -> None: ...

    def roll_out(
        self, config: Config, image: str, io: ActionsIO, cancel: threading.Event
    ) -> RolloutResult: ...

    def close(self) -> None: ...


class KubernetesDeploy:
    """The real deploy stage: one API client for the checks and the rollout."""

    def __init__(self, config: Config, io: ActionsIO | None = None) -> None:
        from deployer.cluster import connect

        self._api, _namespace = connect(config, io)

    def check(self, config: Config, io: ActionsIO, cancel: threading.Event) -> None:
        from deployer.rollout import check_cluster

        check_cluster(config, self._api, io, cancel)

    def roll_out(
        self, config: Config, image: str, io: ActionsIO, cancel: threading.Event
    ) -> RolloutResult:
        from deployer.rollout import roll_out

        return roll_out(config, image, self._api, io, cancel, checked=True)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]


def _build_and_push(
    config: Config, io: ActionsIO, report: RunReport, make_docker: Callable[[Config], Any]
) -> None:
    from deployer.build import BuildResult, build_image
    from deployer.cloud.registry import registry_login
    from deployer.push import resolve_digest, verify_images, verify_push

    config = registry_login(config, io.mask)  # ECR / Artifact Registry without a password
    engine = make_docker(config)
    try:
        verify_images(config, engine, io)  # before the build: a missing digest costs nothing
        if config.build:
            push = config.push and not config.dry_run
            if config.dry_run:
                io.info("dry-run: building, not pushing")
            started = time.monotonic()
            try:
                report.build = build_image(config, engine, io, push=push)
            except PushError:  # built, not pushed: the tags that were tried are still reported
                spent = time.monotonic() - started
                report.build = BuildResult("", tuple(config.tag_references), spent)
                raise
            if push:
                report.push = verify_push(config, engine, io, report.build)
        else:
            report.push = resolve_digest(config, engine, io)
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    report.image = report.push.image if report.push else config.tag_references[0]


_NO_PLAN = "No plan for a pull request from a fork"
FORK_WITHOUT_CREDENTIALS = (
    "this pull request comes from a fork, and GitHub gives a fork's pull_request run no "
    "secrets and a read-only token: there are no cluster credentials to plan with and no "
    "comment can be written. Nothing was built, pushed or changed. To plan a fork's change, "
    "let a maintainer start the plan once they have read it: a pull_request_target workflow "
    "on the labeled event, with build: false and the cluster credentials in an environment "
    "with required reviewers (README: The plan on the pull request)"
)


def _fork_dry_run(config: Config) -> bool:
    """A dry run for a fork's pull_request event: the run that gets no secrets."""
    if not config.dry_run:
        return False
    from deployer.github import pull_request_of

    pr = pull_request_of(config.github)
    return pr is not None and pr.read_only


def _stages(
    config: Config,
    io: ActionsIO,
    report: RunReport,
    scope: CancelScope,
    make_docker: Callable[[Config], Any],
    make_deploy: Callable[[Config], Deploy],
) -> None:
    if not config.deploys:
        _build_and_push(config, io, report, make_docker)
        report.status = "planned" if config.dry_run else "succeeded"
        return
    try:
        deploy = make_deploy(config)
    except NoCredentials:
        if not _fork_dry_run(config):
            raise
        io.notice(
            FORK_WITHOUT_CREDENTIALS[0].upper() + FORK_WITHOUT_CREDENTIALS[1:], title=_NO_PLAN
        )
        report.no_plan = FORK_WITHOUT_CREDENTIALS
        report.status = "planned"
        return
    try:
        # The cluster is checked first: a wrong name or a missing right costs no build.
        deploy.check(config, io, scope.cancel)
        _build_and_push(config, io, report, make_docker)
        with scope.deferred():  # a cancel is the rollout's to handle: it puts things back
            report.rollout = deploy.roll_out(config, report.image, io, scope.cancel)
        report.status = report.rollout.status
        if report.status == "cancelled":
            why = f"Cancelled by {scope.signal}" if scope.signal else "Cancelled"
            io.error(
                f"{why} during the rollout; each workload's state is in the summary",
                title="Cancelled",
            )
    finally:
        deploy.close()


def run(
    env: Mapping[str, str],
    out: TextIO | None = None,
    *,
    make_docker: Callable[[Config], Any] = docker_client,
    make_deploy: Callable[[Config], Deploy] | None = None,
) -> int:
    """Run the whole action with ``env`` as its environment; return the exit code."""
    started = time.monotonic()
    io = ActionsIO(out, env)
    if make_deploy is None:
        make_deploy = functools.partial(KubernetesDeploy, io=io)
    report = RunReport()
    cancel = threading.Event()
    config: Config | None = None
    try:
        mask_secrets(io, env)
        with cancellation(cancel) as scope:
            config = load_config(env)
            mask_file_secrets(io, config)
            say_notices(io, config)
            _stages(config, io, report, scope, make_docker, make_deploy)
    except ConfigError as e:
        for problem in e.problems:
            io.error(problem.message(), title=f"Invalid input '{problem.input}'")
        report.errors.append(e)
        report.status = "failed"
    except Cancelled as e:
        io.error(f"{e.message}; stopped before finishing", title=e.title)
        report.errors.append(e)
        report.status = "cancelled"
    except DeployerError as e:
        io.error(e.message, title=e.title)
        if e.details:
            with io.group("Details"), io.untrusted() as log:
                log.write(e.details)
        report.errors.append(e)
        report.status = "failed"
    except Exception as e:  # the last resort: a bug still ends in one error and a report
        internal = InternalError(
            f"deployer stopped on an unexpected {type(e).__name__}. This is a bug in deployer: "
            "please report it with this run's debug log. If the rollout had started, check "
            "the Deployments (kubectl rollout status)"
        )
        io.error(internal.message, title=internal.title)
        _debug_trace(io, e)
        report.errors.append(internal)
        report.status = "failed"
    report.duration = time.monotonic() - started
    _write_report(io, report, env)
    commented = report.status != "cancelled" and not report.no_plan  # (a fork: said already)
    if config is not None and config.comment_on_pr and commented:
        _comment_on_pull_request(io, config, report, cancel)
    io.info(f"deployer: {report.status} in {report.duration:.1f} s")
    return 0 if report.status in ("succeeded", "planned", "paused") else 1


def _debug_trace(io: ActionsIO, error: BaseException) -> None:
    """Where ``error`` was raised, as ``::debug::`` lines: file, line and function only.

    Not the exception's text nor the source lines' values: a message can quote an
    input or a server's answer, and the runner masks only whole registered secrets.
    """
    frames = traceback.extract_tb(error.__traceback__)
    for frame in frames[-_TRACE_FRAMES:]:
        io.debug(f"{type(error).__name__} at {frame.filename}:{frame.lineno} in {frame.name}")


def _write_report(io: ActionsIO, report: RunReport, env: Mapping[str, str]) -> None:
    """Outputs, then the summary; a file that cannot be written is a warning, not a crash.

    The exit code stays the run's: the work (and any rollback) is done by now.
    """
    parts: list[tuple[str, str, Callable[[], None]]] = [
        ("outputs", "GITHUB_OUTPUT", lambda: io.set_outputs(outputs(report, redact=io.redact))),
        (
            "job summary",
            "GITHUB_STEP_SUMMARY",
            lambda: io.append_summary(summary(report, redact=io.redact)),
        ),
    ]
    for what, variable, write in parts:
        try:
            write()
        except OSError as e:
            io.warning(
                f"The step's {what} could not be written to {variable} ({env.get(variable)}): "
                f"{e.strerror or type(e).__name__}. The run's status is {report.status}; see "
                "the log above",
                title=f"No {what}",
            )
        except Exception as e:  # a bug in the report: the run's own result stands
            io.warning(
                f"The step's {what} could not be made ({type(e).__name__}, a bug in "
                f"deployer). The run's status is {report.status}; see the log above",
                title=f"No {what}",
            )
            _debug_trace(io, e)


_NOTHING_TO_PLAN = (
    "Nothing to deploy: no `deployments`, `workloads` or `manifests`; this run only builds "
    "the image."
)


def _comment_on_pull_request(
    io: ActionsIO, config: Config, report: RunReport, cancel: threading.Event
) -> None:
    """The plan (or why there is none) in the job's comment on the pull request."""
    from deployer.cluster import cluster_server, default_namespace
    from deployer.github import comment_plan

    if not config.dry_run:
        io.notice(
            "comment-on-pr posts the plan of a dry run (dry-run: true); this run deploys, so "
            "no comment is written",
            title="No plan comment",
        )
        return
    token = config.github_token.get_secret_value() if config.github_token else ""
    target = " ".join([cluster_server(config), default_namespace(config), config.image.repository])
    errors = [f"{e.title}: {e.message}" for e in report.errors]
    failure = "" if report.status == "planned" else (errors[0] if errors else report.status)
    try:
        with cancellation(cancel):
            comment_plan(
                io,
                config.github,
                token,
                target=target,
                plan=outputs(report, redact=io.redact)["plan"] or _NOTHING_TO_PLAN,
                failure=io.redact(failure),
                cancel=cancel,
            )
    except Cancelled:
        io.warning("Cancelled while writing the plan comment", title="No plan comment")


def main() -> int:
    """Entry point of the container action (``entrypoint.py``)."""
    return run(dict(os.environ), sys.stdout)
