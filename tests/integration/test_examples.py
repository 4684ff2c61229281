"""The workflows users copy, run by nektos/act against the test environment (issue 19.6).

Every workflow of ``examples/`` runs here as written; what a test environment needs
instead of GitHub, GHCR and a cloud is this mapping, and nothing else:

- ``uses: acme/deployer@v1`` → this checkout's action (``tests/act.py``: act builds
  its Dockerfile from the local base images);
- ``MAPPING``: ``ghcr.io/`` → the test registry and ``namespace: production`` → a
  fresh namespace, in the workflow and in the app's ``k8s/`` YAML;
- ``github.actor`` and ``secrets.GITHUB_TOKEN`` → the test registry's user and
  password (what GHCR takes from a job);
- the cluster secrets → kubeconfigs for the test API server: ``KUBECONFIG`` of the
  ServiceAccount token Secret of docs/cluster.md's Role; ``EKS_KUBECONFIG``,
  ``GKE_KUBECONFIG``, ``AKS_KUBECONFIG`` as ``aws eks update-kubeconfig``,
  ``gcloud container clusters get-credentials`` and ``az aks get-credentials`` +
  ``kubelogin convert-kubeconfig`` write them (tests/integration/cloud.py), the
  cloud identity bound to the same Role;
- the clouds → their stand-ins: ``CLOUD_MAPPING`` (the role, the workload identity
  provider) and the job environment of :func:`cloud_job_env` (the endpoints, the
  runner's OIDC token service).

The repository a workflow runs in is ``examples/app/`` (with a static busybox the
Dockerfile copies) and the workflow under ``.github/workflows/``.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import utils as k8s_utils

from tests.act import ActResult, action_tree, git_repo, run_workflow
from tests.conftest import need_service
from tests.github_standin import TOKEN, GitHubStandin
from tests.helpers import create_deployment
from tests.integration.cloud import aks_kubeconfig, cloud_settings, eks_kubeconfig, gke_kubeconfig
from tests.integration.test_docs_role import documented_yaml, in_namespace, token_kubeconfig
from tests.integration.test_testenv import action_images

pytestmark = pytest.mark.integration
__all__ = ["action_images"]  # a fixture used here

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BUSYBOX = Path("/bin/busybox")


def mapping(registry: str, namespace: str) -> dict[str, str]:
    """What the workflow and the app's YAML say → what they say here."""
    return {"ghcr.io/": f"{registry}/", "namespace: production": f"namespace: {namespace}"}


def cloud_mapping(settings: Mapping[str, str]) -> dict[str, str]:
    """The cloud accounts the cloud examples name → the stand-ins' own."""
    provider = settings["TEST_GCP_WIF_AUDIENCE"].removeprefix("//iam.googleapis.com/")
    return {
        "arn:aws:iam::123456789012:role/github-deploy": settings["TEST_AWS_ROLE_ARN"],
        "projects/123456789012/locations/global/workloadIdentityPools/github/providers/my-repo": (
            provider
        ),
    }


def cloud_job_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The job environment that sends the cloud calls to the stand-ins."""
    return {
        "ACTIONS_ID_TOKEN_REQUEST_URL": settings["TEST_OIDC_REQUEST_URL"],
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": settings["TEST_OIDC_REQUEST_TOKEN"],
        "AWS_ENDPOINT_URL_STS": settings["TEST_STS_ENDPOINT"],
        "AWS_ENDPOINT_URL_ECR": settings["TEST_ECR_ENDPOINT"],
        "STANDIN_GOOGLE_STS_URL": settings["TEST_CLOUD_STANDIN_URL"] + "/google/sts/v1/token",
        "AZURE_AUTHORITY_HOST": settings["TEST_AZURE_AUTHORITY_HOST"],
    }


def mapped(text: str, table: Mapping[str, str]) -> str:
    for old, new in table.items():
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def services() -> dict[str, str]:
    return need_service(
        "DOCKER_HOST",
        "KUBECONFIG",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
        "TEST_ACT",
    )


@pytest.fixture(scope="module")
def action(tmp_path_factory: pytest.TempPathFactory, action_images: None) -> Path:
    """This checkout's action, for ``uses: acme/deployer@v1``."""
    return action_tree(tmp_path_factory.mktemp("action"))


@pytest.fixture
def cluster(
    kube_admin: k8s.ApiClient, kubeconfig: str, fresh_namespace: str, tmp_path: Path
) -> dict[str, str]:
    """docs/cluster.md's Role in a fresh namespace, for its ServiceAccount and the cloud
    identities (the group the stand-ins' token webhook gives them); the kubeconfig of
    the ServiceAccount's token Secret."""
    namespace = fresh_namespace
    for doc in in_namespace(documented_yaml(), namespace):
        k8s_utils.create_from_dict(kube_admin, doc, namespace=namespace)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "deployer-cloud", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "cloud:deployers"}
        ],
    }
    k8s_utils.create_from_dict(kube_admin, binding, namespace=namespace)
    account = token_kubeconfig(kube_admin, kubeconfig, namespace, tmp_path / "sa.kubeconfig")
    return {"namespace": namespace, "kubeconfig": account.read_text()}


