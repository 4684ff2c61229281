"""The job summary as a person reads it, its limits, and the inertness of untrusted text.

Summaries come from whole runs (tests/unit/summary_runs.py); Markdown is rendered
the way GitHub does (GFM tables, autolinks, raw HTML) with markdown-it-py, so the
checks are on what a reader would see. The layout in a real browser is checked in
tests/browser/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from deployer.actions import SUMMARY_LIMIT
from deployer.errors import BuildError
from deployer.report import SUMMARY_BUDGET, RunReport, code, fenced, short_image, summary
from deployer.rollout import DeploymentResult, RolloutResult
from tests.unit import summary_runs
from tests.unit.summary_runs import NEW_DIGEST, OLD_IMAGE, REPO, go, result, runner_env
from tests.unit.test_actions import make


def render(markdown: str) -> str:
    """GitHub-flavoured Markdown to HTML: tables, bare-URL autolinks, raw HTML."""
    return MarkdownIt("gfm-like").render(markdown)


@pytest.fixture(scope="module")
def summaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return summary_runs.summaries(tmp_path_factory.mktemp("runs"))


def first_lines(markdown: str, n: int) -> str:
    return "\n".join(line for line in markdown.splitlines() if line.strip())[:n]


# -- issue 13: the answer first ---------------------------------------------------------------


def test_a_rolled_back_run_leads_with_what_happened_where_and_what_runs_now(
    summaries: dict[str, str],
) -> None:
    text = summaries["rolled-back"]
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == "## ↩️ Rolled back: the new version did not come up"
    assert lines[1] == (
        "**`deployment/checkout-web`**: `CrashLoopBackOff (last exit: Error)` in container "
        "`app` — rolled back to `…/payments/checkout-web@sha256:5f0c2b7a…` (revision 9)"
    )
    assert lines[2].startswith("Also rolled back") and "`deployment/checkout-worker`" in lines[2]
    assert lines[3].startswith(
        "**Next:** the container exits soon after it starts (its last log lines are below)."
    )
    assert f"docker run --rm {REPO}@{NEW_DIGEST}" in lines[3]


def test_pods_that_never_become_ready_are_named_with_their_first_warning() -> None:
    """Reason and diagnosis as the rollout wrote them for a failing readiness probe."""
    never_ready = result(
        "web",
        "rolled-back",
        "not complete after 13 s: 1 out of 2 new replicas have been updated; pod "
        "web-7688579cf-4rskn never became ready (containers with unready status: [app]); "
        "rolled back to the previous revision",
        revision=3,
        previous="127.0.0.1:5000/ok/web:1",
        diagnosis="pod web-7688579cf-4rskn: not ready: containers with unready status: [app]\n"
        "Warning events:\n  Unhealthy: Readiness probe failed: HTTP probe failed with "
        "statuscode: 503",
    )
    text = summary(
        RunReport(status="rolled-back", rollout=RolloutResult("rolled-back", (never_ready,))),
        redact=str,
    )
    lead, next_step = text.split("\n\n")[1:3]
    assert lead == (
        "**`deployment/web`**: the new pods never became Ready (`Unhealthy: Readiness probe "
        "failed: HTTP probe failed with statuscode: 503`) — rolled back to "
        "`127.0.0.1:5000/ok/web:1` (revision 3)"
    )
    assert "`kubectl -n payments-production describe pod web-7688579cf-4rskn`" in next_step


def test_tables_put_the_outcome_first_shorten_images_and_keep_reasons_out(
    summaries: dict[str, str],
) -> None:
    text = summaries["rolled-back"]
    html = render(text)
    headers = re.findall(r"<th>(.*?)</th>", html)
    assert headers[:2] == ["Result", "Workload"]
    assert "<th></th>" not in html  # no empty header row
    table = text[text.index("| Result |") : text.index("\n\n", text.index("| Result |"))]
    assert "back-off 40s" not in table  # the long reason is in the section below only
    assert "`…/payments/checkout-web@sha256:5f0c2b7a…`" in table
    assert OLD_IMAGE not in table
    # the full values are in the collapsed block at the end, and in the outputs
    details = text[text.index("<details><summary>Images") :]
    assert OLD_IMAGE in details and f"{REPO}@{NEW_DIGEST}" in details
    assert max(len(line) for line in table.splitlines()) < 130
    assert text.count("back-off 40s") == 1


def test_the_diagnosis_is_a_fenced_block_under_the_failed_workload(
    summaries: dict[str, str],
) -> None:
    text = summaries["rolled-back"]
    section = text[text.index("### ↩️ `deployment/checkout-web`") :]
    block = section[section.index("```text\n") : section.index("\n```\n")]
    assert "Warning events:" in block and "missing required setting PAYMENTS_API_KEY" in block
    assert max(len(line) for line in block.splitlines()) <= 100  # wrapped: no sideways scroll


def test_success_leads_with_what_runs_now_and_collapses_the_details(
    summaries: dict[str, str],
) -> None:
    text = summaries["succeeded"]
    assert text.startswith("## ✅ Succeeded: deployed\n")
    assert "`deployment/checkout-web`, `deployment/checkout-worker` now run `…/" in text
    assert "###" not in text  # nothing failed: no per-workload sections
    assert "<details><summary>Images, tags and timings" in text
    assert "- Builder: `the engine's own BuildKit (buildx docker driver)`" in text


def test_dry_run_shows_the_plan_as_a_table(summaries: dict[str, str]) -> None:
    text = summaries["dry-run"]
    assert text.startswith("## 📝 Dry run: nothing was pushed or changed\n")
    assert "would be set to `…/payments/checkout-web:sha-0123456`" in text
    assert "| Workload | Container | Now |" in text
    row = "| `deployment/checkout-worker` | `sidecar` | `docker.io/envoyproxy/envoy:v1.31.2` |"
    assert row in text


def test_a_dry_run_with_a_plan_shows_it_instead_of_the_table(summaries: dict[str, str]) -> None:
    text = summaries["plan"]
    assert text.startswith("## 📝 Dry run: nothing was pushed or changed\n")
    assert "Found `…/payments/checkout-web@sha256:e2ec6d4e…`; nothing was pushed" in text
    assert "**Plan:** 1 to create, 3 to change, 0 unchanged." in text
    assert "+  PAYMENTS_API_KEY: (hidden, changed)" in text
    assert "c2stbGl2ZS0" not in text  # the Secret's values, in base64 as the API has them
    assert "| Workload | Container | Now |\n" not in text


def test_an_input_error_names_the_input_what_is_wrong_and_a_right_example(
    summaries: dict[str, str],
) -> None:
    text = summaries["input-error"]
    assert text.startswith("## ❌ Invalid input\n\nNothing was built, pushed or changed.")
    assert "- Input **`image`**: `'ghcr.io/acme/checkout-web:v1' contains a tag" in text
    assert "  Example: `image: ghcr.io/acme/web`" in text
    assert "- Input **`timeout`**:" in text
    assert "<details>" not in text  # nothing was built: no empty details


def test_a_failed_build_shows_the_error_and_the_last_log_lines(summaries: dict[str, str]) -> None:
    text = summaries["build-failed"]
    assert text.startswith("## ❌ Build failed\n")
    error = text.split("Last lines of the log")[0]
    assert "[3/4] RUN pip install -r requirements.txt:" in error  # the failing step, named
    assert "No matching distribution found for payments-sdk==9.9.9" in text


def test_a_workload_kind_is_shown_when_the_result_has_one() -> None:
    class StatefulResult:
        kind = "StatefulSet"

        def __init__(self) -> None:
            self.base = result("db", "succeeded")

        def __getattr__(self, name: str) -> object:
            return getattr(self.base, name)

    report = RunReport(status="succeeded", rollout=RolloutResult("succeeded", (StatefulResult(),)))  # type: ignore[arg-type]
    assert "| `statefulset/db` |" in summary(report, redact=str)


def test_long_names_are_cut_in_the_middle_so_two_stay_apart(summaries: dict[str, str]) -> None:
    text = summaries["long-names"]
    rows = [line for line in text.splitlines() if line.startswith("| ↩️")]
    cells = [row.split(" | ")[1] for row in rows]
    assert len(cells) == 2 and cells[0] != cells[1], cells
    assert all(len(c) <= 42 for c in cells), cells
    assert cells[0].endswith("1b-blue`") and cells[1].endswith("b-green`")
    section = text[text.index("### ↩️") :]
    assert section.index("CrashLoopBackOff") < section.index("rolled back to the previous")


def test_a_cancelled_rollout_says_how_to_see_it_and_undo_it() -> None:
    cancelled = result(
        "web",
        "cancelled",
        "cancelled while waiting (1 of 2 updated replicas available); the rollout continues "
        "in the cluster; undo with kubectl rollout undo deployment/web -n payments-production",
    )
    text = summary(
        RunReport(status="cancelled", rollout=RolloutResult("cancelled", (cancelled,))),
        redact=str,
    )
    assert text.startswith("## ⏹️ Cancelled\n")
    assert "`kubectl -n payments-production rollout status deployment/web`" in text
    assert "to undo it: `kubectl rollout undo deployment/web -n payments-production`" in text


def test_a_cancelled_workload_that_was_put_back_says_so() -> None:
    back = result(
        "web",
        "cancelled",
        "cancelled while waiting (1 of 2 updated); put back to revision 3 (not waited for)",
    )
    untouched = result("api", "cancelled", "cancelled before it was changed")
    text = summary(
        RunReport(status="cancelled", rollout=RolloutResult("cancelled", (back, untouched))),
        redact=str,
    )
    assert "cancelled, put back to revision 3 (not waited for)" in text
    assert "cancelled before it was changed" in text
    assert "the cluster may still be changing" not in text


def rollout_result(result_: str, reason: str, phase: str) -> DeploymentResult:
    return DeploymentResult(
        "shop",
        "web",
        ("web",),
        "reg.example/web@sha256:" + "1" * 64,
        "reg.example/web@sha256:" + "2" * 64,
        2,
        result_,
        reason,
        kind="Rollout",
        phase=phase,
    )


def test_a_paused_rollout_says_where_it_waits_and_how_to_promote_it() -> None:
    paused = rollout_result(
        "paused",
        "paused at step 2 of 3 (pause), waiting for promotion "
        "(kubectl argo rollouts promote web -n shop)",
        "Paused at step 2 of 3 (pause)",
    )
    text = summary(
        RunReport(status="paused", rollout=RolloutResult("paused", (paused,))), redact=str
    )
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == "## ⏸️ Paused: waiting for a promotion"
    assert lines[1].startswith("**`rollout/web`**: `paused at step 2 of 3 (pause), waiting")
    assert lines[2] == (
        "**Next:** promote it when it is right: `kubectl argo rollouts promote web -n shop`; "
        "or abort it: `kubectl argo rollouts abort web -n shop`."
    )
    assert "| ⏸️ paused | `rollout/web` | 2 |" in text
    assert "| `Paused at step 2 of 3 (pause)` |" in text
    assert "### " not in text  # not a failure: no section of its own


def test_an_aborted_canary_leads_with_its_analysis_and_how_to_see_the_run() -> None:
    aborted = rollout_result(
        "rolled-back",
        "aborted by Argo Rollouts at step 3 of 4 (analysis): AnalysisRun web-7d-2-2 Failed: "
        'Metric "check" assessed Failed due to failed (1) > failureLimit (0); rolled back to '
        "the previous revision",
        "Healthy",
    )
    text = summary(
        RunReport(status="rolled-back", rollout=RolloutResult("rolled-back", (aborted,))),
        redact=str,
    )
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[1].startswith("**`rollout/web`**: `aborted by Argo Rollouts at step 3 of 4")
    assert lines[2] == (
        "**Next:** the canary's analysis failed (its metric and Job are below): "
        "`kubectl argo rollouts get rollout web -n shop` shows the run."
    )
    assert "| Result | Workload | Revision | Image now | Phase |" in text


def test_what_the_rollback_restored_is_listed() -> None:
    """The rollout of issue 10 adds ``restored`` (lines about other applied objects)."""

    @dataclass(frozen=True)
    class WithRestored(RolloutResult):
        restored: tuple[str, ...] = ()

    rollout = WithRestored(
        "rolled-back",
        summary_runs.ROLLED_BACK.deployments,
        ("ConfigMap/checkout-config: restored", "Service/[x](https://evil.example): deleted"),
    )
    text = summary(RunReport(status="rolled-back", rollout=rollout), redact=str)
    assert "- `ConfigMap/checkout-config: restored`" in text
    assert_inert(render(text))


def test_short_image_forms() -> None:
    assert short_image(f"ghcr.io/acme/web@{NEW_DIGEST}") == "ghcr.io/acme/web@sha256:e2ec6d4e…"
    assert short_image(f"{REPO}:sha-0123456") == "…/payments/checkout-web:sha-0123456"
    assert short_image("a/b:1, c/d:2") == "a/b:1, c/d:2"
    assert short_image("localhost:5000/web") == "localhost:5000/web"


# -- issue 11.5: bounded, whatever the inputs ------------------------------------------------------


def test_huge_inputs_keep_the_summary_small_and_whole(tmp_path: Path) -> None:
    """An 8 MiB log line, hundreds of failed workloads: the summary stays well under 1 MiB."""
    line = "x" * (8 * 1024 * 1024)
    many = tuple(
        result(
            f"web-{i}",
            "rolled-back",
            f"pod web-{i}-1, container app: CrashLoopBackOff: {line[:10_000]}",
            diagnosis=f"pod web-{i}-1: {line[:20_000]}\n" + "log line\n" * 5000,
        )
        for i in range(300)
    )
    many += (result("huge", "failed", line, diagnosis=line),)
    code_, _, outputs, text = go(runner_env(tmp_path), RolloutResult("failed", many))
    assert code_ == 1
    size = len(text.encode())
    assert size <= SUMMARY_BUDGET + 4096, size
    assert text.startswith("## ❌ Failed: the rollout did not complete")
    assert "more sections left out" in text
    assert outputs["status"] == "failed"
    reasons = [d["reason"] for d in json.loads(outputs["deployments"])]
    assert len(reasons) == 301 and max(len(r) for r in reasons) <= 4_000


def test_a_huge_build_error_keeps_the_summary_small() -> None:
    error = BuildError("failed: " + "y" * 8_000_000, details=("z" * 3_000_000 + "\n") * 3)
    text = summary(RunReport(errors=[error]), redact=str)
    assert len(text.encode()) < 64 * 1024


def test_every_part_huge_at_once_still_fits_the_budget() -> None:
    """Huge image names, tags, problems, errors and reasons all in one report."""
    from deployer.errors import ConfigError, InputProblem
    from deployer.push import PushResult

    big = "h" * 200_000
    workloads = tuple(
        result(f"w{i}-{big[:200]}", "failed", big, previous=big, new=big, diagnosis=big)
        for i in range(400)
    )
    problems = [InputProblem(f"in{i}", big, big) for i in range(100)]
    report = RunReport(
        status="failed",
        push=PushResult(big, big, tuple([big] * 100), 1.0, pushed=True),
        rollout=RolloutResult("failed", workloads),
        errors=[ConfigError(problems), *[BuildError(big, details=big)] * 10],
    )
    text = summary(report, redact=str)
    assert len(text.encode()) <= SUMMARY_BUDGET
    assert text.startswith("## ❌ Invalid input")


def test_the_summary_file_never_passes_the_runners_limit(tmp_path: Path) -> None:
    actions, _, _, path = make(tmp_path)
    actions.append_summary("a" * (SUMMARY_LIMIT - 300_000))
    actions.append_summary("```text\n" + ("b" * 1000 + "\n") * 1000)  # ~1 MB more
    text = path.read_text()
    assert len(text.encode()) <= SUMMARY_LIMIT
    assert text.rstrip().endswith("The log has everything.*")
    assert text.count("```") == 2  # the cut block was closed
    actions.append_summary("more")  # no room left: nothing is written, nothing breaks
    assert len(path.read_text().encode()) <= SUMMARY_LIMIT


# -- issue 11.8: untrusted text is inert ---------------------------------------------------------

LINK = "[Approve the production deploy](https://evil.example/approve)"
IMAGE = "![x](https://evil.example/pixel.png)"
HOSTILE = f"{LINK} {IMAGE} <img src=x onerror=alert(1)> www.evil.example a|b\\|c ``` `x`"


def assert_inert(html: str) -> None:
    assert "<a " not in html and "<img" not in html, html
    assert "evil.example" in html  # shown, as text


def test_untrusted_text_never_becomes_a_link_an_image_or_html(tmp_path: Path) -> None:
    hostile = result(
        "web",
        "rolled-back",
        f"pod web-1, container app: CrashLoopBackOff: {HOSTILE}; rolled back",
        previous=f"evil.example/x:{HOSTILE}",
        diagnosis=f"pod web-1: {HOSTILE}\n```\n{HOSTILE}",
    )
    follower = result("api", "rolled-back", f"rolled back because {HOSTILE}")
    _, _, _, text = go(
        runner_env(tmp_path / "a"), RolloutResult("rolled-back", (hostile, follower))
    )
    assert_inert(render(text))
    # the dry-run plan shows image names from the cluster
    env = runner_env(tmp_path / "b")
    env["INPUT_DRY-RUN"] = "true"
    plan = RolloutResult("planned", (result("web", "planned", previous=f"evil/x:{HOSTILE}"),))
    _, _, _, text = go(env, plan)
    html = render(text)
    assert_inert(html)
    assert html.count("<tr>") == 2  # the pipes in the image name did not add cells or rows
    assert len(re.findall(r"<td>", html)) == 3


def test_a_build_error_and_an_input_value_are_inert(tmp_path: Path) -> None:
    error = BuildError(f"Building failed at Step 1/1 : RUN {HOSTILE}", details=HOSTILE)
    assert_inert(render(summary(RunReport(errors=[error]), redact=str)))
    env = runner_env(tmp_path)
    env["INPUT_NAMESPACE"] = LINK
    _, _, _, text = go(env, None)
    assert text.startswith("## ❌ Invalid input")
    assert_inert(render(text))


@pytest.mark.parametrize(
    "text", ["`", "``a``", "a|b", "a\\|b", "a\\\\|b", "|", "x`|`y", " lead", "<b>&amp;</b>"]
)
def test_a_code_span_in_a_table_cell_shows_exactly_its_text(text: str) -> None:
    html = render(f"| h |\n|---|\n| {code(text, cell=True)} |\n")
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert len(cells) == 1, html
    shown = re.fullmatch(r"<code>(.*)</code>", cells[0])
    assert shown, html
    expected = text.strip()
    # backslashes right before a pipe are shown doubled: ugly, but the cell holds
    expected = re.sub(r"(\\+)\|", lambda m: m[1] * 2 + "|", expected)
    assert json.loads(json.dumps(shown.group(1))) == (
        expected.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    )


def test_a_fence_cannot_be_closed_from_inside() -> None:
    block = fenced("a\n````\n[x](https://evil.example)\n~~~\n")
    html = render(block + "\n\nafter")
    assert html.count("<pre>") == 1 and "<a " not in html
    assert html.endswith("<p>after</p>\n")


# -- issue 17.6: a one-character secret, a CR in a file name, a cluster name -------------------


@pytest.mark.parametrize("secret", ["`", '"'])
def test_a_one_character_secret_cannot_unfence_untrusted_text(tmp_path: Path, secret: str) -> None:
    """Every value of a kubeconfig's exec env is masked, so a value of one backtick is a
    secret (was: every backtick of the rendered summary replaced by ``***``, so a pod
    message's link became live; a ``"`` broke the JSON outputs)."""
    import yaml

    env = runner_env(tmp_path)
    exec_entry = {
        "command": "aws",
        "args": ["--region", "eu-west-1", "eks", "get-token", "--cluster-name", "prod"],
        "env": [{"name": "AWS_PROFILE", "value": secret}],
    }
    env["INPUT_KUBECONFIG"] = yaml.safe_dump(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": {"exec": exec_entry}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    hostile = result("web", "rolled-back", f"pod web-1, container app: Error: {LINK}; rolled back")
    code, _, outputs, text = go(env, RolloutResult("rolled-back", (hostile,)))
    assert code == 1
    assert_inert(render(text))
    assert json.loads(outputs["deployments"])[0]["name"] == "web"


def test_the_plan_shows_a_file_name_with_a_cr_inertly() -> None:
    """A manifest file named with CR pairs and a backtick in the dry-run plan (issue 17.6;
    was a live link in the cluster-scoped note, which the plan replaced)."""
    from deployer.plan import Plan, compare

    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    source = f"k8s/a`\r\r{LINK}\r\r.yaml (document 1)"
    change = compare(None, doc, source=source, cluster_scoped=True)
    html = render(Plan("ghcr.io/acme/web:sha-1", (change,)).markdown())
    assert_inert(html)
