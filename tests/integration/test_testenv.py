"""The test environment itself: the engine answers, the registry demands auth, BuildKit works.

These fail fast and plainly when ``make env-up`` did not do its job, before the
product's build/push/rollout integration tests produce less obvious errors.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

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


def test_docker29_keeps_images_in_containerd_and_runs_privileged_containers() -> None:
    """The second engine is what users' runners have: Docker 29, containerd image store."""
    import docker

    host = need_service("TEST_DOCKER29_HOST")["TEST_DOCKER29_HOST"]
    client = docker.APIClient(base_url=host, version="auto", timeout=60)
    try:
        version = client.version()
        info = client.info()
    finally:
        client.close()
    assert version["Version"].startswith("29."), version
    assert tuple(int(x) for x in version["ApiVersion"].split(".")) >= (1, 44)
    assert ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"]
    # runc 1.5 (time namespaces) and --privileged, as buildx's docker-container driver needs.
    image = "deployer-testenv/busybox:probe"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": host}
    imported = subprocess.run(
        ["docker", "import", "-", image],
        input=_busybox_tar(),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    run = subprocess.run(
        ["docker", "run", "--rm", "--privileged", "--network", "none", image, "/busybox", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def _busybox_tar() -> bytes:
    """A tar holding /busybox (static), for `docker import`."""
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add("/bin/busybox", arcname="busybox")
    return data.getvalue()


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
