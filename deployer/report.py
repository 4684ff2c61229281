"""Stage 4: the step's outputs and its job summary, from the results of the stages.

Text from outside (pod messages, build log lines) goes into the summary escaped
for Markdown/HTML, inside code fences longer than any backtick run it contains.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.build import BuildResult
from deployer.errors import DeployerError
from deployer.push import PushResult

if TYPE_CHECKING:
    from deployer.rollout import RolloutResult

__all__ = ["RunReport", "outputs", "summary"]

STATUS_ICON = {
    "succeeded": "✅",
    "planned": "📝",
    "failed": "❌",
    "rolled-back": "↩️",
    "cancelled": "⏹️",
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


def outputs(report: RunReport) -> dict[str, str]:
    """The step outputs declared in action.yml, as strings."""
    workloads = [d.as_output() for d in report.rollout.deployments] if report.rollout else []
    deployments = [w for w in workloads if w["kind"] == "Deployment"]
    revisions = report.rollout.revisions if report.rollout else {}
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
    }


def _cell(text: object) -> str:
    escaped = html.escape(str(text), quote=False).replace("|", "&#124;")
    return escaped.replace("\r", "").replace("\n", "<br>") or " "


def _code(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def _workload(kind: str, namespace: str, name: str) -> str:
    prefix = "" if kind == "Deployment" else f"{kind.lower()}/"
    return f"{prefix}{namespace}/{name}"


def summary(report: RunReport) -> str:
    """The job summary as Markdown."""
    icon = STATUS_ICON.get(report.status, "")
    lines = [f"## {icon} deployer: {report.status}", ""]
    rows: list[tuple[str, str]] = []
    if report.push:
        rows.append(("Image", f"`{report.push.image}`"))
        rows.append(("Digest", f"`{report.push.digest}`"))
    elif report.image:
        rows.append(("Image", f"`{report.image}`"))
    if report.build:
        rows.append(("Image ID", f"`{report.build.image_id}`"))
        rows.append(("Build time", f"{report.build.duration:.1f} s"))
    references = (
        report.push.references if report.push else report.build.references if report.build else ()
    )
    if references:
        rows.append(("Tags", "<br>".join(f"`{_cell(r)}`" for r in references)))
    if report.push:
        label = "Push time" if report.push.pushed else "Digest lookup"
        rows.append((label, f"{report.push.duration:.1f} s"))
    rows.append(("Duration", f"{report.duration:.1f} s"))
    lines += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]

    if report.rollout and report.rollout.deployments:
        lines += [
            "### Deployments",
            "",
            "| Deployment | Containers | Previous image | New image | Revision | Result | Reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in report.rollout.deployments:
            lines.append(
                f"| {_cell(_workload(d.kind, d.namespace, d.name))} "
                f"| {_cell(', '.join(d.containers))} "
                f"| {_cell(d.previous_image)} | {_cell(d.new_image)} "
                f"| {_cell('' if d.revision is None else d.revision)} | {_cell(d.result)} "
                f"| {_cell(d.reason)} |"
            )
        lines.append("")
        if report.rollout.restored:
            lines += ["Restored by the rollback:", ""]
            lines += [f"- {_cell(line)}" for line in report.rollout.restored]
            lines.append("")
        for d in report.rollout.deployments:
            if d.diagnosis:
                lines += [f"#### {_cell(d.name)}: {_cell(d.result)}", "", _code(d.diagnosis), ""]

    for error in report.errors:
        lines += [f"### {_cell(error.title)}", "", _cell(error.message), ""]
        if error.details:
            lines += [_code(error.details), ""]
    return "\n".join(lines)
