"""BuildKit builds on the real engines and registry (issue 9): what build-push-action users need.

On Docker 29 (containerd image store) the engine's own BuildKit (buildx
``docker`` driver) builds everything, cache exports and several platforms
included. On Docker 20.10 (classic image store, as Docker 28 on GitHub's
runners) those need a ``docker-container`` builder on the test environment's
BuildKit image (DEPLOYER_BUILDKIT_IMAGE, built from Go modules by make env-up),
made for the run and removed afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from deployer.pipeline import run
from tests.conftest import Engine, need_service
from tests.integration.test_build_push import (
    docker_api,
    go,
    registry_get,
    runner_env,
    workspace,
)
from tests.integration.test_rollout import create_deployment, read
from tests.unit.test_actions import commands, runner_outputs

pytestmark = pytest.mark.integration
__all__ = ["workspace"]  # fixture used here

SECRET = "bk-secret-" + uuid.uuid4().hex  # a build secret no file or image may hold


@pytest.fixture
def services(engine: Engine) -> dict[str, str]:
    """The registry, buildx and the BuildKit image, with DOCKER_HOST this test's engine."""
    settings = need_service(
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
        "DEPLOYER_BUILDX",
        "DEPLOYER_BUILDKIT_IMAGE",
    )
    return {**settings, "DOCKER_HOST": engine.host}


def env_for(services: dict[str, str], workspace: Path, **inputs: str) -> dict[str, str]:
    env = runner_env(services, workspace, **inputs)
    env["DEPLOYER_BUILDKIT_IMAGE"] = services["DEPLOYER_BUILDKIT_IMAGE"]
    return env


def error_of(log: str) -> str:
    return next(c for c in commands(log) if c.startswith("::error"))


def builder_names(log: str) -> list[str]:
    return re.findall(r"::group::Builder (deployer-[0-9a-f]+)", log)


def says_builder_for(engine: Engine, log: str, reason: str) -> bool:
    """Whether the log names the builder the engine needs for ``reason``, and why."""
    if engine.containerd_store:  # the engine's BuildKit does it; no builder is made
        return f"it does {reason}" in log and not builder_names(log)
    return f"because of {reason}" in log and len(builder_names(log)) == 1


def builder_leftovers(services: dict[str, str], name: str) -> list[str]:
    api = docker_api(services)
    try:
        containers = api.containers(all=True, filters={"name": f"buildx_buildkit_{name}"})
        volumes = api.volumes(filters={"name": f"buildx_buildkit_{name}"}).get("Volumes") or []
    finally:
        api.close()
    return [c["Names"][0] for c in containers] + [v["Name"] for v in volumes]


def manifest(services: dict[str, str], repo: str, reference: str) -> tuple[str, dict[str, object]]:
    path = repo.split("/", 1)[1]
    status, headers, body = registry_get(services, f"/v2/{path}/manifests/{reference}")
    assert status == 200, body
    return headers["Content-Type"], json.loads(body)


def test_run_mount_cache_builds_with_the_engines_buildkit(
    services: dict[str, str], workspace: Path
) -> None:
    (workspace / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN --mount=type=cache,target=/root/.cache echo warm > /root/.cache/x && "
        "test -f /root/.cache/x && echo cached-step-ran\n"
    )
    code, log, outputs, _ = go(env_for(services, workspace))
    assert code == 0, log
    assert "the --mount option requires BuildKit" not in log
    assert "Builder: the engine's own BuildKit (buildx docker driver)" in log
    assert "cached-step-ran" in log
    media_type, _ = manifest(services, outputs["image"].split("@")[0], outputs["digest"])
    assert "manifest" in media_type
    assert outputs["image-id"].startswith("sha256:")