def user_repository(
    tmp_path: Path,
    workflow: str,
    table: Mapping[str, str],
    owner: str = "acme",
    *,
    text: str | None = None,
    files: Mapping[str, str] | None = None,
) -> Path:
    """A repository as a user of the examples has it: examples/app/ and the workflow
    (examples/<workflow>, or ``text``), and ``files`` (path → content) the workflow names."""
    if not BUSYBOX.is_file():
        pytest.fail("busybox-static is not installed (make deps installs it)")
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "app", repo)
    shutil.copy(BUSYBOX, repo / "busybox")
    for path in (repo / "k8s").glob("*.yaml"):
        path.write_text(mapped(path.read_text(), table))
    (repo / ".github" / "workflows").mkdir(parents=True)
    text = mapped(text if text is not None else (EXAMPLES / workflow).read_text(), table)
    (repo / ".github" / "workflows" / workflow).write_text(text)
    for name, content in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    return git_repo(repo, f"{owner}/web")


def run_example(
    repo: Path,
    workflow: str,
    services: Mapping[str, str],
    action: Path,
    *,
    secrets: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    event: str = "push",
    payload: Mapping[str, Any] | None = None,
) -> ActResult:
    return run_workflow(
        repo,
        f".github/workflows/{workflow}",
        event=event,
        payload=payload,
        actor=services["TEST_REGISTRY_USERNAME"],
        secrets={"GITHUB_TOKEN": services["TEST_REGISTRY_PASSWORD"], **secrets},
        env=env,
        variables=variables,
        actions={"acme/deployer": action},
        timeout=900,
    )


def deployed_image(admin: k8s.ApiClient, namespace: str, name: str = "web") -> str:
    live = k8s.AppsV1Api(admin).read_namespaced_deployment(name, namespace)
    return str(live.spec.template.spec.containers[0].image)


def assert_the_app_is_deployed(
    result: ActResult, admin: k8s.ApiClient, namespace: str, registry: str
) -> str:
    """The typical app's objects are there and the Deployment runs this run's digest."""
    assert result.returncode == 0, result.log
    image = deployed_image(admin, namespace)
    assert re.fullmatch(rf"{re.escape(registry)}/acme/web@sha256:[0-9a-f]{{64}}", image), image
    core, batch = k8s.CoreV1Api(admin), k8s.BatchV1Api(admin)
    assert core.read_namespaced_config_map("web-config", namespace).data == {"LOG_LEVEL": "info"}
    assert core.read_namespaced_service("web", namespace).spec.ports[0].port == 80
    job = batch.read_namespaced_job("web-migrate", namespace)
    assert job.status.succeeded == 1
    assert job.spec.template.spec.containers[0].image == image
    return image


