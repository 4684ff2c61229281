"""Stage 4: the step's outputs and its job summary, from the results of the stages.

The summary is read at 2 a.m.: it leads with the answer (one line per failed
workload: what happened, where, and what the workload runs now), then what to do
next where we know it, then a table narrow enough for GitHub's ~1,000 px content
width (outcome first, images shortened), then one section per failed workload with
its diagnosis, and the full values collapsed at the end.

Safety rules, in this order:

1. Every field is redacted before it is escaped or serialised (a password with
   ``& < > " \\`` or non-ASCII would otherwise survive as ``&amp;`` or ``\\u00e9``).
2. Text from outside (pod messages, events, logs, build output, image names from
   the cluster, input values) is shown only inside code spans or fenced blocks,
   so it cannot become a link, an image or HTML.
3. Every field, every section and the whole summary have a size cap: the runner
   drops a step summary over 1 MiB entirely.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.actions import cut_markdown
from deployer.errors import DeployerError, InputProblem
from deployer.markdown import (
    FIELD_CHARS,
    clip,
    clip_middle,
    code,
    fenced,
    short_image,
)

if TYPE_CHECKING:  # annotations only: a run that fails on its inputs never imports the stages
    from deployer.build import BuildResult
    from deployer.push import PushResult
    from deployer.rollout import DeploymentResult, RolloutResult

__all__ = ["SUMMARY_BUDGET", "RunReport", "code", "fenced", "outputs", "short_image", "summary"]

Redact = Callable[[str], str]

SUMMARY_BUDGET = 256 * 1024  # bytes of Markdown; the runner's limit is 1 MiB per step
CELL_CHARS = 40  # a table cell (one line: GitHub's tables do not wrap)
OUTPUT_REASON_CHARS = 4_000  # a reason in the ``deployments`` output
LEAD_LINES = 10  # answer lines under the title
TABLE_ROWS = 50
DETAILS_CHARS = 32 * 1024  # the collapsed block of full values
MAX_ERRORS = 3
MAX_PROBLEMS = 20
PROBLEM_CHARS = 300  # an input problem or its example

STATUS_ICON = {
    "succeeded": "✅",
    "planned": "📝",
    "failed": "❌",
    "rolled-back": "↩️",
    "cancelled": "⏹️",
    "paused": "⏸️",
}
RESULT_WORDS = {
    "succeeded": "succeeded",
    "planned": "planned",
    "failed": "failed",
    "rolled-back": "rolled back",
    "cancelled": "cancelled",
    "paused": "paused",
}


@dataclass
class RunReport:
    """Everything the run produced, filled in as the stages finish."""

    status: str = "failed"
    image: str = ""
    build: BuildResult | None = None
    push: PushResult | None = None
    rollout: RolloutResult | None = None
    errors: list[DeployerError] = field(default_factory=list)
    duration: float = 0.0
    no_plan: str = ""  # why a dry run has no plan (a fork's pull request: no credentials)


# -- redaction first --------------------------------------------------------------------------


def _scrubbed(value: Any, redact: Redact) -> Any:
    """``value`` with every string in it (dataclass fields, tuples, dicts) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        return tuple(_scrubbed(v, redact) for v in value)
    if isinstance(value, list):
        return [_scrubbed(v, redact) for v in value]
    if isinstance(value, dict):
        return {_scrubbed(k, redact): _scrubbed(v, redact) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        clone = copy.copy(value)
        for f in dataclasses.fields(value):
            object.__setattr__(clone, f.name, _scrubbed(getattr(value, f.name), redact))
        return clone
    return value


@dataclass(frozen=True)
class _Error:
    """A redacted view of a DeployerError."""

    title: str
    message: str
    details: str
    problems: tuple[InputProblem, ...]


def _redacted(report: RunReport, redact: Redact) -> tuple[RunReport, list[_Error]]:
    errors = [
        _Error(
            title=redact(e.title),
            message=redact(e.message),
            details=redact(e.details),
            problems=tuple(_scrubbed(list(getattr(e, "problems", []) or []), redact)),
        )
        for e in report.errors
    ]
    view = copy.copy(report)
    for name in ("status", "image", "build", "push", "rollout"):
        setattr(view, name, _scrubbed(getattr(report, name), redact))
    view.errors = []
    return view, errors


# -- outputs ------------------------------------------------------------------------------------


def outputs(report: RunReport, *, redact: Redact) -> dict[str, str]:
    """The step outputs declared in action.yml, as strings; every field redacted first."""
    report, _errors = _redacted(report, redact)
    workloads = [d.as_output() for d in report.rollout.deployments] if report.rollout else []
    for entry in workloads:  # outputs have a 1 MB limit per job; a pod message has none
        reason = entry.get("reason")
        if isinstance(reason, str):
            entry["reason"] = clip(reason, OUTPUT_REASON_CHARS)
    deployments = [w for w in workloads if w.get("kind") == "Deployment"]
    revisions = report.rollout.revisions if report.rollout else {}
    plan = report.rollout.plan if report.rollout else None
    references: list[str] = []
    if report.push:
        references = list(report.push.references)
    elif report.build:
        references = list(report.build.references)
    return {
        "image": report.push.image if report.push else "",
        "digest": report.push.digest if report.push else "",
        "image-id": report.build.image_id if report.build else "",
        "tags": json.dumps(references),
        "status": report.status,
        "revision": json.dumps(revisions, sort_keys=True),
        "deployments": json.dumps(deployments),
        "workloads": json.dumps(workloads),
        "duration": f"{report.duration:.1f}",
        "url": report.rollout.url if report.rollout else "",
        "plan": plan.markdown() if plan else "",
        "changes": plan.changes_json() if plan else "[]",
    }


def _kind(d: DeploymentResult) -> str:
    return str(getattr(d, "kind", "") or "Deployment")


def _workload(d: DeploymentResult, limit: int = 0) -> str:
    """``deployment/web``: the name kubectl takes (cut in the middle to ``limit``)."""
    name = f"{_kind(d).lower()}/{d.name}"
    return clip_middle(name, limit) if limit else name


def _kubectl(d: DeploymentResult, *args: str) -> str:
    return code(" ".join(["kubectl", "-n", d.namespace, *args]))


# -- the answer: what happened and what to do ------------------------------------------------------

_POD_REASON = re.compile(
    r"pod (?P<pod>[\w.-]+)(?:, container (?P<container>[\w.-]+))?: "
    r"(?P<reason>[A-Za-z]+(?: \(last exit: [\w ]+\))?)"
)
_FOLLOWER = re.compile(r"^(stopped waiting|rolled back because)")


def _is_culprit(d: DeploymentResult) -> bool:
    """A workload that failed by itself (not one rolled back because another failed)."""
    return d.result in ("failed", "rolled-back", "cancelled") and not _FOLLOWER.match(d.reason)


_NOT_READY = re.compile(r"pod (?P<pod>[\w.-]+) never became ready")
_TOO_SLOW = re.compile(r"^not complete after (?P<seconds>\d+) s")


def _first_event(d: DeploymentResult) -> str:
    """The first Warning event of the diagnosis (e.g. the failing readiness probe), if any."""
    lines = (d.diagnosis or "").splitlines()
    if "Warning events:" in lines:
        at = lines.index("Warning events:") + 1
        if at < len(lines):
            return lines[at].strip()
    return ""


def _cause(d: DeploymentResult) -> str:
    found = _POD_REASON.search(d.reason)
    if found and found["container"]:
        return f"{code(found['reason'])} in container {code(found['container'])}"
    if found:
        return f"{code(found['reason'])} (pod {code(found['pod'])})"
    event = _first_event(d)
    seen = f" ({code(event, limit=120)})" if event else ""
    if _NOT_READY.search(d.reason):
        return f"the new pods never became Ready{seen}"
    slow = _TOO_SLOW.match(d.reason)
    if slow:
        return f"not complete after {slow['seconds']} s{seen}"
    return code(d.reason.split("; ")[0], limit=160) or "no reason given"


def _outcome(d: DeploymentResult) -> str:
    revision = f" (revision {d.revision})" if d.revision is not None else ""
    if d.result == "rolled-back":
        previous = short_image(d.previous_image)
        return f"rolled back to {code(previous)}{revision}" if previous else "rolled back"
    if d.result == "failed":
        if "rollback failed" in d.reason:
            return "**the rollback failed too**: see below"
        if "nothing to roll back to" in d.reason or "no previous revision" in d.reason:
            return "nothing to roll back to"
        return f"not rolled back{revision}"
    if d.result == "cancelled":
        back = re.search(r"put back to (revision \d+|[^;()]+?) \(not waited for\)", d.reason)
        if back:
            return f"cancelled, put back to {back[1]} (not waited for)"
        if "before it was changed" in d.reason:
            return "cancelled before it was changed"
        if "left running" in d.reason:
            return "cancelled, left running to finish"
        return "cancelled, the cluster may still be changing"
    return RESULT_WORDS.get(d.result, d.result)


def _progressive_step(d: DeploymentResult) -> str:
    """What to do next when Argo Rollouts or Flagger decided (or waited); '' otherwise."""
    reason = d.reason
    if "waiting for promotion" in reason:
        promote = code(f"kubectl argo rollouts promote {d.name} -n {d.namespace}", limit=300)
        return (
            f"the Rollout waited at a pause step for a promotion until the timeout: promote it "
            f"({promote}) while the run waits, or set `on-pause: succeed` to end the run there."
        )
    if reason.startswith("aborted by Argo Rollouts"):
        get = code(f"kubectl argo rollouts get rollout {d.name} -n {d.namespace}", limit=300)
        return f"the canary's analysis failed (its metric and Job are below): {get} shows the run."
    if re.match(r"canary \S+ failed", reason):
        canary = reason.split(" ", 2)[1]
        return (
            f"Flagger's analysis rejected the new revision: "
            f"{_kubectl(d, 'describe', 'canary/' + canary)} shows its checks and events."
        )
    return ""


def _next_step(d: DeploymentResult) -> str:
    """What to do next for this failure, where we know it; '' otherwise."""
    found = _POD_REASON.search(d.reason) or _NOT_READY.search(d.reason)
    pod = found["pod"] if found else ""
    describe_pod = _kubectl(d, "describe", "pod", pod) if pod else ""
    describe = describe_pod or _kubectl(d, "describe", _workload(d))
    reason = d.reason
    logs = " (its last log lines are below)" if "log lines:" in (d.diagnosis or "") else ""
    if "OOMKilled" in reason:
        return (
            "the container ran out of memory: raise its `resources.limits.memory`, "
            f"or find what uses the memory{logs}."
        )
    if "CrashLoopBackOff" in reason or re.search(r": Error\b", reason):
        return (
            f"the container exits soon after it starts{logs}. "
            f"Reproduce it locally with {code('docker run --rm ' + d.new_image, limit=400)}."
        )
    if "ImagePullBackOff" in reason or "ErrImagePull" in reason:
        return (
            f"the cluster's nodes cannot pull {code(short_image(d.new_image))}: give the pods "
            "an `imagePullSecrets` entry for the registry, or make the image readable to them."
        )
    if "InvalidImageName" in reason:
        return "the image reference is not valid for the cluster: check the `image` input."
    if "CreateContainerConfigError" in reason or "CreateContainerError" in reason:
        return (
            f"a ConfigMap, Secret or key that the container needs is missing: {describe} names it."
        )
    if "Unschedulable" in reason:
        return (
            f"no node can take the pod: {describe} says why (resources, taints, "
            "affinity); lower its resource requests or add nodes."
        )
    if "ReplicaSetCreateError" in reason:
        return f"the cluster refused the new pods (often a ResourceQuota): {describe}."
    if "never became ready" in reason or "not ready" in reason:
        return (
            f"the pods started but never became Ready: check the readiness probe ({describe}), "
            "or raise the `timeout` input if the app needs longer to start."
        )
    progressive = _progressive_step(d)
    if progressive:
        return progressive
    if "not complete after" in reason or "progress deadline" in reason:
        return (
            f"the rollout did not finish in time: {describe}; "
            "raise the `timeout` input if it is slow."
        )
    if d.result == "cancelled":
        status = f"see where it stands: {_kubectl(d, 'rollout', 'status', _workload(d))}"
        undo = re.search(r"undo with (kubectl rollout undo [^;]+)", reason)
        return f"{status}; to undo it: {code(undo[1])}." if undo else f"{status}."
    return ""


def _lead(deployments: Sequence[DeploymentResult]) -> list[str]:
    culprits = [d for d in deployments if _is_culprit(d)]
    lines = [
        f"**{code(_workload(d))}**: {_cause(d)} — {_outcome(d)}" for d in culprits[:LEAD_LINES]
    ]
    if len(culprits) > LEAD_LINES:
        lines.append(f"… and {len(culprits) - LEAD_LINES} more: see the table below.")
    followers = [d for d in deployments if not _is_culprit(d) and d.result == "rolled-back"]
    if followers:
        names = ", ".join(code(_workload(d)) for d in followers[:LEAD_LINES])
        more = f" and {len(followers) - LEAD_LINES} more" if len(followers) > LEAD_LINES else ""
        lines.append(f"Also rolled back, to keep the release all-or-nothing: {names}{more}.")
    steps = []
    for d in culprits[:LEAD_LINES]:
        step = _next_step(d)
        if step:
            step = f"{code(_workload(d))}: {step}" if len(culprits) > 1 else step
            if step not in steps:
                steps.append(step)
    if len(steps) == 1:
        lines.append(f"**Next:** {steps[0]}")
    elif steps:
        lines += ["**Next:**", *(f"- {s}" for s in steps)]
    return _paragraphs(lines)


def _paragraphs(lines: Iterable[str]) -> list[str]:
    """Each line its own paragraph, list items kept together."""
    out: list[str] = []
    for line in lines:
        if not (line.startswith("- ") and out and out[-1].startswith(("- ", "**Next:**"))):
            out.append("")
        out.append(line)
    return out[1:]


# -- sections ----------------------------------------------------------------------------------


def _title(report: RunReport, errors: Sequence[_Error]) -> str:
    icon = STATUS_ICON.get(report.status, "")
    deployed = bool(report.rollout and report.rollout.deployments)
    if report.status == "succeeded":
        done = "deployed" if deployed else "built and pushed" if report.build else "image found"
        what = f"Succeeded: {done}"
    elif report.status == "planned":
        what = "Dry run: nothing was pushed or changed"
    elif report.status == "rolled-back":
        what = "Rolled back: the new version did not come up"
    elif report.status == "cancelled":
        what = "Cancelled"
    elif report.status == "paused":
        what = "Paused: waiting for a promotion"
    elif errors:
        what = errors[0].title
    else:
        what = "Failed: the rollout did not complete"
    return f"## {icon} {what}".replace("  ", " ")


def _success_line(report: RunReport) -> list[str]:
    image = report.push.image if report.push else report.image
    deployments = report.rollout.deployments if report.rollout else ()
    if not image:
        return []
    if report.status == "planned":
        found = "Built" if report.build else "Found"  # build: false looked the image up
        return [f"{found} {code(short_image(image))}; nothing was pushed and no workload changed."]
    if deployments:
        names = ", ".join(code(_workload(d)) for d in deployments[:LEAD_LINES])
        more = f" and {len(deployments) - LEAD_LINES} more" if len(deployments) > LEAD_LINES else ""
        return [f"{names}{more} now run {code(short_image(image))}."]
    return [f"{code(short_image(image))} is in the registry."]


def _paused(deployments: Sequence[DeploymentResult]) -> list[str]:
    """What waits for a promotion (``on-pause: succeed``), and how to go on."""
    paused = [d for d in deployments if d.result == "paused"]
    lines = [f"**{code(_workload(d))}**: {code(d.reason, limit=300)}" for d in paused[:LEAD_LINES]]
    for d in paused[:LEAD_LINES]:
        promote = code(f"kubectl argo rollouts promote {d.name} -n {d.namespace}", limit=300)
        abort = code(f"kubectl argo rollouts abort {d.name} -n {d.namespace}", limit=300)
        lines.append(f"**Next:** promote it when it is right: {promote}; or abort it: {abort}.")
    return _paragraphs(lines)


def _table(deployments: Sequence[DeploymentResult]) -> list[str]:
    phases = any(getattr(d, "phase", "") for d in deployments)
    lines = [
        "| Result | Workload | Revision | Image now |" + (" Phase |" if phases else ""),
        "|---|---|---|---|" + ("---|" if phases else ""),
    ]
    for d in deployments[:TABLE_ROWS]:
        icon = STATUS_ICON.get(d.result, "")
        now = d.previous_image if d.result == "rolled-back" else d.new_image
        phase = f" {code(getattr(d, 'phase', ''), limit=CELL_CHARS, cell=True)} |" if phases else ""
        lines.append(
            f"| {icon} {RESULT_WORDS.get(d.result, code(d.result, cell=True))} "
            f"| {code(_workload(d, CELL_CHARS), cell=True)} "
            f"| {'' if d.revision is None else d.revision} "
            f"| {code(short_image(now), limit=2 * CELL_CHARS, cell=True)} |{phase}"
        )
    if len(deployments) > TABLE_ROWS:
        lines += ["", f"… and {len(deployments) - TABLE_ROWS} more in the `deployments` output."]
    return lines


def _plan(deployments: Sequence[DeploymentResult]) -> list[str]:
    image = deployments[0].new_image if deployments else ""
    lines = [
        f"The plan: each container below would be set to {code(short_image(image))}.",
        "",
        "| Workload | Container | Now |",
        "|---|---|---|",
    ]
    rows = 0
    for d in deployments:
        befores = d.previous_image.split(", ") if d.previous_image else []
        for i, container in enumerate(d.containers):
            if rows == TABLE_ROWS:
                break
            rows += 1
            before = befores[i] if i < len(befores) else ""
            lines.append(
                f"| {code(_workload(d, CELL_CHARS), cell=True)} "
                f"| {code(clip_middle(container, CELL_CHARS), cell=True)} "
                f"| {code(short_image(before), limit=2 * CELL_CHARS, cell=True) or 'new'} |"
            )
    total = sum(len(d.containers) for d in deployments)
    if total > rows:
        lines += ["", f"… and {total - rows} more in the `deployments` output."]
    return lines


def _workload_section(d: DeploymentResult) -> list[str]:
    icon = STATUS_ICON.get(d.result, "")
    heading = (
        f"### {icon} {code(_workload(d, 2 * CELL_CHARS))} in "
        f"{code(d.namespace, limit=2 * CELL_CHARS)}: {RESULT_WORDS.get(d.result, d.result)}"
    )
    diagnosis = d.diagnosis or ""
    reason = clip(d.reason, FIELD_CHARS)
    first = diagnosis.split("\n", 1)[0].strip()
    if first and reason.startswith(first):
        # The diagnosis starts with the reason; show only what the reason adds (the undo).
        extra = reason.replace(first, "", 1).strip("; ")
        text = diagnosis + (f"\n\n{extra}" if extra else "")
    else:
        text = "\n\n".join(filter(None, [reason, diagnosis]))
    return [heading, "", fenced(text), ""]


def _collapsed(summary_line: str, body: list[str]) -> list[str]:
    return [f"<details><summary>{summary_line}</summary>", "", *body, "", "</details>", ""]


def _follower_section(d: DeploymentResult) -> list[str]:
    return _collapsed(
        f"{STATUS_ICON.get(d.result, '')} {_workload_text(d)}: {RESULT_WORDS.get(d.result, '')}",
        [fenced(clip(d.reason, FIELD_CHARS))],
    )


def _workload_text(d: DeploymentResult) -> str:
    """For an HTML ``<summary>``: our own characters only, the rest replaced."""
    return re.sub(r"[^\w./-]", "?", _workload(d, 2 * CELL_CHARS))


def _details(report: RunReport) -> list[str]:
    items: list[str] = []
    if report.push:
        items.append(f"- Image: {code(report.push.image)}")
        items.append(f"- Digest: {code(report.push.digest)}")
    elif report.image:
        items.append(f"- Image: {code(report.image)}")
    if report.build:
        items.append(f"- Image ID: {code(report.build.image_id)}")
        if report.build.builder:
            items.append(f"- Builder: {code(report.build.builder)}")
    references = (
        report.push.references if report.push else report.build.references if report.build else ()
    )
    for reference in references[:TABLE_ROWS]:
        items.append(f"- Tag: {code(reference, limit=300)}")
    deployments = report.rollout.deployments if report.rollout else ()
    for shown, d in enumerate(deployments[:TABLE_ROWS]):
        if sum(len(i) for i in items) > DETAILS_CHARS:
            items.append(f"- … and {len(deployments) - shown} more in the `deployments` output")
            break
        containers = ", ".join(d.containers)
        before = code(d.previous_image) or "(new)"
        items.append(
            f"- {code(_workload(d))} in {code(d.namespace)}, "
            f"container {code(containers)}: {before} → {code(d.new_image)}"
        )
    times = []
    if report.build:
        times.append(f"build {report.build.duration:.1f} s")
    if report.push:
        times.append(
            f"{'push' if report.push.pushed else 'digest lookup'} {report.push.duration:.1f} s"
        )
    if not items:
        return []
    times.append(f"total {report.duration:.1f} s")
    items.append("- Time: " + ", ".join(times))
    return _collapsed("Images, tags and timings (full values)", items)


def _error_sections(errors: Sequence[_Error]) -> list[str]:
    lines: list[str] = []
    for error in errors[:MAX_ERRORS]:
        if error.problems:
            lines += ["Nothing was built, pushed or changed. Fix these inputs:", ""]
            for p in error.problems[:MAX_PROBLEMS]:
                lines += [
                    f"- Input **{code(p.input, limit=CELL_CHARS)}**: "
                    f"{code(p.problem, limit=PROBLEM_CHARS)}\\",
                    f"  Example: {code(f'{p.input}: {p.example}', limit=PROBLEM_CHARS)}",
                ]
            if len(error.problems) > MAX_PROBLEMS:
                lines.append(f"- … and {len(error.problems) - MAX_PROBLEMS} more in the log")
            lines.append("")
            continue
        lines += [fenced(clip(error.message, FIELD_CHARS * 4), max_lines=20), ""]
        if error.details:
            lines += ["Last lines of the log:", "", fenced(error.details), ""]
    return lines


def summary(report: RunReport, *, redact: Redact) -> str:
    """The job summary as Markdown, every field redacted first; at most SUMMARY_BUDGET bytes."""
    report, errors = _redacted(report, redact)
    deployments = list(report.rollout.deployments) if report.rollout else []
    head = [_title(report, errors), ""]
    if report.no_plan:
        head += [f"No plan: {report.no_plan}.", ""]
    elif report.status in ("succeeded", "planned") and not errors:
        head += [*_success_line(report), ""]
    elif report.status == "paused" and not errors:
        head += [*_paused(deployments), ""]
    elif deployments and report.status != "planned":
        head += [*_lead(deployments), ""]
    head += _error_sections(errors)
    for note in [str(n) for n in getattr(report.rollout, "notes", None) or ()][:TABLE_ROWS]:
        # e.g. an earlier run that was killed mid-deploy; its words come from the cluster
        head += ["> [!WARNING]", f"> {code(note, limit=4 * CELL_CHARS)}", ""]
    plan = report.rollout.plan if report.rollout else None
    if plan is not None and report.status == "planned":
        head += [plan.markdown(), ""]
    elif deployments and report.status == "planned":
        head += [*_plan(deployments), ""]
    elif deployments:
        head += [*_table(deployments), ""]

    sections: list[list[str]] = []
    for d in deployments:
        if _is_culprit(d):
            sections.append(_workload_section(d))
        elif d.result not in ("succeeded", "planned", "paused"):
            sections.append(_follower_section(d))
    restored = [str(r) for r in getattr(report.rollout, "restored", None) or ()]
    if restored:  # the rollout's lines about the other objects it applied and put back
        items = [f"- {code(r, limit=4 * CELL_CHARS)}" for r in restored[:TABLE_ROWS]]
        if len(restored) > TABLE_ROWS:
            items.append(f"- … and {len(restored) - TABLE_ROWS} more in the log")
        intro = "What the rollback did to the other objects this run applied:"
        sections.append([intro, "", *items, ""])
    tail = _details(report)

    text = "\n".join(head)
    used = len(text.encode()) + len("\n".join(tail).encode()) + 200
    left_out = 0
    for section in sections:
        block = "\n".join(section)
        size = len(block.encode()) + 1
        if left_out or used + size > SUMMARY_BUDGET:
            left_out += 1
            continue
        text += "\n" + block
        used += size
    if left_out:
        text += f"\n{left_out} more sections left out to keep the summary small: see the log.\n"
    text += "\n" + "\n".join(tail)
    if len(text.encode()) > SUMMARY_BUDGET:  # the parts are capped; this is the last guard
        text = cut_markdown(text, SUMMARY_BUDGET)
    return text