def test_a_build_secret_is_used_and_found_nowhere(
    services: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    (workspace / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN --mount=type=secret,id=api_token "
        f'test "$(cat /run/secrets/api_token)" = "{SECRET[:10]}$(cut -c11- /run/secrets/api_token)" '
        "&& wc -c < /run/secrets/api_token > /token-length\n"
    )
    env = env_for(services, workspace, secrets=f"api_token={SECRET}")
    code, log, outputs, summary = go(env)
    assert code == 0, log
    assert f"::add-mask::{SECRET}" in log  # masked before anything ran
    shown = [line for line in log.splitlines() if not line.startswith("::add-mask::")]
    assert SECRET not in "\n".join(shown) and SECRET not in summary
    api = docker_api(services)
    try:
        image = api.inspect_image(outputs["image-id"])
        history = api.history(outputs["image-id"])
        exported = b"".join(api.get_image(outputs["image-id"]))
    finally:
        api.close()
    assert SECRET not in json.dumps(image) and SECRET not in json.dumps(history)
    # every layer of the saved image, unpacked, holds neither the value nor the mount's file
    found: list[bytes] = []
    with tarfile.open(fileobj=io.BytesIO(exported)) as saved:
        for member in saved.getmembers():
            data = saved.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            found.append(data)
            if member.name.endswith(".tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for entry in layer.getmembers():
                        assert "run/secrets/api_token" not in entry.name
                        if entry.isfile():
                            content = layer.extractfile(entry).read()  # type: ignore[union-attr]
                            found.append(content)
                            if entry.name == "token-length":
                                assert content.strip() == str(len(SECRET)).encode()
    assert all(SECRET.encode() not in data for data in found)
    assert any(b"token-length" in data for data in found)  # the layers were really searched


def test_two_platforms_push_an_index_and_a_deployment_runs_it(
    engine: Engine, services: dict[str, str], workspace: Path
) -> None:
    settings = need_service("KUBECONFIG")
    (workspace / "Dockerfile").write_text(
        "FROM scratch\nARG TARGETPLATFORM\nCOPY busybox /bin/busybox\nCOPY Dockerfile /built-for\n"
    )
    repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/web"
    admin = kube_config.new_client_from_config(config_file=settings["KUBECONFIG"])
    namespace = f"bk-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        create_deployment(admin, namespace, "web", f"{repo}:old")
        env = env_for(services, workspace, platforms="linux/amd64,linux/arm64")
        env.update(
            {
                "INPUT_IMAGE": repo,
                "INPUT_KUBECONFIG": Path(settings["KUBECONFIG"]).read_text(),
                "INPUT_NAMESPACE": namespace,
                "INPUT_DEPLOYMENTS": "web",
                "INPUT_TIMEOUT": "90s",
            }
        )
        code, log, outputs, _ = go(env)
        assert code == 0, log
        live = read(admin, namespace, "web")
    finally:
        core.delete_namespace(namespace)
        admin.close()
    assert says_builder_for(engine, log, "2 platforms"), log
    media_type, index = manifest(services, repo, outputs["digest"])
    assert media_type in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}"  # type: ignore[index]
        for m in index["manifests"]  # type: ignore[attr-defined]
    }
    assert platforms == {"linux/amd64", "linux/arm64"}  # no attestations unless asked
    _, tagged = manifest(services, repo, json.loads(outputs["tags"])[0].rsplit(":", 1)[1])
    assert tagged == index
    assert outputs["image"] == f"{repo}@{outputs['digest']}"
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == outputs["image"]
    for name in builder_names(log):
        assert builder_leftovers(services, name) == []


def slow_dockerfile(workspace: Path, marker: str) -> None:
    (workspace / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f"RUN sleep 3 && echo {marker} > /slow && echo slow-step-ran-$((40+2))\n"
    )


