"""The test environment itself: the engine answers, the registry demands auth, BuildKit works.

These fail fast and plainly when ``make env-up`` did not do its job, before the
product's build/push/rollout integration tests produce less obvious errors.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_service

pytestmark = pytest.mark.integration


def _v2_status(registry: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(f"http://{registry}/v2/")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def test_docker_engine_answers() -> None:
    import docker

    env = need_service("DOCKER_HOST")
    client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=30)
    try:
        version = client.version()
        assert version.get("ApiVersion"), version
        assert client.ping() is True
    finally:
        client.close()


def test_registry_refuses_anonymous_access() -> None:
    env = need_service("TEST_REGISTRY")
    assert _v2_status(env["TEST_REGISTRY"]) == 401


def test_registry_refuses_a_wrong_password() -> None:
    env = need_service("TEST_REGISTRY", "TEST_REGISTRY_USERNAME")
    wrong = (env["TEST_REGISTRY_USERNAME"], "not-the-password")
    assert _v2_status(env["TEST_REGISTRY"], wrong) == 401


def test_registry_accepts_the_test_credentials() -> None:
    env = need_service("TEST_REGISTRY", "TEST_REGISTRY_USERNAME", "TEST_REGISTRY_PASSWORD")
    auth = (env["TEST_REGISTRY_USERNAME"], env["TEST_REGISTRY_PASSWORD"])
    assert _v2_status(env["TEST_REGISTRY"], auth) == 200


# -- BuildKit (scripts/testenv/buildkit-up.sh) -------------------------------------------


def _buildx(settings: dict[str, str], config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "DOCKER_HOST": settings["DOCKER_HOST"],
        "DOCKER_CONFIG": str(config),
    }
    return subprocess.run(
        [settings["DEPLOYER_BUILDX"], *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_buildx_is_the_pinned_version() -> None:
    settings = need_service("DEPLOYER_BUILDX")
    done = _buildx({**settings, "DOCKER_HOST": ""}, Path("/nonexistent"), "version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["github.com/docker/buildx", "v0.38.2"], done.stdout


def test_docker_container_builder_runs_arm64_and_pushes_an_index(tmp_path: Path) -> None:
    # What the action does for several platforms, with the test environment's
    # BuildKit image: a docker-container builder on the host network, a RUN
    # step per platform (arm64 through QEMU), the result pushed as one index.
    settings = need_service(
        "DOCKER_HOST",
        "DEPLOYER_BUILDX",
        "DEPLOYER_BUILDKIT_IMAGE",
        "TEST_BUSYBOX_ARM64",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
    )
    registry = settings["TEST_REGISTRY"]
    config = tmp_path / "docker-config"
    config.mkdir(mode=0o700)
    pair = f"{settings['TEST_REGISTRY_USERNAME']}:{settings['TEST_REGISTRY_PASSWORD']}"
    auth = {"auths": {registry: {"auth": base64.b64encode(pair.encode()).decode()}}}
    (config / "config.json").write_text(json.dumps(auth))
    (tmp_path / "buildkitd.toml").write_text(f'[registry."{registry}"]\n  http = true\n')
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy("/bin/busybox", context / "busybox-amd64")
    shutil.copy(settings["TEST_BUSYBOX_ARM64"], context / "busybox-arm64")
    (context / "Dockerfile").write_text(
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-$TARGETARCH /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /arch"]\n'
    )
    builder = f"deployer-testenv-{uuid.uuid4().hex[:8]}"
    repo = f"testenv-{uuid.uuid4().hex[:8]}/multi"
    created = _buildx(
        settings,
        config,
        "create",
        "--name",
        builder,
        "--driver",
        "docker-container",
        "--driver-opt",
        f"image={settings['DEPLOYER_BUILDKIT_IMAGE']},network=host",
        "--buildkitd-config",
        str(tmp_path / "buildkitd.toml"),
    )
    assert created.returncode == 0, created.stderr
    try:
        common = ["build", "--builder", builder, "--platform", "linux/amd64,linux/arm64"]
        local = _buildx(
            settings, config, *common, "-o", f"type=local,dest={tmp_path / 'out'}", str(context)
        )
        assert local.returncode == 0, local.stderr
        assert (tmp_path / "out/linux_amd64/arch").read_text().strip() == "x86_64"
        assert (tmp_path / "out/linux_arm64/arch").read_text().strip() == "aarch64"

        metadata = tmp_path / "metadata.json"
        pushed = _buildx(
            settings,
            config,
            *common,
            "--provenance=false",
            "--push",
            "-t",
            f"{registry}/{repo}:1",
            "--metadata-file",
            str(metadata),
            str(context),
        )
        assert pushed.returncode == 0, pushed.stderr
    finally:
        removed = _buildx(settings, config, "rm", "--force", builder)
    assert removed.returncode == 0, removed.stderr
    digest = json.loads(metadata.read_text())["containerimage.digest"]
    request = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{digest}")
    request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    request.add_header(
        "Accept",
        "application/vnd.oci.image.index.v1+json,"
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        index = json.load(response)
    platforms = {m["platform"]["architecture"] for m in index["manifests"]}
    assert platforms == {"amd64", "arm64"}
    # Removed with its state: no container or volume of the builder is left.
    leftovers = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"name=buildx_buildkit_{builder}"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": settings["DOCKER_HOST"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert leftovers.stdout.strip() == ""


# -- kustomize, helm and the OCI chart (scripts/testenv/tools-up.sh) --------------------


def test_kustomize_and_helm_are_the_pinned_versions() -> None:
    settings = need_service("DEPLOYER_KUSTOMIZE", "DEPLOYER_HELM")
    kustomize = subprocess.run(
        [settings["DEPLOYER_KUSTOMIZE"], "version"], capture_output=True, text=True, timeout=30
    )
    assert kustomize.stdout.strip() == "v5.8.2", kustomize
    helm = subprocess.run(
        [settings["DEPLOYER_HELM"], "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert helm.stdout.strip() == "v4.3.2", helm


def _helm(settings: dict[str, str], home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """helm with its own empty config, cache and data (no login of another test)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "HELM_REGISTRY_CONFIG": str(home / "registry.json"),
    }
    return subprocess.run(
        [settings["DEPLOYER_HELM"], *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_oci_chart_is_pulled_with_the_registry_credentials_only(tmp_path: Path) -> None:
    settings = need_service(
        "DEPLOYER_HELM",
        "TEST_OCI_CHART",
        "TEST_OCI_CHART_VERSION",
        "TEST_OCI_CHART_DIGEST",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
    )
    chart, version = settings["TEST_OCI_CHART"], settings["TEST_OCI_CHART_VERSION"]
    assert chart.startswith(f"oci://{settings['TEST_REGISTRY']}/")
    template = ["template", "web", chart, "--version", version, "--plain-http"]
    anonymous = _helm(settings, tmp_path / "anonymous", *template)
    assert anonymous.returncode != 0
    assert "basic credential not found" in anonymous.stderr, anonymous.stderr
    assert "kind: Deployment" not in anonymous.stdout

    home = tmp_path / "helm"
    login = subprocess.run(
        [
            settings["DEPLOYER_HELM"],
            "registry",
            "login",
            settings["TEST_REGISTRY"],
            "--plain-http",
            "-u",
            settings["TEST_REGISTRY_USERNAME"],
            "--password-stdin",
        ],
        input=settings["TEST_REGISTRY_PASSWORD"],
        env={"PATH": "/usr/bin:/bin", "HELM_REGISTRY_CONFIG": str(home / "registry.json")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    rendered = _helm(settings, home, *template)
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: Deployment" in rendered.stdout
    assert "name: web" in rendered.stdout
    # The same chart by digest.
    by_digest = _helm(
        settings, home, "template", "web", f"{chart}@{settings['TEST_OCI_CHART_DIGEST']}",
        "--plain-http",
    )  # fmt: skip
    assert by_digest.returncode == 0, by_digest.stderr
    assert by_digest.stdout == rendered.stdout


# -- nektos/act (tests/act.py) ------------------------------------------------------------

TRIVIAL_WORKFLOW = """\
name: trivial
on: push
jobs:
  hello:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - id: greet
        run: echo "word=hello from $GITHUB_REPOSITORY" >> "$GITHUB_OUTPUT"
      - run: |
          echo "said: ${{ steps.greet.outputs.word }}"
          echo "secret: ${{ secrets.API_TOKEN }}"
          echo "env: $STAGE, file: $(cat app.txt)"
      - if: env.STAGE == 'broken'
        run: exit 3
"""


def test_act_runs_a_workflow_offline_with_stand_in_actions(tmp_path: Path) -> None:
    from tests.act import git_repo, run_workflow

    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text(TRIVIAL_WORKFLOW)
    (repo / "app.txt").write_text("checked out\n")
    git_repo(repo, "acme/web")
    secret = f"tok-{uuid.uuid4().hex}"

    ok = run_workflow(
        repo, ".github/workflows/ci.yml", secrets={"API_TOKEN": secret}, env={"STAGE": "prod"}
    )
    assert ok.returncode == 0, ok.log
    assert "said: hello from acme/web" in ok.log
    assert "env: prod, file: checked out" in ok.log
    assert "secret: ***" in ok.log
    assert secret not in ok.log
    assert "Job succeeded" in ok.log

    # The same on this host (-self-hosted) instead of the runner image: the step fails.
    failed = run_workflow(repo, ".github/workflows/ci.yml", env={"STAGE": "broken"}, on_host=True)
    assert failed.returncode != 0, failed.log
    assert "file: checked out" in failed.log
    assert "exit status 3" in failed.log


def test_act_refuses_a_remote_action_without_stand_in(tmp_path: Path) -> None:
    from tests.act import UnknownActionError, git_repo, run_workflow

    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: someone/unknown-action@v1\n"
    )
    git_repo(repo)
    with pytest.raises(UnknownActionError, match="someone/unknown-action@v1"):
        run_workflow(repo, ".github/workflows/ci.yml")


@pytest.fixture(scope="session")
def action_images() -> None:
    """deployer-base, deployer-buildx-bin and deployer-tools in the engine (scripts/action-image.sh)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bash", str(root / "scripts" / "action-image.sh")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/action-image.sh failed:\n{done.stdout}\n{done.stderr}")


ACTION_WORKFLOW = """\
name: deploy
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - id: deploy
        uses: ./
        with:
          image: {image}
          context: app
          tags: act
          registry-username: ${{{{ secrets.REGISTRY_USERNAME }}}}
          registry-password: ${{{{ secrets.REGISTRY_PASSWORD }}}}
      - run: echo "status=${{{{ steps.deploy.outputs.status }}}} digest=${{{{ steps.deploy.outputs.digest }}}}"
"""


def test_act_builds_and_runs_our_docker_action_from_a_local_path(
    tmp_path: Path, action_images: None
) -> None:
    # act builds the action's image from our Dockerfile with the test engine
    # (`uses: ./`), runs it with the engine's socket, and the action builds and
    # pushes the app: what a workflow of the examples does, minus the cluster.
    from tests.act import action_tree, git_repo, run_workflow

    settings = need_service("TEST_REGISTRY", "TEST_REGISTRY_USERNAME", "TEST_REGISTRY_PASSWORD")
    repo = action_tree(tmp_path / "repo")
    (repo / "app").mkdir()
    shutil.copy("/bin/busybox", repo / "app" / "busybox")
    (repo / "app" / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
    image = f"{settings['TEST_REGISTRY']}/act-{uuid.uuid4().hex[:8]}/app"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "deploy.yml").write_text(ACTION_WORKFLOW.format(image=image))
    git_repo(repo, "acme/deployer")

    result = run_workflow(
        repo,
        ".github/workflows/deploy.yml",
        secrets={
            "REGISTRY_USERNAME": settings["TEST_REGISTRY_USERNAME"],
            "REGISTRY_PASSWORD": settings["TEST_REGISTRY_PASSWORD"],
        },
    )
    assert result.returncode == 0, result.log
    assert "docker build -t act-dockeraction:latest" in result.log
    digest = re.search(r"status=succeeded digest=(sha256:[0-9a-f]{64})", result.log)
    assert digest, result.log
    pair = f"{settings['TEST_REGISTRY_USERNAME']}:{settings['TEST_REGISTRY_PASSWORD']}"
    repository = image.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{settings['TEST_REGISTRY']}/v2/{repository}/manifests/act", method="HEAD"
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    request.add_header(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        assert response.headers["Docker-Content-Digest"] == digest[1]


# -- KWOK Job stages, Argo Rollouts and Flagger (scripts/testenv/progressive-up.sh) ------

APP = "127.0.0.1:5000/progressive"


def _job(name: str, image: str) -> dict[str, Any]:
    container = {"name": "check", "image": image}
    pod = {"spec": {"restartPolicy": "Never", "containers": [container]}}
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": pod}}


def _job_condition(batch: Any, namespace: str, name: str) -> str | None:
    conditions = batch.read_namespaced_job(name, namespace).status.conditions or []
    done = [c.type for c in conditions if c.status == "True" and c.type in ("Complete", "Failed")]
    return done[0] if done else None


def test_kwok_completes_a_job_and_fails_one_whose_image_says_job_fail(
    kube_admin: Any, fresh_namespace: str
) -> None:
    from kubernetes import client as k8s

    from tests.integration.conftest import wait_until

    batch = k8s.BatchV1Api(kube_admin)
    batch.create_namespaced_job(fresh_namespace, _job("ok", f"{APP}/check:1"))
    batch.create_namespaced_job(fresh_namespace, _job("bad", f"{APP}/job-fail-check:1"))
    assert wait_until(lambda: _job_condition(batch, fresh_namespace, "ok"), 30, "job ok") == (
        "Complete"
    )
    assert wait_until(lambda: _job_condition(batch, fresh_namespace, "bad"), 30, "job bad") == (
        "Failed"
    )
    pods = k8s.CoreV1Api(kube_admin).list_namespaced_pod(
        fresh_namespace, label_selector="job-name=bad"
    )
    (pod,) = pods.items
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 1


def _rollout(name: str, image: str, analysis: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 25},
                        {"pause": {"duration": "2s"}},
                        {"analysis": {"templates": [{"templateName": analysis}]}},
                        {"setWeight": 75},
                    ]
                }
            },
        },
    }


def _analysis_template(name: str, image: str) -> dict[str, Any]:
    job = _job(name, image)
    del job["metadata"]  # Argo names the Job <run uid>.<metric>.<n>
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": [{"name": "check", "provider": {"job": job}}]},
    }


@pytest.mark.parametrize(
    ("check_image", "phase"),
    [(f"{APP}/check:1", "Healthy"), (f"{APP}/job-fail-check:1", "Degraded")],
    ids=["analysis-passes", "analysis-fails"],
)
def test_argo_rollouts_runs_a_canary_with_a_job_analysis_on_kwok(
    kube_admin: Any, fresh_namespace: str, check_image: str, phase: str
) -> None:
    # The real controller: two setWeight steps around a timed pause and a
    # `job` analysis whose Job KWOK completes or fails by image name. A failed
    # analysis aborts the update (Degraded, back to the stable ReplicaSet).
    from kubernetes import client as k8s

    from tests.integration.conftest import wait_until

    need_service("TEST_ARGO_ROLLOUTS_VERSION")
    api = k8s.CustomObjectsApi(kube_admin)
    group = ("argoproj.io", "v1alpha1", fresh_namespace)
    template = _analysis_template("web-check", check_image)
    api.create_namespaced_custom_object(*group, "analysistemplates", template)
    rollout = _rollout("web", f"{APP}/web:1", "web-check")
    api.create_namespaced_custom_object(*group, "rollouts", rollout)

    def status() -> dict[str, Any]:
        return dict(api.get_namespaced_custom_object(*group, "rollouts", "web").get("status") or {})

    def in_phase(*phases: str, besides: str = "") -> dict[str, Any] | None:
        now = status()
        new = now.get("currentPodHash") not in (None, besides)
        return now if now.get("phase") in phases and new else None

    stable = wait_until(lambda: in_phase("Healthy"), 60, "the first revision")["stableRS"]
    api.patch_namespaced_custom_object(
        *group,
        "rollouts",
        "web",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "web", "image": f"{APP}/web:2"}]}}
            }
        },
    )
    paused = wait_until(lambda: in_phase("Paused", besides=stable), 60, "the timed pause")
    assert paused["currentStepIndex"] == 1
    done = wait_until(
        lambda: in_phase("Healthy", "Degraded", besides=stable), 120, "the canary's end"
    )
    assert done["phase"] == phase, done
    runs = api.list_namespaced_custom_object(*group, "analysisruns")["items"]
    assert len(runs) == 1
    if phase == "Healthy":
        assert done["currentStepIndex"] == 4
        assert done["stableRS"] == done["currentPodHash"] != stable
        assert runs[0]["status"]["phase"] == "Successful"
    else:
        assert done.get("abort") is True
        assert "RolloutAborted" in done["message"], done["message"]
        assert done["stableRS"] == stable
        assert runs[0]["status"]["phase"] == "Failed"


def _webhook(url: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url + path, method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.load(response)


def _canary(name: str, check: str, gate: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 80, "targetPort": 8080},
            "analysis": {
                "interval": "10s",  # Flagger's minimum
                "threshold": 1,
                "iterations": 1,
                "webhooks": [
                    {"name": "check", "url": check, "timeout": "5s"},
                    {"name": "gate", "type": "confirm-promotion", "url": gate, "timeout": "5s"},
                ],
            },
        },
    }


@pytest.mark.parametrize(
    ("check", "phase"),
    [("/pass", "Succeeded"), ("/fail", "Failed")],
    ids=["promoted", "rolled-back"],
)
def test_flagger_promotes_or_rolls_back_a_deployment_by_its_webhook_check(
    kube_admin: Any, fresh_namespace: str, check: str, phase: str
) -> None:
    # The real controller, provider kubernetes (blue/green Services, no mesh),
    # judging the new revision with one webhook check against the stand-in;
    # a passing one then waits at a closed gate (confirm-promotion) until the
    # test opens it.
    from kubernetes import client as k8s

    from tests.integration.conftest import wait_until

    url = need_service("TEST_WEBHOOK_URL", "TEST_FLAGGER_VERSION")["TEST_WEBHOOK_URL"]
    apps = k8s.AppsV1Api(kube_admin)
    api = k8s.CustomObjectsApi(kube_admin)
    group = ("flagger.app", "v1beta1", fresh_namespace)
    labels = {"app": "web"}
    container = {"name": "web", "image": f"{APP}/web:1", "ports": [{"containerPort": 8080}]}
    apps.create_namespaced_deployment(
        fresh_namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    )
    gate = f"/gate/{fresh_namespace}"
    canary = _canary("web", url + check, url + gate)
    api.create_namespaced_custom_object(*group, "canaries", canary)

    def canary_phase() -> str:
        canary = api.get_namespaced_custom_object(*group, "canaries", "web")
        return str((canary.get("status") or {}).get("phase", ""))

    wait_until(lambda: canary_phase() == "Initialized", 90, "Flagger's primary Deployment")
    assert (
        apps.read_namespaced_deployment("web-primary", fresh_namespace)
        .spec.template.spec.containers[0]
        .image
        == f"{APP}/web:1"
    )
    apps.patch_namespaced_deployment(
        "web", fresh_namespace, {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": f"{APP}/web:2"}]}}}},
    )  # fmt: skip
    wait_until(lambda: canary_phase() == "Progressing", 60, "the new revision picked up")

    def reached(*phases: str) -> Callable[[], str | None]:
        return lambda: now if (now := canary_phase()) in phases else None

    if phase == "Succeeded":
        waiting = wait_until(reached("WaitingPromotion", "Failed"), 120, "the promotion gate")
        assert waiting == "WaitingPromotion"
        assert _webhook(url, gate + "/status")["status"] == "closed"
        _webhook(url, gate + "/open", "POST")
    ended = wait_until(reached("Succeeded", "Failed"), 120, f"the canary to end ({phase})")
    assert ended == phase
    primary = apps.read_namespaced_deployment("web-primary", fresh_namespace)
    expected = f"{APP}/web:2" if phase == "Succeeded" else f"{APP}/web:1"
    assert primary.spec.template.spec.containers[0].image == expected
    calls = [
        c
        for c in _webhook(url, "/calls")
        if c["body"] and c["body"].get("namespace") == fresh_namespace
    ]
    assert {c["path"] for c in calls} == ({check, gate} if phase == "Succeeded" else {check})
