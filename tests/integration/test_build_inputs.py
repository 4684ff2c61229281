"""build-push-action's further inputs on the real engine, BuildKit and registry (issue 19.3).

``annotations``, ``build-contexts`` (with ``file``), ``no-cache-filters``,
``secret-files``/``secret-envs``, ``ssh``, and an ``image`` with upper case: what the
registry holds afterwards, and what the build saw.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_build_push import docker_api, go, registry_get, workspace
from tests.integration.test_buildkit import (
    builder_leftovers,
    builder_names,
    env_for,
    manifest,
    services,
)

pytestmark = pytest.mark.integration
__all__ = ["services", "workspace"]  # fixtures used here

SECRET = "bi-secret-" + uuid.uuid4().hex  # no layer, log or argv may hold it
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def repository(services: dict[str, str], name: str = "web") -> str:
    return f"{services['TEST_REGISTRY']}/bi-{uuid.uuid4().hex[:8]}/{name}"


def busybox_dockerfile(*steps: str) -> str:
    return "\n".join(
        [
            "FROM scratch",
            "COPY busybox /bin/busybox",
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
            *steps,
            "",
        ]
    )


def files_of(services: dict[str, str], repo: str, reference: str) -> dict[str, bytes]:
    """Every regular file of the pushed single-platform image, read from its layer blobs."""
    _, image = manifest(services, repo, reference)
    path = repo.split("/", 1)[1]
    found: dict[str, bytes] = {}
    for layer in image["layers"]:  # type: ignore[attr-defined]
        status, _, blob = registry_get(services, f"/v2/{path}/blobs/{layer['digest']}")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            for entry in tar.getmembers():
                if entry.isfile():
                    found[entry.name] = tar.extractfile(entry).read()  # type: ignore[union-attr]
    return found


# -- annotations --------------------------------------------------------------------------------


def test_an_annotation_is_on_the_pushed_manifest(services: dict[str, str], workspace: Path) -> None:
    # The engine's BuildKit (docker driver, classic image store) pushes without them.
    repo = repository(services)
    env = env_for(services, workspace, annotations="org.opencontainers.image.title=web app")
    env["INPUT_IMAGE"] = repo
    code, log, outputs, _ = go(env)
    assert code == 0, log
    _, pushed = manifest(services, repo, outputs["digest"])
    assert pushed["annotations"]["org.opencontainers.image.title"] == "web app"  # type: ignore[index]
    assert "because of annotations" in log
    for name in builder_names(log):
        assert builder_leftovers(services, name) == []


def test_annotations_of_a_multi_platform_build_are_on_the_index_and_its_manifests(
    services: dict[str, str], workspace: Path
) -> None:
    (workspace / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /built\n")
    repo = repository(services)
    annotations = (
        "org.opencontainers.image.description=The web app\n"
        "manifest[linux/arm64]:com.example.arch=arm64\n"
    )
    env = env_for(services, workspace, platforms="linux/amd64,linux/arm64", annotations=annotations)
    env["INPUT_IMAGE"] = repo
    code, log, outputs, _ = go(env)
    assert code == 0, log
    media_type, index = manifest(services, repo, outputs["digest"])
    assert media_type in INDEX_TYPES
    assert index["annotations"] == {"org.opencontainers.image.description": "The web app"}
    per_platform = {}
    for entry in index["manifests"]:  # type: ignore[attr-defined]
        _, image = manifest(services, repo, entry["digest"])
        per_platform[entry["platform"]["architecture"]] = image["annotations"]
    assert per_platform["amd64"] == {"org.opencontainers.image.description": "The web app"}
    assert per_platform["arm64"] == {
        "org.opencontainers.image.description": "The web app",
        "com.example.arch": "arm64",
    }


# -- build-contexts and file ----------------------------------------------------------------------


def test_named_contexts_a_directory_and_an_image_of_the_registry(
    services: dict[str, str], workspace: Path
) -> None:
    base_repo = repository(services, "base")
    (workspace / "Dockerfile").write_text(busybox_dockerfile("RUN echo base > /base-marker"))
    env = env_for(services, workspace, tags="1")
    env["INPUT_IMAGE"] = base_repo
    code, log, _, _ = go(env)
    assert code == 0, log

    (workspace / "assets").mkdir()
    (workspace / "assets" / "index.html").write_text("<h1>hello</h1>\n")
    (workspace / "assets" / "local.env").write_text(SECRET)
    (workspace / "assets" / ".dockerignore").write_text("local.env\n")
    (workspace / "docker").mkdir()
    (workspace / "docker" / "Dockerfile").write_text(
        "FROM base\nCOPY --from=assets / /srv/\n"
    )  # FROM base: the named context, not an image called "base"
    repo = repository(services)
    env = env_for(
        services,
        workspace,
        file="docker/Dockerfile",
        build_contexts=f"assets=./assets\nbase=docker-image://{base_repo}:1",
    )
    env["INPUT_IMAGE"] = repo
    code, log, outputs, _ = go(env)
    assert code == 0, log
    files = files_of(services, repo, outputs["digest"])
    assert files["srv/index.html"] == b"<h1>hello</h1>\n"
    assert "srv/local.env" not in files  # the named context's own .dockerignore
    assert files["base-marker"] == b"base\n"  # the base came from the docker-image:// context
    assert all(SECRET.encode() not in data for data in files.values())
    api = docker_api(services)
    try:
        api_version = api.api_version
    finally:
        api.close()
    if tuple(int(p) for p in api_version.split(".")) < (1, 42):
        assert "because of build-contexts (engine API" in log  # 20.10's BuildKit 0.8


# -- no-cache-filters -------------------------------------------------------------------------------


def test_a_no_cache_filter_runs_its_stage_again_and_only_it(
    services: dict[str, str], workspace: Path
) -> None:
    marker = uuid.uuid4().hex[:10]
    (workspace / "Dockerfile").write_text(
        busybox_dockerfile(
            f"RUN echo {marker} > /deps && echo deps-ran-$((40+2))",
            "FROM scratch AS test",
            "COPY --from=0 /bin /bin",
            f"RUN echo {marker} > /test && echo test-ran-$((40+2))",
        )
    )
    repo = repository(services)
    env = env_for(services, workspace)
    env["INPUT_IMAGE"] = repo
    code, first, _, _ = go(env)
    assert code == 0, first
    assert "deps-ran-42" in first and "test-ran-42" in first
    env = env_for(services, workspace, no_cache_filters="test")
    env["INPUT_IMAGE"] = repo
    code, second, _, _ = go(env)
    assert code == 0, second
    assert "test-ran-42" in second  # the filtered stage ran again
    assert "deps-ran-42" not in second  # the other one came from the cache


# -- secret-files, secret-envs ----------------------------------------------------------------------


def test_secret_files_and_secret_envs_are_used_and_found_nowhere(
    services: dict[str, str], workspace: Path
) -> None:
    npmrc = f"//registry.npmjs.org/:_authToken={SECRET}\n"
    (workspace / "ci").mkdir()
    (workspace / "ci" / "npmrc").write_text(npmrc)
    (workspace / "Dockerfile").write_text(
        busybox_dockerfile(
            "COPY . /src/",
            "RUN --mount=type=secret,id=npmrc sha256sum < /run/secrets/npmrc > /npmrc.sha",
            "RUN --mount=type=secret,id=token sha256sum < /run/secrets/token > /token.sha",
        )
    )
    repo = repository(services)
    env = env_for(services, workspace, secret_files="npmrc=ci/npmrc", secret_envs="token=API_TOKEN")
    env["INPUT_IMAGE"] = repo
    env["API_TOKEN"] = SECRET
    code, log, outputs, summary = go(env)
    assert code == 0, log
    assert f"::add-mask::{SECRET}" in log
    shown = [line for line in log.splitlines() if not line.startswith("::add-mask::")]
    assert SECRET not in "\n".join(shown) and SECRET not in summary
    files = files_of(services, repo, outputs["digest"])
    assert files["npmrc.sha"].split()[0] == hashlib.sha256(npmrc.encode()).hexdigest().encode()
    assert files["token.sha"].split()[0] == hashlib.sha256(SECRET.encode()).hexdigest().encode()
    assert "src/ci/npmrc" not in files and "src/Dockerfile" in files  # left out of COPY . /src/
    assert all(SECRET.encode() not in data for data in files.values())


# -- ssh ----------------------------------------------------------------------------------------------


@pytest.fixture
def ssh_agent(workspace: Path) -> Iterator[str]:
    """An ssh-agent whose socket is in the workspace, as the README tells users to start it."""
    if not shutil.which("ssh-agent"):
        pytest.fail("ssh-agent is not installed (openssh-client)")
    socket_path = workspace / ".ssh-agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.is_socket() and agent.poll() is None:
            assert time.monotonic() < deadline, "ssh-agent did not make its socket in 10 s"
            time.sleep(0.05)
        assert socket_path.is_socket(), "ssh-agent exited"
        yield str(socket_path)
    finally:
        agent.terminate()
        agent.wait(10)


def test_ssh_forwards_the_agent_and_key_files_to_run_mount_ssh(
    services: dict[str, str], workspace: Path, ssh_agent: str
) -> None:
    (workspace / "keys").mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bi-test", "-f", "keys/deploy"],
        cwd=workspace,
        check=True,
    )
    key = (workspace / "keys" / "deploy").read_text()
    (workspace / "Dockerfile").write_text(
        busybox_dockerfile(
            "COPY . /src/",
            'RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo agent-forwarded-$((40+2))',
            "RUN --mount=type=ssh,id=deploy "
            'test -S "$SSH_AUTH_SOCK" && echo key-forwarded-$((40+2))',
        )
    )
    repo = repository(services)
    env = env_for(services, workspace, ssh="default\ndeploy=keys/deploy")
    env["INPUT_IMAGE"] = repo
    env["SSH_AUTH_SOCK"] = ssh_agent
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert "agent-forwarded-42" in log and "key-forwarded-42" in log
    key_body = [line for line in key.splitlines() if not line.startswith("-----")]
    shown = [line for line in log.splitlines() if not line.startswith("::add-mask::")]
    assert all(line not in "\n".join(shown) for line in key_body)
    files = files_of(services, repo, outputs["digest"])
    assert "src/keys/deploy" not in files and "src/keys/deploy.pub" in files
    assert not any(name.endswith(".ssh-agent.sock") for name in files)


# -- image with upper case, tags as references ---------------------------------------------------------


def test_an_upper_case_image_and_reference_tags_push_the_lower_case_repository(
    services: dict[str, str], workspace: Path
) -> None:
    owner = f"Octo-{uuid.uuid4().hex[:6]}"
    image = f"{services['TEST_REGISTRY']}/{owner}/web"
    lowered = image.lower()
    env = env_for(services, workspace, tags=f"{image}:main\n{lowered}:sha-1a2b3c4")
    env["INPUT_IMAGE"] = image
    code, log, outputs, _ = go(env)
    assert code == 0, log
    assert re.search(r"^::notice title=Input adjusted::Image .* has upper-case letters", log, re.M)
    assert json.loads(outputs["tags"]) == [f"{lowered}:main", f"{lowered}:sha-1a2b3c4"]
    for tag in ("main", "sha-1a2b3c4"):
        _, pushed = manifest(services, lowered, tag)
        assert pushed == manifest(services, lowered, outputs["digest"])[1]
    assert outputs["image"] == f"{lowered}@{outputs['digest']}"
