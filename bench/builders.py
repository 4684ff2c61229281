"""The first build on a fresh Docker 29, with each builder a run can have.

A hosted runner is a new VM: no build cache, no builder, no BuildKit image.
Docker 29 keeps images in containerd, so the engine's own BuildKit exports
caches and builds several platforms, and the action uses it (build.py) where it
used to create a ``docker-container`` builder. This measures what that saves,
on the build of a request that needed a builder before: ``cache-to`` a registry.

* ours: ``python -m deployer … --cache-to type=registry,…`` on Docker 29 (the
  engine's BuildKit; the log says so);
* the peer: what docker/setup-buildx-action + build-push-action do: ``buildx
  create --driver docker-container --bootstrap`` (the BuildKit image pulled by
  digest from the registry, as moby/buildkit is on a runner), the same build,
  ``buildx rm``.

Before every run the engine's build cache, the bench's images and the BuildKit
image are removed. Alternating, medians of REPEAT. Target: ours <= the peer.
Needs `make env-up` (TEST_DOCKER29_HOST, the BuildKit image).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.buildx import Buildx, Ours, docker, wipe
from bench.common import Figure
from tests.conftest import read_testenv

REPEAT = 3


def _context(directory: Path) -> None:
    shutil.copy("/bin/busybox", directory / "busybox")
    (directory / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo built > /built"]\nCOPY src /src\n'
    )
    (directory / "src").mkdir()
    for i in range(200):
        (directory / "src" / f"f{i}.txt").write_text(f"file {i}\n")


def _fresh(env: dict[str, str], repository: str) -> None:
    """No build cache, no bench images, no BuildKit image in the engine."""
    wipe(env, repository)
    present = docker(env, "images", "-q", "--no-trunc", env["DEPLOYER_BUILDKIT_IMAGE"]).split()
    if present:
        docker(env, "image", "rm", "-f", env["DEPLOYER_BUILDKIT_IMAGE"])


def run() -> list[Figure]:
    base = read_testenv()
    env = {**base, "DOCKER_HOST": base["TEST_DOCKER29_HOST"]}
    repository = f"{env['TEST_REGISTRY']}/bench-builders-{uuid.uuid4().hex[:8]}/"
    image = repository + "web"
    cache_to = f"type=registry,ref={repository}cache:buildcache,mode=max"
    ours_times: list[float] = []
    peer_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        _context(workspace)
        ours = Ours(env, workspace)
        peer = Buildx(env, Path(tmp))

        def ours_build() -> None:
            ours.run(image, **{"tags": "ours", "cache-to": cache_to})

        def peer_build() -> None:
            with peer.builder() as builder:
                peer.build(workspace, f"{image}:peer", "--cache-to", cache_to, builder=builder)

        for i in range(REPEAT):
            pair = [(ours_times, ours_build), (peer_times, peer_build)]
            for times, build in pair if i % 2 == 0 else reversed(pair):
                _fresh(env, repository)
                started = time.perf_counter()
                build()
                times.append(time.perf_counter() - started)
        wipe(env, repository)
        # The BuildKit image back in the engine, as env-up left it (pulled with the login).
        subprocess.run(
            ["docker", "pull", "-q", env["DEPLOYER_BUILDKIT_IMAGE"]],
            env={**peer.env, "DOCKER_CONFIG": str(peer.config)},
            check=True,
            capture_output=True,
            timeout=300,
        )
    ours_median = statistics.median(ours_times)
    peer_median = statistics.median(peer_times)
    return [
        Figure(
            "first build on a fresh Docker 29, cache-to registry: engine's BuildKit vs "
            "a docker-container builder",
            ours_median,
            peer_median,
            1.0,
            "s",
            "ours: the engine's own BuildKit (containerd image store); peer: buildx create "
            "--driver docker-container --bootstrap (BuildKit image pulled by digest) + "
            f"buildx build + buildx rm; the builder costs {peer_median - ours_median:.1f} s",
        )
    ]