def test_the_typical_app_builds_applies_migrates_and_rolls_out(
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    table = mapping(services["TEST_REGISTRY"], cluster["namespace"])
    repo = user_repository(tmp_path, "app.yml", table)
    result = run_example(
        repo, "app.yml", services, action, secrets={"KUBECONFIG": cluster["kubeconfig"]}
    )
    image = assert_the_app_is_deployed(
        result, kube_admin, cluster["namespace"], services["TEST_REGISTRY"]
    )
    assert f"deploy succeeded: {image}" in result.log


def test_deploy_yml_with_a_mixed_case_owner_rolls_out_the_named_deployments(
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    # ghcr.io/${{ github.repository_owner }}/web of an owner "Acme-Corp": lower-cased.
    namespace = cluster["namespace"]
    table = mapping(services["TEST_REGISTRY"], namespace)
    owner = f"Acme-{uuid.uuid4().hex[:6]}"
    repository = f"{services['TEST_REGISTRY']}/{owner.lower()}/web"
    for name in ("web", "worker"):
        create_deployment(kube_admin, namespace, name, f"{repository}:initial")
    repo = user_repository(tmp_path, "deploy.yml", table, owner=owner)
    result = run_example(
        repo, "deploy.yml", services, action, secrets={"KUBECONFIG": cluster["kubeconfig"]}
    )
    assert result.returncode == 0, result.log
    assert f"using '{repository}'" in result.log  # the notice
    for name in ("web", "worker"):
        image = deployed_image(kube_admin, namespace, name)
        assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", image), image
    assert "deploy succeeded in" in result.log and f"{repository}@sha256:" in result.log


@pytest.fixture(scope="module")
def cloud() -> dict[str, str]:
    return {**cloud_settings(), **need_service("TEST_GCP_WIF_AUDIENCE", "TEST_CLOUD_STANDIN_URL")}


@pytest.mark.parametrize(
    ("workflow", "secret"), [("eks.yml", "EKS_KUBECONFIG"), ("gke.yml", "GKE_KUBECONFIG")]
)
def test_the_cloud_examples_deploy_through_the_stand_ins(
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    cloud: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
    workflow: str,
    secret: str,
) -> None:
    table = {**mapping(services["TEST_REGISTRY"], cluster["namespace"]), **cloud_mapping(cloud)}
    repo = user_repository(tmp_path, workflow, table)
    make = eks_kubeconfig if workflow == "eks.yml" else gke_kubeconfig
    kubeconfig = make(tmp_path / "cloud.kubeconfig").read_text()
    result = run_example(
        repo, workflow, services, action, secrets={secret: kubeconfig}, env=cloud_job_env(cloud)
    )
    assert_the_app_is_deployed(result, kube_admin, cluster["namespace"], services["TEST_REGISTRY"])


def test_the_aks_example_deploys_with_the_jobs_oidc_token(
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    cloud: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    repo = user_repository(
        tmp_path, "aks.yml", mapping(services["TEST_REGISTRY"], cluster["namespace"])
    )
    kubeconfig = aks_kubeconfig(
        tmp_path / "aks.kubeconfig", login="workloadidentity", with_ids=False
    )
    result = run_example(
        repo,
        "aks.yml",
        services,
        action,
        secrets={"AKS_KUBECONFIG": kubeconfig.read_text()},
        env=cloud_job_env(cloud),
        variables={
            "AZURE_CLIENT_ID": cloud["TEST_AZURE_CLIENT_ID"],
            "AZURE_TENANT_ID": cloud["TEST_AZURE_TENANT_ID"],
        },
    )
    assert_the_app_is_deployed(result, kube_admin, cluster["namespace"], services["TEST_REGISTRY"])
    assert cloud["TEST_AZURE_CLIENT_SECRET"] not in result.log


def test_the_pull_request_plan_is_one_comment_and_changes_nothing(
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    namespace = cluster["namespace"]
    core = k8s.CoreV1Api(kube_admin)
    live = {"metadata": {"name": "web-config"}, "data": {"LOG_LEVEL": "debug"}}
    core.create_namespaced_config_map(namespace, live)
    repo = user_repository(tmp_path, "pr-plan.yml", mapping(services["TEST_REGISTRY"], namespace))
    payload = {
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "feature", "repo": {"full_name": "acme/web", "fork": False}},
            "base": {"ref": "main", "repo": {"full_name": "acme/web"}},
        },
        "repository": {"full_name": "acme/web"},
    }
    with GitHubStandin() as github:
        for _ in range(2):  # a second push updates the comment in place
            result = run_example(
                repo,
                "pr-plan.yml",
                services,
                action,
                event="pull_request",
                payload=payload,
                secrets={"KUBECONFIG": cluster["kubeconfig"], "GITHUB_TOKEN": TOKEN},
                env={"GITHUB_API_URL": github.url},
            )
            assert result.returncode == 0, result.log
        [comment] = github.state.ours(7)
        methods = [c.method for c in github.state.calls if c.method != "GET"]
    assert methods == ["POST", "PATCH"]
    assert "1 to change" in comment["body"] and "web-config" in comment["body"]
    assert "to create" in comment["body"]
    assert core.read_namespaced_config_map("web-config", namespace).data == {"LOG_LEVEL": "debug"}
    assert "web" not in [
        d.metadata.name
        for d in k8s.AppsV1Api(kube_admin).list_namespaced_deployment(namespace).items
    ]
    assert re.search(r"objects the merge would change: \[.*\"web-config\"", result.log)


def readme_workflows(path: Path) -> list[str]:
    """The ```yaml blocks of a Markdown file that are workflows (they have ``jobs:``)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)
    return [
        b for b in blocks if isinstance(yaml.safe_load(b), dict) and "jobs" in yaml.safe_load(b)
    ]


def test_the_reusable_workflow_deploys_staging_then_production_for_its_caller(
    services: dict[str, str],
    action: Path,
    cluster: dict[str, str],
    kube_admin: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    # examples/README.md's caller, with examples/reusable-deploy.yml as the shared
    # repository acme/workflows holds it (act gets it as a local copy, like the action).
    namespace = cluster["namespace"]
    [caller] = readme_workflows(EXAMPLES / "README.md")
    table = {
        **mapping(services["TEST_REGISTRY"], namespace),
        "namespace: web": f"namespace: {namespace}",
    }
    shared = tmp_path / "workflows"
    (shared / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(EXAMPLES / "reusable-deploy.yml", shared / ".github" / "workflows")
    repo = user_repository(tmp_path, "reusable-deploy.yml", table)
    (repo / ".github" / "workflows" / "deploy.yml").write_text(mapped(caller, table))
    repository = f"{services['TEST_REGISTRY']}/acme/web"
    for name in ("web", "worker"):
        create_deployment(kube_admin, namespace, name, f"{repository}:initial")
    result = run_workflow(
        repo,
        ".github/workflows/deploy.yml",
        actor=services["TEST_REGISTRY_USERNAME"],
        secrets={
            "GITHUB_TOKEN": services["TEST_REGISTRY_PASSWORD"],
            "KUBECONFIG_STAGING": cluster["kubeconfig"],
            "KUBECONFIG_PRODUCTION": cluster["kubeconfig"],
        },
        actions={"acme/deployer": action, "acme/workflows": shared},
        timeout=900,
    )
    assert result.returncode == 0, result.log
    images = {deployed_image(kube_admin, namespace, n) for n in ("web", "worker")}
    [image] = images
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", image), image
    assert f"production: succeeded ({image})" in result.log
