"""The dry-run plan and its pull request comment: the whole run, real cluster and registry.

The image is built and pushed once; the dry runs use ``build: false`` with its tag,
so the plan shows it pinned by the digest the registry answers with. The GitHub
API is the stand-in of tests/github_standin.py on a loopback port.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.github_standin import REPOSITORY, TOKEN, GitHubStandin
from tests.helpers import create_deployment, read
from tests.integration.test_build_push import go, runner_env, services, workspace
from tests.unit.test_actions import commands
from tests.unit.test_secrets import assert_no_leaks

pytestmark = pytest.mark.integration
__all__ = ["services", "workspace"]  # fixtures used here

OLD_PASSWORD = "live-db-Passw0rd-4711-never-shown"
NEW_PASSWORD = "new-db-Passw0rd-0815-never-shown"


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with GitHubStandin() as standin:
        yield standin


@pytest.fixture
def pushed(services: dict[str, str], workspace: Path) -> tuple[str, str]:
    """(repository, digest) of an image pushed as tag v1."""
    env = runner_env(services, workspace, tags="v1")
    env["INPUT_IMAGE"] = f"{services['TEST_REGISTRY']}/plan-{uuid.uuid4().hex[:8]}/web"
    code, log, outputs, _ = go(env)
    assert code == 0, log
    return env["INPUT_IMAGE"], outputs["digest"]


def pull_request_env(
    services: dict[str, str],
    workspace: Path,
    kubeconfig: str,
    namespace: str,
    repository: str,
    github: GitHubStandin,
    *,
    fork: bool = False,
    **inputs: str,
) -> dict[str, str]:
    event = workspace.parent / "event.json"
    head = "mallory/web" if fork else REPOSITORY
    event.write_text(
        json.dumps(
            {
                "pull_request": {
                    "number": 12,
                    "head": {"repo": {"full_name": head, "fork": fork}},
                    "base": {"repo": {"full_name": REPOSITORY}},
                }
            }
        )
    )
    env = runner_env(
        services,
        workspace,
        build="false",
        tags="v1",
        dry_run="true",
        comment_on_pr="true",
        github_token=TOKEN,
        namespace=namespace,
        **inputs,
    )
    env.update(
        {
            "INPUT_IMAGE": repository,
            "INPUT_KUBECONFIG": Path(kubeconfig).read_text(),
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_API_URL": github.url,
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_WORKFLOW": "deploy",
            "GITHUB_JOB": "plan",
            "GITHUB_RUN_ID": "42",
        }
    )
    return env


def live_objects(admin: k8s.ApiClient, namespace: str, image: str) -> None:
    """What the cluster runs before the pull request: all made with the admin's client."""
    create_deployment(admin, namespace, "web", image, replicas=1)
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"LOG_LEVEL": "info"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"password": OLD_PASSWORD}}
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )


MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: REPOSITORY:latest}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {LOG_LEVEL: LOG_VALUE}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: features}
data: {new-checkout: "true"}
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: NEW_PASSWORD}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: REPOSITORY:latest, args: [migrate, up]}]
"""


def write_manifests(workspace: Path, repository: str, log_value: str) -> None:
    text = MANIFESTS.replace("REPOSITORY", repository).replace("NEW_PASSWORD", NEW_PASSWORD)
    (workspace / "k8s").mkdir(exist_ok=True)
    (workspace / "k8s" / "app.yaml").write_text(text.replace("LOG_VALUE", log_value))


def unwrapped(diff: str) -> list[str]:
    """The diff's lines with the pieces of a long line (``+↳ …``) joined again."""
    lines: list[str] = []
    for line in diff.splitlines():
        if line[1:3] == "↳ " and lines:
            lines[-1] += line[3:]
        else:
            lines.append(line)
    return lines


