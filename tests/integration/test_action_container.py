"""The built action image, run exactly as the GitHub Actions runner runs it.

``tests/integration/runner.py`` is the runner's ``docker run`` (inputs as
``INPUT_*`` passed by name, the engine's socket at /var/run/docker.sock and no
DOCKER_HOST, /github/* mounts, outputs and summary read back from the
file-command files). These tests prove the image, not only the Python package:
the entrypoint, the installed dependencies, signal handling as PID 1, and the
socket the runner mounts.

The image is (re)built once per session by scripts/action-image.sh (the engine's
build cache makes that a few seconds when nothing changed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.conftest import ROOT, need_service
from tests.helpers import create_deployment, read
from tests.integration.runner import ActionRunner
from tests.integration.test_build_push import registry_get

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="session")
def settings() -> dict[str, str]:
    return need_service(
        "DOCKER_HOST",
        "KUBECONFIG",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
    )


@pytest.fixture(scope="session")
def action_image(settings: dict[str, str]) -> str:
    """deployer-action:local, built from the working tree once per session."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "action-image.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/action-image.sh failed:\n{done.stdout}\n{done.stderr}")
    return "deployer-action:local"


@pytest.fixture
def runner(tmp_path: Path, settings: dict[str, str], action_image: str) -> ActionRunner:
    """A job's runner directories, with a busybox app checked out in the workspace."""
    if not BUSYBOX.is_file():
        pytest.fail("busybox-static is not installed (make deps installs it)")
    r = ActionRunner(tmp_path, docker_host=settings["DOCKER_HOST"], image=action_image)
    shutil.copy(BUSYBOX, r.workspace / "busybox")
    (r.workspace / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f'LABEL test.run="{uuid.uuid4().hex}"\n'
    )
    return r


def deploy_inputs(
    settings: dict[str, str], namespace: str, repo: str, **extra: str
) -> dict[str, str]:
    inputs = {
        "image": f"{settings['TEST_REGISTRY']}/{repo}",
        "registry-username": settings["TEST_REGISTRY_USERNAME"],
        "registry-password": settings["TEST_REGISTRY_PASSWORD"],
        "kubeconfig": Path(settings["KUBECONFIG"]).read_text(),
        "namespace": namespace,
        "deployments": "web",
        "timeout": "90s",
    }
    inputs.update(extra)
    return inputs


def errors(lines: list[str]) -> list[str]:
    return [c for c in lines if c.startswith("::error")]


