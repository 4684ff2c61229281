"""The plan comment on the pull request (deployer/github.py) against the GitHub stand-in.

The stand-in (tests/github_standin.py) is a real HTTP server on a loopback port that
answers like the REST API and records every call; only the clock is a fake, so
retries never wait for real time.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.actions import ActionsIO
from deployer.config import GitHubContext
from deployer.errors import GitHubError
from deployer.github import COMMENT_CHARS, GitHub, comment_marker, comment_plan, plan_comment
from deployer.pipeline import run
from deployer.plan import ObjectChange, Plan
from deployer.rollout import RolloutResult
from tests.github_standin import REPOSITORY, TOKEN, GitHubStandin
from tests.unit.test_actions import commands, runner_outputs
from tests.unit.test_pipeline import FakeDeploy, FakeEngine, runner_env, web
from tests.unit.test_secrets import assert_no_leaks

__all__ = ["runner_env"]  # a fixture of test_pipeline, used here too

PLAN = "**Plan:** 0 to create, 1 to change, 0 unchanged.\n\n#### change: `Deployment` `web`\n"


class FakeClock:
    """Time moves only when someone waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waited: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.waited.append(seconds)
        self.now += seconds
        return event.is_set()


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with GitHubStandin() as standin:
        yield standin


def event(tmp_path: Path, number: int = 7, *, head: str = REPOSITORY, fork: bool = False) -> Path:
    path = tmp_path / "event.json"
    path.write_text(
        json.dumps(
            {
                "action": "synchronize",
                "pull_request": {
                    "number": number,
                    "title": "::error::not a command `](https://evil)",
                    "head": {"repo": {"full_name": head, "fork": fork}},
                    "base": {"repo": {"full_name": REPOSITORY, "fork": False}},
                },
            }
        )
    )
    return path


def context(
    tmp_path: Path, api_url: str, *, event_name: str = "pull_request", **event_kw: Any
) -> GitHubContext:
    return GitHubContext(
        sha="0123456789abcdef",
        repository=REPOSITORY,
        run_id="42",
        workflow="deploy",
        job="plan",
        action="__acme_deployer",
        event_name=event_name,
        event_path=str(event(tmp_path, **event_kw)),
        api_url=api_url,
    )


def post(
    github: GitHubContext, *, plan: str = PLAN, failure: str = "", clock: FakeClock | None = None
) -> str:
    out = io.StringIO()
    actions = ActionsIO(out, {})
    actions.mask(TOKEN)
    comment_plan(
        actions,
        github,
        TOKEN,
        target="https://10.0.0.1 shop ghcr.io/acme/web",
        plan=plan,
        failure=failure,
        clock=clock or FakeClock(),
    )
    return out.getvalue()


def test_the_first_run_creates_the_comment_and_the_next_updates_it(
    github: GitHubStandin, tmp_path: Path
) -> None:
    ctx = context(tmp_path, github.url)
    log = post(ctx)
    [comment] = github.state.comments[7]
    assert comment["body"].startswith(comment_marker(ctx, "https://10.0.0.1 shop ghcr.io/acme/web"))
    assert "### 📝 Deploy plan for `0123456` (`deploy / plan`)" in comment["body"]
    assert PLAN.strip() in comment["body"]
    assert f"Plan comment created on pull request #7: {comment['html_url']}" in log
    log = post(ctx, plan=PLAN.replace("1 to change", "2 to change"))
    [comment] = github.state.comments[7]  # the same one, edited in place
    assert "2 to change" in comment["body"]
    assert "Plan comment updated" in log
    assert [c.method for c in github.state.calls] == ["GET", "POST", "GET", "PATCH"]
    assert {c.authorization for c in github.state.calls} == {f"Bearer {TOKEN}"}
    assert not any(TOKEN in c.path for c in github.state.calls)
    assert TOKEN not in log.replace(f"::add-mask::{TOKEN}", "")


def test_a_failed_dry_run_replaces_the_plan_so_no_stale_plan_stays(
    github: GitHubStandin, tmp_path: Path
) -> None:
    ctx = context(tmp_path, github.url)
    post(ctx)
    post(ctx, plan="", failure="Invalid input: Input 'manifests': k8s/x.yaml is not YAML")
    [comment] = github.state.comments[7]
    assert "### ❌ No deploy plan for `0123456`" in comment["body"]
    assert "`Invalid input: Input 'manifests': k8s/x.yaml is not YAML`" in comment["body"]
    assert "Plan:" not in comment["body"]


