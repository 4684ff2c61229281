"""Every workflow snippet of README.md, run by nektos/act against the test environment.

A ```yaml block of README.md is a whole workflow or a part of one. Each becomes one
workflow, run as a user who pasted it would run it:

- a whole workflow (it has ``jobs:``) runs as written;
- a job's body (it has ``steps:``) is the job ``snippet`` of an ``on: push`` workflow,
  on ``ubuntu-latest`` with a 20-minute timeout;
- a list of steps runs after the quick start's checkout step (unless it checks out
  itself); a list that reads a step id it does not define continues the block
  before it, whose steps come first;
- a ``with:`` block is the ``with:`` of the quick start's deployer step;
- ``# ...`` in a deployer step stands for the quick start's inputs it leaves out;
  they are added.

Then the test environment's mapping of tests/integration/test_examples.py applies
(registry, namespace, secrets, the clouds' stand-ins), plus what a README block names
that the examples do not: ``myregistry.azurecr.io/`` → the test registry and
``vars.ACR_USERNAME``/``secrets.ACR_PASSWORD`` → its user and password, the EKS
cluster ``prod`` → the stand-in's, ``secrets.NPM_TOKEN``/``DEPLOY_KEY`` → made-up
values, the file ``ci/pip.conf`` a snippet names → a file of the repository, and
the GitHub API of the pull request plan → the REST stand-in.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.act import run_workflow
from tests.conftest import need_service
from tests.github_standin import TOKEN, GitHubStandin
from tests.helpers import create_deployment
from tests.integration.cloud import aks_kubeconfig, gke_kubeconfig
from tests.integration.test_examples import (
    action,
    action_images,
    cloud,
    cloud_job_env,
    cloud_mapping,
    cluster,
    deployed_image,
    mapped,
    mapping,
    services,
    user_repository,
)

pytestmark = pytest.mark.integration
__all__ = ["action", "action_images", "cloud", "cluster", "services"]  # fixtures used here

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER = "acme/deployer@v1"
CHECKOUT = {
    "uses": "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683",
    "with": {"persist-credentials": False},
}
ELIDED = "# ..."


@dataclass(frozen=True)
class Block:
    """One ```yaml block of README.md: where it is, its text and its YAML."""

    line: int
    heading: str
    text: str
    data: Any

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")


def readme_blocks() -> list[Block]:
    """The workflow blocks of README.md (not Dockerfiles, not Kubernetes YAML)."""
    text = (ROOT / "README.md").read_text()
    found = []
    for match in re.finditer(r"^```yaml\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        before = text[: match.start()]
        heading = (re.findall(r"^#+ (.+)$", before, flags=re.MULTILINE) or [""])[-1]
        data = yaml.safe_load(match.group(1))
        is_steps = isinstance(data, list) and all("uses" in s or "run" in s for s in data)
        is_part = isinstance(data, dict) and ({"jobs", "steps", "with"} & set(data))
        if is_steps or is_part:
            found.append(Block(before.count("\n") + 2, heading, match.group(1), data))
    return found


BLOCKS = readme_blocks()
QUICK_START = BLOCKS[0]


def block_ids() -> list[str]:
    """``quick-start``, then each block by its section (numbered when a section has several)."""
    ids = ["quick-start"]
    for block in BLOCKS[1:]:
        same = [b for b in BLOCKS[1:] if b.slug == block.slug]
        ids.append(block.slug if len(same) == 1 else f"{block.slug}-{same.index(block) + 1}")
    return ids


IDS = block_ids()


def quick_start_step() -> dict[str, Any]:
    [step] = [
        s
        for job in QUICK_START.data["jobs"].values()
        for s in job["steps"]
        if s.get("uses") == DEPLOYER
    ]
    return dict(step)


def _filled(step: dict[str, Any], elided: bool) -> dict[str, Any]:
    if step.get("uses") != DEPLOYER or not elided:
        return step
    inputs = {**quick_start_step()["with"], **(step.get("with") or {})}
    return {**step, "with": inputs}


def _steps_of(index: int) -> list[dict[str, Any]]:
    """A block of steps, after the block it continues (one that defines the ids it reads)."""
    block = BLOCKS[index]
    steps = [_filled(dict(s), ELIDED in block.text) for s in block.data]
    defined = {s.get("id") for s in steps}
    read = set(re.findall(r"steps\.([\w-]+)\.outputs", block.text))
    if read - defined and index > 0:
        return _steps_of(index - 1) + steps
    return steps


def as_workflow(index: int) -> dict[str, Any]:
    """README.md's block ``index`` as a whole workflow, by the rules of the module docstring."""
    block = BLOCKS[index]
    data = block.data
    if isinstance(data, dict) and "jobs" in data:
        return data  # type: ignore[no-any-return]
    if isinstance(data, dict) and "steps" in data:
        job = {"runs-on": "ubuntu-latest", "timeout-minutes": 20, **data}
    else:
        if isinstance(data, dict):  # a with: block
            steps = [{**quick_start_step(), "with": {**quick_start_step()["with"], **data["with"]}}]
        else:
            steps = _steps_of(index)
        if not any(str(s.get("uses", "")).startswith("actions/checkout@") for s in steps):
            steps = [CHECKOUT, *steps]
        job = {"runs-on": "ubuntu-latest", "timeout-minutes": 20, "steps": steps}
    return {"name": "snippet", "on": "push", "permissions": {}, "jobs": {"snippet": job}}