def test_build_push_roll_out_from_the_container(
    runner: ActionRunner,
    settings: dict[str, str],
    kube_admin: k8s.ApiClient,
    fresh_namespace: str,
) -> None:
    repo = f"it-{uuid.uuid4().hex[:8]}/web"
    old = f"{settings['TEST_REGISTRY']}/{repo}:old"
    create_deployment(kube_admin, fresh_namespace, "web", old)

    result = runner.run(deploy_inputs(settings, fresh_namespace, repo), timeout=300)

    assert result.code == 0, result.log
    assert not errors(result.commands), result.log
    assert "Traceback" not in result.log
    out = result.outputs
    assert out["status"] == "succeeded"
    assert out["digest"].startswith("sha256:") and len(out["digest"]) == 71
    assert out["image"] == f"{settings['TEST_REGISTRY']}/{repo}@{out['digest']}"
    tag = f"sha-{runner.github['GITHUB_SHA'][:7]}"
    assert json.loads(out["tags"]) == [f"{settings['TEST_REGISTRY']}/{repo}:{tag}"]
    # The engine behind the mounted socket pushed it: the registry has that digest.
    status, headers, _ = registry_get(settings, f"/v2/{repo}/manifests/{tag}")
    assert status == 200 and headers["Docker-Content-Digest"] == out["digest"]
    live = read(kube_admin, fresh_namespace, "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == out["image"]
    assert json.loads(out["revision"]) == {"web": 2}
    [deployment] = json.loads(out["deployments"])
    assert (deployment["previous-image"], deployment["result"]) == (old, "succeeded")
    assert float(out["duration"]) > 0
    assert "succeeded" in result.summary
    assert f"`deployment/web` in `{fresh_namespace}`" in result.summary
    assert out["digest"] in result.summary
    # Like the runner: values by name only, and no DOCKER_HOST for the container.
    argv = " ".join(result.argv)
    assert settings["TEST_REGISTRY_PASSWORD"] not in argv
    assert "DOCKER_HOST" not in argv
    assert "/var/run/docker.sock" in argv
    # The password appears in the log only where it is registered as a mask.
    leaks = [
        line
        for line in result.log.splitlines()
        if settings["TEST_REGISTRY_PASSWORD"] in line and not line.startswith("::add-mask::")
    ]
    assert not leaks


def test_failing_rollout_is_rolled_back_from_the_container(
    runner: ActionRunner,
    settings: dict[str, str],
    kube_admin: k8s.ApiClient,
    fresh_namespace: str,
) -> None:
    # KWOK: pods of an image whose repository's last segment starts with crash-loop crash.
    repo = f"it-{uuid.uuid4().hex[:8]}/crash-loop-web"
    before = create_deployment(kube_admin, fresh_namespace, "web", "127.0.0.1:5000/ok/web:1")

    result = runner.run(deploy_inputs(settings, fresh_namespace, repo), timeout=300)

    assert result.code != 0, result.log
    assert result.outputs["status"] == "rolled-back", result.log
    after = read(kube_admin, fresh_namespace, "web")
    assert after["spec"]["template"] == before["spec"]["template"]
    [deployment] = json.loads(result.outputs["deployments"])
    assert deployment["result"] == "rolled-back"
    assert "CrashLoopBackOff" in deployment["reason"]
    assert any("CrashLoopBackOff" in e for e in errors(result.commands)), result.log
    assert "rolled-back" in result.summary or "rolled back" in result.summary
    assert "CrashLoopBackOff" in result.summary
    assert "Traceback" not in result.log


def test_cancel_mid_rollout_stops_within_the_runners_grace(
    runner: ActionRunner,
    settings: dict[str, str],
    kube_admin: k8s.ApiClient,
    fresh_namespace: str,
) -> None:
    # never-ready: pods run but never become Ready, so the rollout waits until cancelled.
    repo = f"it-{uuid.uuid4().hex[:8]}/never-ready-web"
    create_deployment(kube_admin, fresh_namespace, "web", "127.0.0.1:5000/ok/web:1")
    running = runner.start(deploy_inputs(settings, fresh_namespace, repo, timeout="10m"))
    try:
        running.wait_for_line(r"web: updated, generation", timeout=180)
        seconds, signal_needed = running.cancel()
        result = running.wait(timeout=30)
    finally:
        running.close()

    # The runner kills the container 10 s after its SIGINT: the action must be out by then.
    assert seconds < 10, (seconds, signal_needed, result.log)
    assert signal_needed in ("INT", "TERM"), result.log
    assert result.code != 0
    assert result.outputs["status"] == "cancelled", result.log
    # A cancel is annotated (a warning naming what was left where) and summarised.
    annotations = [c for c in result.commands if c.startswith(("::error", "::warning"))]
    assert any("Cancelled" in a and "web" in a for a in annotations), result.log
    assert "cancel" in result.summary.lower()
    assert "Traceback" not in result.log


def test_bad_input_is_one_error_and_builds_nothing(
    runner: ActionRunner, settings: dict[str, str]
) -> None:
    result = runner.run(
        {
            "image": f"{settings['TEST_REGISTRY']}/acme/web:v1",
            "registry-username": settings["TEST_REGISTRY_USERNAME"],
            "registry-password": settings["TEST_REGISTRY_PASSWORD"],
        },
        timeout=120,
    )

    assert result.code == 1, result.log
    found = errors(result.commands)
    assert len(found) == 1, result.log
    assert "image" in found[0] and "contains a tag" in found[0]
    assert "Traceback" not in result.log
    assert result.outputs["status"] == "failed"
    assert result.outputs["image"] == "" and result.outputs["digest"] == ""
    assert "contains a tag" in result.summary
    assert "Build log" not in result.log
    # Nothing built: no image in the engine carries this run's commit.
    images = subprocess.run(
        [
            "docker",
            "images",
            "-q",
            "--filter",
            f"label=org.opencontainers.image.revision={runner.github['GITHUB_SHA']}",
        ],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "DOCKER_HOST": settings["DOCKER_HOST"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert images.stdout.strip() == ""


@pytest.mark.parametrize(
    "path",
    [
        # The runner's own directories: /usr/bin has a python3 without our dependencies.
        "/usr/local/bin:/usr/bin:/bin",
        # Nothing at all: no interpreter, no buildx to find on PATH.
        "/github/workspace/bin",
    ],
)
def test_a_workflow_setting_path_does_not_break_the_action(
    tmp_path: Path, settings: dict[str, str], action_image: str, path: str
) -> None:
    # A step's `env: PATH: ...` reaches the container (the runner passes the job's
    # and step's env); the entrypoint must not depend on it to find its venv.
    runner = ActionRunner(
        tmp_path, docker_host=settings["DOCKER_HOST"], image=action_image, github={"PATH": path}
    )
    (runner.workspace / "Dockerfile").write_text("FROM scratch\n")
    result = runner.run({"image": f"{settings['TEST_REGISTRY']}/acme/web:v1"}, timeout=120)

    assert f"PATH={path}" in result.argv
    assert result.code == 1, result.log
    found = errors(result.commands)
    assert len(found) == 1, result.log
    assert "image" in found[0] and "contains a tag" in found[0]
    assert "Traceback" not in result.log
    assert result.outputs["status"] == "failed"


def test_the_image_ships_the_pinned_buildx_where_deployer_buildx_says(
    settings: dict[str, str], action_image: str
) -> None:
    # DEPLOYER_BUILDX (set in the Dockerfile) is how deployer finds buildx; with
    # a PATH that names nothing, it still runs.
    probe = (
        "import os, subprocess; "
        "print(subprocess.run([os.environ['DEPLOYER_BUILDX'], 'version'], "
        "capture_output=True, text=True, check=True).stdout)"
    )
    python = ["--entrypoint", "/opt/deployer/venv/bin/python3", action_image, "-c", probe]
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-e", "PATH=/nonexistent", *python],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": settings["DOCKER_HOST"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["github.com/docker/buildx", "v0.38.2"], done.stdout