def snapshot(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    core, batch = k8s.CoreV1Api(admin), k8s.BatchV1Api(admin)
    return {
        "web": read(admin, namespace, "web")["metadata"]["resourceVersion"],
        "configmaps": sorted(
            (c.metadata.name, c.metadata.resource_version)
            for c in core.list_namespaced_config_map(namespace).items
        ),
        "secret": core.read_namespaced_secret("db", namespace).metadata.resource_version,
        "jobs": [j.metadata.name for j in batch.list_namespaced_job(namespace).items],
    }


def test_the_plan_diffs_each_object_and_its_comment_is_created_then_updated(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    kubeconfig: str,
    fresh_namespace: str,
    pushed: tuple[str, str],
    github: GitHubStandin,
) -> None:
    repository, digest = pushed
    old = f"{repository}@sha256:{'0' * 63}1"
    live_objects(kube_admin, fresh_namespace, old)
    before = snapshot(kube_admin, fresh_namespace)
    write_manifests(workspace, repository, "debug")
    env = pull_request_env(
        services, workspace, kubeconfig, fresh_namespace, repository, github, manifests="k8s"
    )

    code, log, outputs, summary = go(env)
    assert code == 0, log
    assert outputs["status"] == "planned"
    changes = {(c["kind"], c["name"]): c["action"] for c in json.loads(outputs["changes"])}
    assert changes == {
        ("Deployment", "web"): "change",
        ("ConfigMap", "settings"): "change",
        ("ConfigMap", "features"): "create",
        ("Secret", "db"): "change",
        ("Service", "web"): "unchanged",  # defaulted fields (clusterIP, type, ...) are no change
        ("Job", "migrate"): "create",
    }
    plan = outputs["plan"]
    print("PLANSTART\n" + plan + "\nPLANEND\n" + log)
    assert plan.startswith("**Plan:** 2 to create, 3 to change, 1 unchanged.")
    pinned = f"{repository}@{digest}"
    assert f"Image: `{pinned}` (pinned by digest)." in plan
    assert "-  LOG_LEVEL: info\n+  LOG_LEVEL: debug" in plan
    assert "+  password: (hidden, changed)" in plan
    assert "Unchanged: `Service` `web`." in plan
    deployment_diff = plan.split("#### change: `Deployment` `web`", 1)[1].split("####", 1)[0]
    changed = [
        line
        for line in unwrapped(deployment_diff)
        if line.startswith(("+", "-")) and not line.startswith(("---", "+++"))
    ]
    assert changed == [f"-      - image: {old}", f"+      - image: {pinned}"]
    assert plan.strip() in summary
    assert snapshot(kube_admin, fresh_namespace) == before  # a dry run changes nothing

    [comment] = github.state.comments[12]
    assert comment["body"].startswith("<!-- deployer-plan ")
    assert plan.strip() in comment["body"]
    secrets = {
        "old password": OLD_PASSWORD,
        "new password": NEW_PASSWORD,
        "old password (base64)": base64.b64encode(OLD_PASSWORD.encode()).decode(),
    }
    texts = {"log": log, "outputs": json.dumps(outputs), "summary": summary}
    assert_no_leaks({**texts, "comment": comment["body"]}, secrets)

    # The next push: the same comment is edited, never a second one.
    write_manifests(workspace, repository, "warn")
    code, log, outputs, _ = go(env)
    assert code == 0, log
    [comment] = github.state.comments[12]
    assert "+  LOG_LEVEL: warn" in comment["body"]
    assert [c.method for c in github.state.calls] == ["GET", "POST", "GET", "PATCH"]


def test_a_token_without_pull_requests_write_gets_a_warning_and_the_plan_stands(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    kubeconfig: str,
    fresh_namespace: str,
    pushed: tuple[str, str],
    github: GitHubStandin,
) -> None:
    repository, _ = pushed
    create_deployment(kube_admin, fresh_namespace, "web", f"{repository}:old", replicas=1)
    github.state.forbid_writes = True
    env = pull_request_env(
        services, workspace, kubeconfig, fresh_namespace, repository, github, deployments="web"
    )
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert outputs["status"] == "planned"
    [change] = json.loads(outputs["changes"])
    assert change == {
        "kind": "Deployment",
        "namespace": fresh_namespace,
        "name": "web",
        "action": "change",
    }
    assert f"| `deployment/web` | `app` | `{repository}:old` |" in outputs["plan"]
    warnings = [c for c in commands(log) if c.startswith("::warning")]
    assert any("403" in w and "permissions: pull-requests: write" in w for w in warnings), log
    assert [c.method for c in github.state.calls] == ["GET", "POST"]
    assert github.state.comments == {}


def test_a_forks_pull_request_gets_a_notice_and_no_comment(
    services: dict[str, str],
    workspace: Path,
    kube_admin: k8s.ApiClient,
    kubeconfig: str,
    fresh_namespace: str,
    pushed: tuple[str, str],
    github: GitHubStandin,
) -> None:
    repository, _ = pushed
    create_deployment(kube_admin, fresh_namespace, "web", f"{repository}:old", replicas=1)
    env = pull_request_env(
        services,
        workspace,
        kubeconfig,
        fresh_namespace,
        repository,
        github,
        fork=True,
        deployments="web",
    )
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert outputs["status"] == "planned" and outputs["plan"]
    notices = [c for c in commands(log) if c.startswith("::notice")]
    assert any("comes from a fork" in n for n in notices), log
    assert github.state.calls == []