def test_each_job_and_each_matrix_target_keeps_its_own_comment(
    github: GitHubStandin, tmp_path: Path
) -> None:
    ctx = context(tmp_path, github.url)
    post(ctx)
    other_job = ctx.model_copy(update={"job": "plan-eu"})
    post(other_job)
    out = io.StringIO()
    comment_plan(ActionsIO(out, {}), ctx, TOKEN, target="https://10.9.9.9 shop x", plan=PLAN)
    assert len(github.state.ours(7)) == 3
    post(ctx)
    assert len(github.state.ours(7)) == 3  # found again: updated, not a fourth


def test_comments_are_found_on_a_later_page_through_githubs_next_links(
    github: GitHubStandin, tmp_path: Path
) -> None:
    ctx = context(tmp_path, github.url)
    for n in range(120):
        github.state.add_comment(7, f"comment {n} from a reviewer")
    post(ctx)  # ours is number 121: on the third page of 50
    github.state.calls.clear()
    log = post(ctx)
    assert "Plan comment updated" in log
    assert [c.method for c in github.state.calls] == ["GET", "GET", "GET", "PATCH"]
    assert github.state.calls[1].path.startswith("/repositories/4711/issues/7/comments?")
    assert len(github.state.ours(7)) == 1


def test_a_comment_deleted_since_it_was_listed_is_made_again(
    github: GitHubStandin, tmp_path: Path
) -> None:
    ctx = context(tmp_path, github.url)
    post(ctx)
    github.state.calls.clear()
    github.state.delete_after_listing = True  # someone deletes it between GET and PATCH
    log = post(ctx)
    assert "Plan comment created" in log
    assert [c.method for c in github.state.calls] == ["GET", "PATCH", "POST"]
    assert len(github.state.ours(7)) == 1


def test_a_comment_that_only_quotes_the_marker_later_is_not_ours(
    github: GitHubStandin, tmp_path: Path
) -> None:
    ctx = context(tmp_path, github.url)
    marker = comment_marker(ctx, "https://10.0.0.1 shop ghcr.io/acme/web")
    github.state.add_comment(7, f"look at this: {marker}")
    post(ctx)
    assert [c.method for c in github.state.calls] == ["GET", "POST"]


def test_a_403_explains_the_permission_and_does_not_fail(
    github: GitHubStandin, tmp_path: Path
) -> None:
    github.state.forbid_writes = True
    log = post(context(tmp_path, github.url))
    [warning] = [c for c in commands(log) if c.startswith("::warning")]
    assert "title=Plan not posted on the pull request::" in warning
    assert "403 Resource not accessible by integration" in warning
    assert "permissions: pull-requests: write" in warning
    assert not any(c.startswith("::error") for c in commands(log))


def test_a_forks_pull_request_gets_a_notice_and_no_request(
    github: GitHubStandin, tmp_path: Path
) -> None:
    log = post(context(tmp_path, github.url, head="mallory/web", fork=True))
    [notice] = [c for c in commands(log) if c.startswith("::notice")]
    assert "comes from a fork" in notice and "read-only" in notice
    assert github.state.calls == []


def test_pull_request_target_from_a_fork_may_comment(github: GitHubStandin, tmp_path: Path) -> None:
    """pull_request_target runs in the base repository with its token (the user's choice)."""
    ctx = context(tmp_path, github.url, event_name="pull_request_target", head="mallory/web")
    assert "Plan comment created" in post(ctx)


@pytest.mark.parametrize("event_name", ["push", "workflow_dispatch", ""])
def test_other_events_post_nothing(github: GitHubStandin, tmp_path: Path, event_name: str) -> None:
    log = post(context(tmp_path, github.url, event_name=event_name))
    assert "not a pull request: no comment" in log
    assert github.state.calls == []


def test_server_errors_are_retried_within_the_budget(github: GitHubStandin, tmp_path: Path) -> None:
    github.state.fail_first = 2
    clock = FakeClock()
    assert "Plan comment created" in post(context(tmp_path, github.url), clock=clock)
    assert clock.waited == [1.0, 2.0]