@pytest.mark.engines("docker29", "docker20")
def test_a_registry_cache_survives_a_fresh_runner(
    engine: Engine, services: dict[str, str], workspace: Path
) -> None:
    marker = uuid.uuid4().hex[:12]
    slow_dockerfile(workspace, marker)
    repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/web"
    cache = f"type=registry,ref={repo}:buildcache"
    inputs = {"cache_from": cache, "cache_to": f"{cache},mode=max"}
    env = env_for(services, workspace, **inputs)
    env["INPUT_IMAGE"] = repo
    code, first_log, first, _ = go(env)
    assert code == 0, first_log
    assert "slow-step-ran-42" in first_log
    assert says_builder_for(engine, first_log, "cache-to type=registry"), first_log
    # A fresh runner: no build cache, no images, no builder in the engine.
    api = docker_api(services)
    try:
        api.prune_builds()
        for reference in json.loads(first["tags"]):  # pushed by BuildKit, loaded nowhere
            with contextlib.suppress(docker.errors.ImageNotFound):
                api.remove_image(reference, force=True)
    finally:
        api.close()
    for name in builder_names(first_log):
        assert builder_leftovers(services, name) == []
    env = env_for(services, workspace, **inputs)
    env["INPUT_IMAGE"] = repo
    env["GITHUB_SHA"] = "f" * 40  # another commit, same sources
    code, log, second, _ = go(env)
    assert code == 0, log
    assert "slow-step-ran-42" not in log  # the slow RUN was not run again
    slow = re.search(r"^#(\d+) \[(?:stage-0 )?3/3\] RUN sleep 3", log, re.MULTILINE)
    assert slow and f"#{slow.group(1)} CACHED" in log
    assert second["status"] == "succeeded"


@pytest.mark.engines("docker29", "docker20")
def test_a_private_base_image_is_pulled_with_the_login(
    services: dict[str, str], workspace: Path
) -> None:
    base_repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/base"
    env = env_for(services, workspace, tags="1")
    env["INPUT_IMAGE"] = base_repo
    code, log, _, _ = go(env)
    assert code == 0, log
    status, _, _ = registry_get(
        services, f"/v2/{base_repo.split('/', 1)[1]}/manifests/1", auth=False
    )
    assert status == 401  # the base really is private
    api = docker_api(services)
    try:
        api.remove_image(f"{base_repo}:1", force=True)  # nothing local to fall back on
    finally:
        api.close()
    (workspace / "Dockerfile").write_text(
        f"FROM {base_repo}:1\nRUN echo on-the-private-base > /proof\n"
    )
    code, log, outputs, _ = go(env_for(services, workspace))
    assert code == 0, log
    assert outputs["status"] == "succeeded"
    # without the login, the same build is refused and says whose login it needs
    env = env_for(services, workspace, registry_username="", registry_password="")
    code, log, _, _ = go(env)
    assert code == 1
    error = error_of(log)
    assert "Registry refused the credentials" in error
    assert "refused anonymous access while pulling a base image" in error


@pytest.mark.engines("docker29", "docker20")
def test_sigterm_mid_build_ends_buildx_removes_the_builder_and_reports_cancelled(
    engine: Engine, services: dict[str, str], workspace: Path
) -> None:
    (workspace / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f"RUN echo {uuid.uuid4().hex} && sleep 120\n"
    )
    repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/web"
    env = env_for(services, workspace, cache_to=f"type=registry,ref={repo}:cache")
    env["INPUT_IMAGE"] = repo
    out = _Tee()
    started_at: list[float] = []

    def cancel_when_the_slow_step_runs() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "&& sleep 120" not in out.getvalue():
            time.sleep(0.1)
        time.sleep(1.0)
        started_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=cancel_when_the_slow_step_runs, daemon=True)
    watcher.start()
    code = run(env, out)
    ended = time.monotonic()
    watcher.join(5)
    log = out.getvalue()
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert started_at, log
    assert code == 1 and outputs["status"] == "cancelled", log
    assert "Cancelled by SIGTERM" in error_of(log)
    assert ended - started_at[0] < 10  # within the runner's SIGINT→kill window
    assert says_builder_for(engine, log, "cache-to type=registry"), log
    for name in builder_names(log):
        assert builder_leftovers(services, name) == []
    assert not _buildx_processes(env["INPUT_IMAGE"])


class _Tee(io.StringIO):
    """The run's log, readable while it is written."""


