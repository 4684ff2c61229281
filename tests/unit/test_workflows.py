"""The workflows, the examples and action.yml: hardened, and consistent with the code.

Structure only (PyYAML); schema and expression checks are scripts/lint-workflows.sh.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.config import INPUTS
from deployer.report import RunReport, outputs

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
EXAMPLES_DIR = ROOT / "examples"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml")) + sorted(EXAMPLES_DIR.glob("*.yml"))
# The product itself, as users reference it in the examples.
PRODUCT_REF = "acme/deployer@v1"
PINNED_RE = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT_RE = re.compile(r"@[0-9a-f]{40}\s+#\s*v\d+(\.\d+){0,2}\b")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def triggers(workflow: dict[str, Any]) -> Any:
    # YAML 1.1: a bare `on` key is the boolean True.
    return workflow.get("on", workflow.get(True))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def uses_of(workflow: dict[str, Any]) -> Iterator[str]:
    for job in workflow.get("jobs", {}).values():
        if "uses" in job:  # a job calling a reusable workflow
            yield job["uses"]
        for step in job.get("steps", []):
            if "uses" in step:
                yield step["uses"]


def allowed_unpinned(path: Path, ref: str) -> bool:
    if ref.startswith("./"):
        return True
    return path.parent == EXAMPLES_DIR and ref == PRODUCT_REF


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    return load(ROOT / "action.yml")


def test_the_expected_workflows_exist() -> None:
    names = {rel(p) for p in WORKFLOWS}
    assert {
        ".github/workflows/ci.yml",
        ".github/workflows/release.yml",
        "examples/deploy.yml",
        "examples/reusable-deploy.yml",
    } <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=rel)
def test_third_party_actions_are_pinned_to_a_full_commit_sha(path: Path) -> None:
    refs = [u for u in uses_of(load(path)) if not allowed_unpinned(path, u)]
    unpinned = [u for u in refs if not PINNED_RE.match(u)]
    assert not unpinned, f"{rel(path)}: pin these by 40-hex commit SHA: {unpinned}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=rel)
def test_every_pinned_action_names_its_version_in_a_comment(path: Path) -> None:
    lines = [
        line
        for line in path.read_text().splitlines()
        if re.search(r"\buses:\s*\S+@[0-9a-f]{40}", line)
    ]
    missing = [line.strip() for line in lines if not VERSION_COMMENT_RE.search(line)]
    assert not missing, f"{rel(path)}: add '# vX.Y.Z' after the SHA: {missing}"


def test_the_product_is_referenced_by_its_major_tag_only_in_examples() -> None:
    for path in sorted(WORKFLOW_DIR.glob("*.yml")):
        assert PRODUCT_REF not in list(uses_of(load(path))), rel(path)
    example_refs = [u for p in sorted(EXAMPLES_DIR.glob("*.yml")) for u in uses_of(load(p))]
    assert PRODUCT_REF in example_refs


@pytest.mark.parametrize("path", WORKFLOWS, ids=rel)
def test_every_workflow_sets_top_level_permissions(path: Path) -> None:
    workflow = load(path)
    assert "permissions" in workflow, f"{rel(path)}: add top-level permissions ({{}} for none)"


@pytest.mark.parametrize("path", sorted(WORKFLOW_DIR.glob("*.yml")), ids=rel)
def test_repository_workflows_grant_nothing_by_default(path: Path) -> None:
    assert load(path)["permissions"] == {}, rel(path)


@pytest.mark.parametrize("path", WORKFLOWS, ids=rel)
def test_every_job_has_a_timeout(path: Path) -> None:
    for name, job in load(path)["jobs"].items():
        if "uses" in job:  # the called workflow's jobs carry their own timeouts
            continue
        assert "timeout-minutes" in job, f"{rel(path)}: job '{name}' has no timeout-minutes"


def test_write_permissions_are_confined_to_the_release_job() -> None:
    for path in sorted(WORKFLOW_DIR.glob("*.yml")):
        for name, job in load(path)["jobs"].items():
            perms = job.get("permissions", {})
            writes = {k for k, v in perms.items() if v == "write"}
            if rel(path) == ".github/workflows/release.yml" and name == "release":
                assert writes == {"contents", "packages"}
            else:
                assert not writes, f"{rel(path)}: job '{name}' can write {writes}"


def test_ci_runs_lint_test_and_an_e2e_deploy_that_rolls_back() -> None:
    ci = load(WORKFLOW_DIR / "ci.yml")
    assert {"lint", "test", "e2e"} <= set(ci["jobs"])
    on = triggers(ci)
    assert "push" in on and "pull_request" in on
    e2e_steps = ci["jobs"]["e2e"]["steps"]
    local = [s for s in e2e_steps if s.get("uses") == "./"]
    assert len(local) == 2
    good, bad = local
    assert not good.get("continue-on-error")
    assert bad.get("continue-on-error") is True
    later = e2e_steps[e2e_steps.index(bad) + 1 :]
    checks = " ".join(str(s.get("env", "")) + s.get("run", "") for s in later)
    assert f"steps.{bad['id']}.outputs.status" in checks
    assert "rolled-back" in checks
    assert f"steps.{good['id']}.outputs.image" in checks


def test_release_runs_on_version_tags_and_points_action_yml_at_the_prebuilt_image() -> None:
    release = load(WORKFLOW_DIR / "release.yml")
    assert triggers(release) == {"push": {"tags": ["v*.*.*"]}}
    text = (WORKFLOW_DIR / "release.yml").read_text()
    # By digest: a tag can be moved under users who pinned the release commit.
    assert 'image: \\"docker://$IMAGE@$DIGEST\\"' in text
    assert "docker://$IMAGE:$VERSION" not in text
    assert 'image="ghcr.io/${GITHUB_REPOSITORY,,}"' in text


def test_reusable_example_is_a_workflow_call_serialised_per_environment() -> None:
    workflow = load(EXAMPLES_DIR / "reusable-deploy.yml")
    call = triggers(workflow)["workflow_call"]
    assert {"environment", "image", "deployments", "namespace"} <= set(call["inputs"])
    assert {"kubeconfig", "registry-password"} <= set(call["secrets"])
    assert call["secrets"]["kubeconfig"]["required"] is True
    assert "status" in call["outputs"]
    assert "${{ inputs.environment }}" in str(workflow["concurrency"]["group"])
    assert workflow["concurrency"]["cancel-in-progress"] is False


def test_reusable_example_outputs_come_from_the_action_step() -> None:
    workflow = load(EXAMPLES_DIR / "reusable-deploy.yml")
    call_outputs = triggers(workflow)["workflow_call"]["outputs"]
    job = workflow["jobs"]["deploy"]
    step_id = next(s["id"] for s in job["steps"] if s.get("uses") == PRODUCT_REF)
    for name, spec in call_outputs.items():
        assert spec["value"] == f"${{{{ jobs.deploy.outputs.{name} }}}}"
        assert job["outputs"][name] == f"${{{{ steps.{step_id}.outputs.{name} }}}}"


def test_deploy_example_serialises_deploys_per_environment() -> None:
    workflow = load(EXAMPLES_DIR / "deploy.yml")
    job = workflow["jobs"]["deploy"]
    assert workflow["concurrency"]["group"] == f"deploy-{job['environment']['name']}"
    assert workflow["concurrency"]["cancel-in-progress"] is False


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yml")), ids=rel)
def test_examples_pass_only_inputs_the_action_declares(path: Path, action: dict[str, Any]) -> None:
    for job in load(path)["jobs"].values():
        for step in job.get("steps", []):
            if step.get("uses") == PRODUCT_REF:
                assert set(step.get("with", {})) <= set(action["inputs"])
                assert "image" in step["with"]


def test_action_inputs_are_exactly_the_ones_the_code_reads(action: dict[str, Any]) -> None:
    assert set(action["inputs"]) == set(INPUTS)


def test_action_input_defaults_agree_with_the_code(action: dict[str, Any]) -> None:
    for name, spec in action["inputs"].items():
        declared = str(spec.get("default", ""))
        assert declared == INPUTS[name][0], f"input '{name}': action.yml {declared!r}"


def test_every_action_input_and_output_has_a_description(action: dict[str, Any]) -> None:
    for kind in ("inputs", "outputs"):
        for name, spec in action[kind].items():
            assert str(spec.get("description", "")).strip(), f"{kind} '{name}' has no description"


def test_only_the_image_input_is_required(action: dict[str, Any]) -> None:
    required = {n for n, spec in action["inputs"].items() if spec.get("required")}
    assert required == {"image"}


def test_action_outputs_are_exactly_the_ones_the_report_writes(action: dict[str, Any]) -> None:
    assert set(action["outputs"]) == set(outputs(RunReport(), redact=str))


def test_action_is_a_docker_container_action(action: dict[str, Any]) -> None:
    assert action["runs"]["using"] == "docker"
    # main builds from source; a release commit runs the image it published, by digest.
    image = action["runs"]["image"]
    assert image == "Dockerfile" or re.fullmatch(
        r"docker://ghcr\.io/[a-z0-9._-]+/[a-z0-9._-]+@sha256:[0-9a-f]{64}", image
    ), image


def readme_workflows() -> list[dict[str, Any]]:
    """The workflows shown in README.md's yaml code blocks."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [w for w in map(yaml.safe_load, blocks) if isinstance(w, dict) and "jobs" in w]