def test_a_server_that_keeps_failing_ends_in_a_warning_after_three_tries(
    github: GitHubStandin, tmp_path: Path
) -> None:
    github.state.fail_first = 100
    log = post(context(tmp_path, github.url))
    assert len(github.state.calls) == 3
    [warning] = [c for c in commands(log) if c.startswith("::warning")]
    assert "GitHub did not answer GET in time: 502 Server Error" in warning


def test_a_redirect_is_not_followed_with_the_token(github: GitHubStandin, tmp_path: Path) -> None:
    github.state.redirect = True
    log = post(context(tmp_path, github.url))
    assert len(github.state.calls) == 1
    assert "redirect (301); it is not followed with the token" in log


@pytest.mark.parametrize(
    "api_url", ["http://api.github.com", "http://10.0.0.8:8080", "ftp://127.0.0.1", "https://"]
)
def test_the_token_goes_only_to_https_or_loopback(api_url: str) -> None:
    with pytest.raises(GitHubError, match="is not an https URL"):
        GitHub(api_url, TOKEN)


def test_a_next_link_to_another_host_is_not_followed() -> None:
    client = GitHub("https://ghe.example.com/api/v3", TOKEN)
    same = '<https://ghe.example.com/api/v3/repositories/1/issues/7/comments?page=2>; rel="next"'
    assert client._next_page(same) == "/api/v3/repositories/1/issues/7/comments?page=2"
    for link in (
        '<https://evil.example/api/v3/x?page=2>; rel="next"',
        '<http://ghe.example.com/api/v3/x?page=2>; rel="next"',
        '<https://ghe.example.com/other/x?page=2>; rel="next"',
        '<https://ghe.example.com/api/v3/x?page=9>; rel="last"',
    ):
        assert client._next_page(link) is None, link


def test_the_comment_fits_githubs_limit_whatever_the_plan() -> None:
    ctx = GitHubContext(sha="0123456789", workflow="deploy", job="plan", run_id="1")
    plan = "**Plan:** 1 to create.\n\n```diff\n" + "+ \u4e2d\u6587\U0001f680\n" * 20_000 + "```\n"
    body = plan_comment(comment_marker(ctx, "t"), ctx, plan)
    assert len(body) <= COMMENT_CHARS
    assert body.rstrip().endswith("updated by every run of the job.</sub>")
    assert body.count("```") % 2 == 0  # a cut fence is closed


# -- the whole run ------------------------------------------------------------------------------


def planned() -> RolloutResult:
    change = ObjectChange("Deployment", "prod", "web", "change", "the deployments input")
    return RolloutResult("planned", (web("planned"),), plan=Plan("ghcr.io/acme/web:v1", (change,)))


def pr_env(runner_env: dict[str, str], tmp_path: Path, url: str) -> dict[str, str]:
    return {
        **runner_env,
        "INPUT_DEPLOYMENTS": "web",
        "INPUT_DRY-RUN": "true",
        "INPUT_COMMENT-ON-PR": "true",
        "INPUT_GITHUB-TOKEN": TOKEN,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event(tmp_path)),
        "GITHUB_API_URL": url,
        "GITHUB_WORKFLOW": "deploy",
        "GITHUB_JOB": "plan",
    }


def test_a_dry_run_on_a_pull_request_posts_its_plan_and_the_outputs_hold_it(
    runner_env: dict[str, str], tmp_path: Path, github: GitHubStandin
) -> None:
    env = pr_env(runner_env, tmp_path, github.url)
    engine = FakeEngine()
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    code = run(
        env, out, make_docker=lambda _c: engine, make_deploy=lambda _c: FakeDeploy([], planned())
    )
    assert code == 0, out.getvalue()
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert outputs["plan"].startswith("**Plan:** 0 to create, 1 to change, 0 unchanged.")
    assert json.loads(outputs["changes"]) == [
        {"kind": "Deployment", "namespace": "prod", "name": "web", "action": "change"}
    ]
    [comment] = github.state.comments[7]
    assert outputs["plan"].strip() in comment["body"]
    assert outputs["plan"].strip() in Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert_no_leaks(
        {"log": out.getvalue(), "outputs": json.dumps(outputs), "comment": comment["body"]},
        {"token": TOKEN},
    )