def runtime_token() -> str:
    """A token shaped like the runner's ACTIONS_RUNTIME_TOKEN: a JWT whose ``ac`` claim
    lists the cache scopes (BuildKit's type=gha reads it, unverified)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    scopes = json.dumps([{"Scope": "refs/heads/main", "Permission": 3}])
    claims = {"ac": scopes, "exp": int(time.time()) + 3600, "nbf": int(time.time()) - 60}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{random.token_hex(16)}"


def deployer_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        step
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if step.get("uses") == DEPLOYER
    ]


def test_the_readme_has_the_workflows_this_module_runs() -> None:
    kinds = [
        type(b.data).__name__ + ("-" + next(iter(b.data)) if isinstance(b.data, dict) else "")
        for b in BLOCKS
    ]
    assert "jobs" in QUICK_START.data, "README.md's first workflow block is the quick start"
    assert len(BLOCKS) >= 10, kinds
    for index in range(len(BLOCKS)):
        workflow = as_workflow(index)
        assert deployer_steps(workflow), f"{IDS[index]}: no {DEPLOYER} step"
        for step in deployer_steps(workflow):
            assert "image" in step["with"], f"{IDS[index]}: a deployer step without image"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=IDS)
def test_a_readme_workflow_runs(
    index: int,
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    cloud: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    settings = {**services, **need_service("DEPLOYER_BUILDKIT_IMAGE", "TEST_EKS_CLUSTER")}
    namespace = cluster["namespace"]
    registry = services["TEST_REGISTRY"]
    table = {
        **mapping(registry, namespace),
        **cloud_mapping(cloud),
        "myregistry.azurecr.io/": f"{registry}/acme/",
        "registry: ghcr.io\n": f"registry: {registry}\n",
        "projects/123456789/locations/": "projects/123456789012/locations/",
        "--name prod ": f"--name {cloud['TEST_EKS_CLUSTER']} ",
    }
    workflow = as_workflow(index)
    whole = isinstance(BLOCKS[index].data, dict) and "jobs" in BLOCKS[index].data
    text = BLOCKS[index].text if whole else yaml.safe_dump(workflow, sort_keys=False)
    text = mapped(text, table)
    pip_conf = f"[global]\nindex-url = https://u:{uuid.uuid4().hex}@pypi.example/simple\n"
    repo = user_repository(
        tmp_path, "snippet.yml", table, text=text, files={"ci/pip.conf": pip_conf}
    )
    create_deployment(kube_admin, namespace, "web", f"{registry}/acme/web:initial")
    ca = base64.b64encode(Path(cloud["TEST_CLOUD_CA_FILE"]).read_bytes()).decode()
    env = {
        **cloud_job_env(cloud),
        "DEPLOYER_BUILDKIT_IMAGE": settings["DEPLOYER_BUILDKIT_IMAGE"],
        "STANDIN_EKS_ENDPOINT": cloud["TEST_CLOUD_SERVER"],
        "STANDIN_EKS_CA_DATA": ca,
        # the runner gives every step one; act gives none (its cache service takes any)
        "ACTIONS_RUNTIME_TOKEN": runtime_token(),
    }
    secret_values = {
        "GITHUB_TOKEN": services["TEST_REGISTRY_PASSWORD"],
        "KUBECONFIG": cluster["kubeconfig"],
        "GKE_KUBECONFIG": gke_kubeconfig(tmp_path / "gke.kubeconfig").read_text(),
        "AKS_KUBECONFIG": aks_kubeconfig(
            tmp_path / "aks.kubeconfig", login="workloadidentity", with_ids=False
        ).read_text(),
        "ACR_PASSWORD": services["TEST_REGISTRY_PASSWORD"],
        "NPM_TOKEN": "npm_" + random.token_hex(16),
        "DEPLOY_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + random.token_hex(32)
        + "\n-----END OPENSSH PRIVATE KEY-----\n",
    }
    variables = {
        "AZURE_CLIENT_ID": cloud["TEST_AZURE_CLIENT_ID"],
        "AZURE_TENANT_ID": cloud["TEST_AZURE_TENANT_ID"],
        "ACR_USERNAME": services["TEST_REGISTRY_USERNAME"],
    }
    pull_request = "pull_request" in str(workflow.get("on", workflow.get(True)))
    with GitHubStandin() as github:
        if pull_request:
            secret_values["GITHUB_TOKEN"] = TOKEN
            env["GITHUB_API_URL"] = github.url
        result = run_workflow(
            repo,
            ".github/workflows/snippet.yml",
            event="pull_request" if pull_request else "push",
            payload=PULL_REQUEST if pull_request else None,
            actor=services["TEST_REGISTRY_USERNAME"],
            secrets=secret_values,
            env=env,
            variables=variables,
            actions={"acme/deployer": action},
            cache_server="type=gha" in text,
            timeout=900,
        )
        comments = github.state.ours(7)
    assert result.returncode == 0, (
        f"README.md {IDS[index]} (line {BLOCKS[index].line}):\n{text}\n{result.log}"
    )
    expected = "planned" if pull_request else "succeeded"
    assert result.log.count(f"deployer: {expected} in") == len(deployer_steps(workflow)), result.log
    if pull_request:
        assert len(comments) == 1
    elif any("deployments" in s["with"] for s in deployer_steps(workflow)):
        image = deployed_image(kube_admin, namespace)
        assert re.fullmatch(rf"{re.escape(registry)}/acme/web@sha256:[0-9a-f]{{64}}", image)
    for value in (secret_values["NPM_TOKEN"], services["TEST_REGISTRY_PASSWORD"]):
        assert value not in result.log


PULL_REQUEST = {
    "number": 7,
    "pull_request": {
        "number": 7,
        "head": {"ref": "feature", "repo": {"full_name": "acme/web", "fork": False}},
        "base": {"ref": "main", "repo": {"full_name": "acme/web"}},
    },
    "repository": {"full_name": "acme/web"},
}