def checkouts(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for job in workflow.get("jobs", {}).values():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                yield step


def test_the_readme_and_examples_check_out_without_persisting_the_token() -> None:
    """With the token in .git/config, a `COPY . .` bakes it into the pushed image."""
    workflows = {f"README.md workflow {n + 1}": w for n, w in enumerate(readme_workflows())}
    assert workflows, "README.md shows no workflow"
    workflows.update({rel(p): load(p) for p in sorted(EXAMPLES_DIR.glob("*.yml"))})
    for name, workflow in workflows.items():
        steps = list(checkouts(workflow))
        assert steps, f"{name} has no checkout step"
        for step in steps:
            persisted = (step.get("with") or {}).get("persist-credentials")
            assert persisted is False, f"{name}: set persist-credentials: false on {step['uses']}"


def readme_table(heading: str) -> dict[str, list[str]]:
    """The rows of the table under README.md's ``## <heading>``: first cell → the others."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        found = re.fullmatch(r"`([a-z0-9-]+)`", cells[0]) if line.startswith("|") else None
        if found:
            assert found[1] not in rows, f"README.md lists {found[1]} twice"
            rows[found[1]] = cells[1:]
    return rows


def test_the_readme_inputs_table_is_action_yml_and_the_code_one_to_one(
    action: dict[str, Any],
) -> None:
    table = readme_table("Inputs")
    assert list(table) == list(action["inputs"]) == list(INPUTS)
    for name, (default, meaning) in table.items():
        declared = INPUTS[name][0]
        if declared:
            assert f"`{declared}`" in default, f"README default of {name}: {default!r}"
        assert meaning, f"README.md says nothing about input {name}"


def test_the_readme_outputs_table_is_action_yml_one_to_one(action: dict[str, Any]) -> None:
    assert list(readme_table("Outputs")) == list(action["outputs"])