def test_comment_on_pr_without_a_token_is_an_input_error(
    runner_env: dict[str, str], tmp_path: Path
) -> None:
    env = pr_env(runner_env, tmp_path, "http://127.0.0.1:9")
    del env["INPUT_GITHUB-TOKEN"]
    out = io.StringIO()
    assert run(env, out, make_deploy=lambda _c: FakeDeploy([], planned())) == 1
    [error] = [c for c in commands(out.getvalue()) if c.startswith("::error")]
    assert "Input 'github-token' is empty, but comment-on-pr is true" in error
    assert "pull-requests: write" in error


def test_a_deploy_that_is_not_a_dry_run_posts_no_comment(
    runner_env: dict[str, str], tmp_path: Path, github: GitHubStandin
) -> None:
    env = pr_env(runner_env, tmp_path, github.url)
    env["INPUT_DRY-RUN"] = "false"
    engine = FakeEngine()
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    result = RolloutResult("succeeded", (web("succeeded"),))
    run(env, out, make_docker=lambda _c: engine, make_deploy=lambda _c: FakeDeploy([], result))
    assert github.state.calls == []
    assert "comment-on-pr posts the plan of a dry run" in out.getvalue()


def test_a_build_only_dry_run_says_there_is_nothing_to_deploy(
    runner_env: dict[str, str], tmp_path: Path, github: GitHubStandin
) -> None:
    env = pr_env(runner_env, tmp_path, github.url)
    del env["INPUT_DEPLOYMENTS"]
    engine = FakeEngine()
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    assert run(env, out, make_docker=lambda _c: engine) == 0, out.getvalue()
    [comment] = github.state.comments[7]
    assert "Nothing to deploy: no `deployments`, `workloads` or `manifests`" in comment["body"]


def fork_env(runner_env: dict[str, str], tmp_path: Path, url: str) -> dict[str, str]:
    """A fork's pull_request run: the cluster secret is empty (forks get no secrets)."""
    env = pr_env(runner_env, tmp_path, url)
    env["GITHUB_EVENT_PATH"] = str(event(tmp_path, head="mallory/web", fork=True))
    env["INPUT_KUBECONFIG"] = ""  # ${{ secrets.KUBECONFIG }} in a fork's run
    return env


@pytest.fixture
def outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """No in-cluster ServiceAccount either: the run has no cluster credentials at all."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.mark.usefixtures("outside_a_pod")
def test_a_forks_dry_run_without_cluster_credentials_is_one_notice_and_no_failure(
    runner_env: dict[str, str], tmp_path: Path, github: GitHubStandin
) -> None:
    env = fork_env(runner_env, tmp_path, github.url)
    engine = FakeEngine()
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    code = run(env, out, make_docker=lambda _c: engine)  # the real cluster stage
    log = out.getvalue()
    assert code == 0, log
    assert not [c for c in commands(log) if c.startswith(("::error", "::warning"))], log
    [notice] = [c for c in commands(log) if c.startswith("::notice")]
    assert "title=No plan for a pull request from a fork::" in notice
    assert "no secrets" in notice and "no cluster credentials" in notice
    assert "pull_request_target" in notice and "build: false" in notice
    assert "in this job's summary" not in notice  # there is no plan to point at
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert outputs["status"] == "planned"
    assert outputs["plan"] == "" and outputs["changes"] == "[]"
    assert outputs["image"] == "" and outputs["digest"] == ""
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "No plan: this pull request comes from a fork" in summary
    assert engine.builds() == [] and engine.calls == []  # nothing built, pushed or looked up
    assert github.state.calls == []  # a fork's token cannot write the comment


@pytest.mark.usefixtures("outside_a_pod")
@pytest.mark.parametrize(
    ("fork", "dry_run"),
    [(False, "true"), (True, "false")],
    ids=["the repository's own pull request", "a fork's deploy that is no dry run"],
)
def test_no_cluster_credentials_is_still_an_error_otherwise(
    runner_env: dict[str, str], tmp_path: Path, github: GitHubStandin, fork: bool, dry_run: str
) -> None:
    env = fork_env(runner_env, tmp_path, github.url)
    env["GITHUB_EVENT_PATH"] = str(event(tmp_path, head="mallory/web" if fork else REPOSITORY))
    env["INPUT_DRY-RUN"] = dry_run
    engine = FakeEngine()
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    assert run(env, out, make_docker=lambda _c: engine) == 1
    [error] = [c for c in commands(out.getvalue()) if c.startswith("::error")]
    assert "No Kubernetes credentials: set the 'kubeconfig' input" in error
    assert runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())["status"] == "failed"
    assert engine.builds() == []
