"""Build and push against the real Docker engines and the real registry (make env-up).

Every test runs on Docker 29 (``engine`` fixture, tests/integration/conftest.py);
those marked ``engines("docker29", "docker20")`` on Docker 20.10 too.
"""

from __future__ import annotations

import base64
import gc
import io
import json
import os
import re
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from deployer.pipeline import run
from tests.conftest import Engine, need_service
from tests.unit.test_actions import commands, runner_outputs

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


@pytest.fixture
def services(engine: Engine) -> dict[str, str]:
    """The registry and buildx, with DOCKER_HOST the engine this test runs on."""
    settings = need_service(
        "TEST_REGISTRY", "TEST_REGISTRY_USERNAME", "TEST_REGISTRY_PASSWORD", "DEPLOYER_BUILDX"
    )
    return {**settings, "DOCKER_HOST": engine.host}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A context with a busybox image: FROM scratch, nothing pulled."""
    if not BUSYBOX.is_file():
        pytest.fail("busybox-static is not installed (make deps installs it)")
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(BUSYBOX, ws / "busybox")
    (ws / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    return ws


def runner_env(services: dict[str, str], workspace: Path, **inputs: str) -> dict[str, str]:
    files = workspace.parent / "files"
    files.mkdir(exist_ok=True)
    (files / "output").write_text("")
    (files / "summary").write_text("")
    env = {
        "DOCKER_HOST": services["DOCKER_HOST"],
        "DEPLOYER_BUILDX": services["DEPLOYER_BUILDX"],
        "PATH": os.environ.get("PATH", os.defpath),
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(files / "output"),
        "GITHUB_STEP_SUMMARY": str(files / "summary"),
        "GITHUB_SHA": uuid.uuid4().hex + "00000000",
        "GITHUB_REPOSITORY": "acme/web",
        "GITHUB_SERVER_URL": "https://github.com",
        "INPUT_IMAGE": f"{services['TEST_REGISTRY']}/it-{uuid.uuid4().hex[:10]}/web",
        "INPUT_REGISTRY-USERNAME": services["TEST_REGISTRY_USERNAME"],
        "INPUT_REGISTRY-PASSWORD": services["TEST_REGISTRY_PASSWORD"],
        "INPUT_TIMEOUT": "5m",
    }
    env.update({f"INPUT_{k.replace('_', '-').upper()}": v for k, v in inputs.items()})
    return env


def go(env: dict[str, str]) -> tuple[int, str, dict[str, str], str]:
    out = io.StringIO()
    code = run(env, out)
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    return code, out.getvalue(), outputs, Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def registry_get(
    services: dict[str, str], path: str, *, auth: bool = True
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://{services['TEST_REGISTRY']}{path}")
    request.add_header("Accept", MANIFEST_TYPES)
    if auth:
        pair = f"{services['TEST_REGISTRY_USERNAME']}:{services['TEST_REGISTRY_PASSWORD']}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback registry
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def docker_api(services: dict[str, str]):  # type: ignore[no-untyped-def]
    import docker

    return docker.APIClient(base_url=services["DOCKER_HOST"], version="auto", timeout=120)


@pytest.mark.engines("docker29", "docker20")
def test_build_push_and_read_back_by_digest(
    engine: Engine, services: dict[str, str], workspace: Path
) -> None:
    env = runner_env(services, workspace, tags="v1, latest", labels="org.example.team=web")
    code, log, outputs, summary = go(env)
    assert code == 0, log
    repo = env["INPUT_IMAGE"]
    digest = outputs["digest"]
    # The image's ID in the engine (inspected below): the manifest's digest under
    # the containerd image store, the config's (another digest) in the classic one.
    assert (outputs["image-id"] == digest) is engine.containerd_store
    assert digest.startswith("sha256:") and len(digest) == 71
    assert outputs["image"] == f"{repo}@{digest}"
    assert json.loads(outputs["tags"]) == [f"{repo}:v1", f"{repo}:latest"]
    assert outputs["status"] == "succeeded"
    path = repo.split("/", 1)[1]
    status, headers, _ = registry_get(services, f"/v2/{path}/manifests/{digest}")
    assert status == 200
    assert headers["Docker-Content-Digest"] == digest
    for tag in ("v1", "latest"):
        status, headers, _ = registry_get(services, f"/v2/{path}/manifests/{tag}")
        assert status == 200
        assert headers["Docker-Content-Digest"] == digest
    api = docker_api(services)
    try:
        labels = api.inspect_image(outputs["image-id"])["Config"]["Labels"]
    finally:
        api.close()
    assert labels["org.example.team"] == "web"
    assert labels["org.opencontainers.image.revision"] == env["GITHUB_SHA"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/acme/web"
    assert f"- Digest: `{digest}`" in summary
    assert re.search(r"^- Time: build \d+\.\d s, push \d+\.\d s, total ", summary, re.M)


@pytest.mark.engines("docker29", "docker20")
def test_wrong_password_is_refused_and_nothing_is_claimed(
    services: dict[str, str], workspace: Path
) -> None:
    env = runner_env(services, workspace, registry_password="not-the-password-xyz")
    code, log, outputs, summary = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    assert outputs["digest"] == "" and outputs["image"] == ""
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert (
        f"{services['TEST_REGISTRY']} refused user '{services['TEST_REGISTRY_USERNAME']}'" in error
    )
    assert "not-the-password-xyz" not in "\n".join(
        line for line in log.splitlines() if not line.startswith("::add-mask::")
    )
    assert "not-the-password-xyz" not in summary
    path = env["INPUT_IMAGE"].split("/", 1)[1]
    assert registry_get(services, f"/v2/{path}/tags/list")[0] in (404, 200)
    status, _, body = registry_get(services, f"/v2/{path}/tags/list")
    assert status == 404 or not json.loads(body).get("tags")


def test_push_without_credentials_is_refused(services: dict[str, str], workspace: Path) -> None:
    env = runner_env(services, workspace, registry_username="", registry_password="")
    code, log, outputs, _ = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    assert "refused anonymous access" in log


def test_failed_build_names_the_step_and_keeps_the_log(
    services: dict[str, str], workspace: Path
) -> None:
    (workspace / "Dockerfile").write_text(
        (workspace / "Dockerfile").read_text() + 'RUN echo "about to fail" && exit 3\n'
    )
    code, log, outputs, summary = go(runner_env(services, workspace))
    assert code == 1
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert 'failed at [3/3] RUN echo "about to fail" && exit 3:' in error
    assert error.endswith("exit code: 3")
    assert "failed to solve" not in error
    assert "about to fail" in summary
    assert outputs["image-id"] == ""


def test_build_output_cannot_issue_workflow_commands(
    services: dict[str, str], workspace: Path
) -> None:
    (workspace / "Dockerfile").write_text(
        (workspace / "Dockerfile").read_text()
        + 'RUN echo "::add-mask::stolen" && echo "::error::forged" && echo "::set-output name=image::evil"\n'
    )
    code, log, outputs, _ = go(runner_env(services, workspace))
    assert code == 0, log
    assert "::error::forged" in log  # printed, but inert
    executed = commands(log)
    assert not any("stolen" in c or "forged" in c or "evil" in c for c in executed)
    assert outputs["image"].endswith(outputs["digest"])


def test_build_args_target_and_dockerignore(services: dict[str, str], workspace: Path) -> None:
    (workspace / "ignored.txt").write_text("must not reach the engine")
    (workspace / "kept.txt").write_text("kept")
    (workspace / ".dockerignore").write_text("ignored.txt\n")
    (workspace / "Dockerfile").write_text(
        "FROM scratch AS base\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "ARG GREETING\n"
        "COPY . /ctx/\n"
        'RUN test "$GREETING" = "hello world" && test -f /ctx/kept.txt && test ! -e /ctx/ignored.txt\n'
        "FROM base AS broken\n"
        "RUN exit 9\n"
    )
    code, log, outputs, _ = go(
        runner_env(services, workspace, build_args="GREETING=hello world", target="base")
    )
    assert code == 0, log
    assert outputs["status"] == "succeeded"


def test_build_false_resolves_an_existing_image(services: dict[str, str], workspace: Path) -> None:
    env = runner_env(services, workspace, tags="v7")
    code, log, first, _ = go(env)
    assert code == 0, log
    env = runner_env(services, workspace, tags="v7", build="false")
    env["INPUT_IMAGE"] = json.loads(first["tags"])[0].rsplit(":", 1)[0]
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert outputs["digest"] == first["digest"]
    assert outputs["image-id"] == ""


# docker-py does not close the socket of a failed unix-socket connect; collect it here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_engine_is_a_clear_error(
    services: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    env = runner_env(services, workspace)
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-such.sock"
    code, log, outputs, _ = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    error = next(c for c in commands(log) if c.startswith("::error"))
    assert "Cannot reach the Docker engine" in error
    assert "Traceback" not in log
    gc.collect()