def _buildx_processes(tag_prefix: str) -> list[str]:
    """buildx processes building a tag of ``tag_prefix``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(f"--tag={tag_prefix}:".encode()) for a in argv):
            found.append(entry.name)
    return found


# Docker 20.10 only: with the containerd store (Docker 29) no builder is made.
@pytest.mark.engines("docker20")
def test_the_builder_is_removed_after_a_failed_build(
    services: dict[str, str], workspace: Path
) -> None:
    (workspace / "Dockerfile").write_text((workspace / "Dockerfile").read_text() + "RUN exit 7\n")
    repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/web"
    env = env_for(services, workspace, cache_to=f"type=registry,ref={repo}:cache")
    env["INPUT_IMAGE"] = repo
    code, log, outputs, _ = go(env)
    assert code == 1 and outputs["status"] == "failed"
    assert "failed at [3/3] RUN exit 7:" in error_of(log)
    [name] = builder_names(log)
    assert builder_leftovers(services, name) == []


def test_an_image_by_digest_is_deployed_only_when_the_registry_holds_it(
    services: dict[str, str], workspace: Path
) -> None:
    code, log, built, _ = go(env_for(services, workspace))
    assert code == 0, log
    env = env_for(services, workspace, build="false")
    env["INPUT_IMAGE"] = built["image"]
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert outputs["image"] == built["image"] and outputs["digest"] == built["digest"]
    missing = built["image"].split("@")[0] + "@sha256:" + "0" * 64
    env = env_for(services, workspace, build="false")
    env["INPUT_IMAGE"] = missing
    code, log, outputs, _ = go(env)
    assert code == 1 and outputs["image"] == ""
    assert "sha256:" + "0" * 64 in error_of(log)


def test_one_commit_built_twice_on_workflow_dispatch_gives_one_digest(
    services: dict[str, str], workspace: Path
) -> None:
    git = ["git", "-C", str(workspace), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "Dockerfile", "busybox"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    (workspace / ".dockerignore").write_text(".git\n")
    digests = []
    for _ in range(2):
        env = env_for(services, workspace)
        env.pop("GITHUB_SHA")  # no commit in the event either
        env["INPUT_TAGS"] = "dispatch"
        env["INPUT_IMAGE"] = f"{services['TEST_REGISTRY']}/bk-dispatch/web"
        code, log, outputs, _ = go(env)
        assert code == 0, log
        digests.append(outputs["digest"])
        time.sleep(1.1)  # a "now" label would differ
    assert digests[0] == digests[1]


def test_provenance_makes_an_index_whose_digest_is_read_back(
    engine: Engine, services: dict[str, str], workspace: Path
) -> None:
    repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/web"
    env = env_for(services, workspace, provenance="mode=min")
    env["INPUT_IMAGE"] = repo
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert says_builder_for(engine, log, "attestations (provenance/sbom)"), log
    assert "(an image index)" in log
    media_type, index = manifest(services, repo, outputs["digest"])
    assert media_type == "application/vnd.oci.image.index.v1+json"
    kinds = {
        m.get("annotations", {}).get("vnd.docker.reference.type", "image")  # type: ignore[union-attr]
        for m in index["manifests"]  # type: ignore[attr-defined]
    }
    assert kinds == {"image", "attestation-manifest"}


def test_a_run_step_for_arm64_through_qemu(services: dict[str, str], workspace: Path) -> None:
    arm64 = need_service("TEST_BUSYBOX_ARM64")["TEST_BUSYBOX_ARM64"]
    shutil.copy(arm64, workspace / "busybox-arm64")
    shutil.copy(workspace / "busybox", workspace / "busybox-amd64")
    (workspace / "Dockerfile").write_text(
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-$TARGETARCH /bin/busybox\n"
        # a new step each time (the run's id in it): the engine's build cache would skip it
        f'RUN ["/bin/busybox", "sh", "-c", ": {uuid.uuid4().hex}; '
        '/bin/busybox uname -m > /arch && /bin/busybox cat /arch"]\n'
    )
    repo = f"{services['TEST_REGISTRY']}/bk-{uuid.uuid4().hex[:8]}/web"
    env = env_for(services, workspace, platforms="linux/amd64,linux/arm64")
    env["INPUT_IMAGE"] = repo
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert re.search(r"^#\d+ [\d.]+ aarch64$", log, re.MULTILINE), log
    assert re.search(r"^#\d+ [\d.]+ x86_64$", log, re.MULTILINE), log
    _, index = manifest(services, repo, outputs["digest"])
    assert len(index["manifests"]) == 2  # type: ignore[arg-type]
