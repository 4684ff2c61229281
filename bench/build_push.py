"""Start-up, rebuild, re-push and memory of the build-and-push path, against the docker CLI.

Needs `make env-up` (engine and registry). Each figure is a median over several
runs; the peer runs in the same process tree, right before or after ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.common import Figure, median_seconds
from tests.conftest import read_testenv

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 5
FILES = 5000


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _context(directory: Path) -> None:
    shutil.copy("/bin/busybox", directory / "busybox")
    (directory / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nCOPY src /src\n'
    )
    (directory / "event.json").write_text('{"head_commit": {"timestamp": "2026-11-27T00:00:00Z"}}')
    (directory / ".dockerignore").write_text("src/ignored\n**/*.tmp\n")
    for i in range(FILES):
        sub = directory / "src" / f"d{i % 50}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(f"file {i}\n")
        if i % 10 == 0:
            (sub / f"f{i}.tmp").write_text("ignored\n")
    (directory / "src" / "ignored").mkdir()
    (directory / "src" / "ignored" / "big.bin").write_bytes(b"\0" * 1024 * 1024)


def _inputs(env: dict[str, str], image: str, workspace: Path, **extra: str) -> dict[str, str]:
    inputs = {
        "INPUT_IMAGE": image,
        "INPUT_TAGS": "bench",
        "INPUT_REGISTRY-USERNAME": env["TEST_REGISTRY_USERNAME"],
        "INPUT_REGISTRY-PASSWORD": env["TEST_REGISTRY_PASSWORD"],
        "GITHUB_WORKSPACE": str(workspace),
        "DOCKER_HOST": env["DOCKER_HOST"],
        # A re-run of one commit: the image's created label is the commit's time.
        "GITHUB_EVENT_PATH": str(workspace / "event.json"),
    }
    inputs.update(extra)
    return inputs


def _ours(inputs: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "entrypoint.py")],
        env=_env(inputs),
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )


def _peak_rss_mb(command: list[str], env: dict[str, str]) -> float:
    """Peak RSS of ``command`` (its whole process tree as the kernel accounts it)."""
    probe = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *command], env=env, check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[-1]) / 1024


def run() -> list[Figure]:
    env = read_testenv()
    figures = []
    start_env = {"GITHUB_WORKSPACE": str(ROOT), "INPUT_IMAGE": "Not/Valid"}
    figures.append(
        Figure(
            "start-up to input error (python entrypoint.py)",
            median_seconds(lambda: _run_failing(start_env), REPEAT * 2),
            None,
            0.3,
            "s",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        _context(workspace)
        image = f"{env['TEST_REGISTRY']}/bench-{uuid.uuid4().hex[:8]}/web"
        inputs = _inputs(env, image, workspace, **{"INPUT_PUSH": "false"})
        docker_env = _env({"DOCKER_HOST": env["DOCKER_HOST"], "DOCKER_BUILDKIT": "0"})
        peer_build = ["docker", "build", "-q", "-t", f"{image}:peer", str(workspace)]
        subprocess.run(peer_build, env=docker_env, check=True, stdout=subprocess.DEVNULL)
        _ours(inputs)  # warm the cache for both
        ours = median_seconds(lambda: _ours(inputs), REPEAT)
        peer = median_seconds(
            lambda: subprocess.run(
                peer_build, env=docker_env, check=True, stdout=subprocess.DEVNULL
            ),
            REPEAT,
        )
        figures.append(
            Figure(
                f"rebuild, unchanged {FILES}-file context",
                ours,
                peer,
                1.2,
                "s",
                "peer: docker build (legacy)",
            )
        )

        config_dir = workspace / "docker-config"
        login = [
            "docker",
            "--config",
            str(config_dir),
            "login",
            "-u",
            env["TEST_REGISTRY_USERNAME"],
            "--password-stdin",
            env["TEST_REGISTRY"],
        ]
        subprocess.run(
            login,
            env=docker_env,
            input=env["TEST_REGISTRY_PASSWORD"],
            text=True,
            check=True,
            capture_output=True,
        )
        push_inputs = dict(inputs, **{"INPUT_PUSH": "true"})
        _ours(push_inputs)  # first push uploads the layers; the measured ones find them there
        peer_push = ["docker", "--config", str(config_dir), "push", "-q", f"{image}:bench"]
        ours_push = median_seconds(lambda: _ours(push_inputs), REPEAT)
        peer_push_time = median_seconds(
            lambda: subprocess.run(
                peer_push, env=docker_env, check=True, stdout=subprocess.DEVNULL
            ),
            REPEAT,
        )
        peer_both = median_seconds(
            lambda: (
                subprocess.run(peer_build, env=docker_env, check=True, stdout=subprocess.DEVNULL),
                subprocess.run(peer_push, env=docker_env, check=True, stdout=subprocess.DEVNULL),
            ),
            REPEAT,
        )
        ours_push_stage = _push_stage_seconds(push_inputs)
        figures.append(
            Figure(
                "push, layers already in the registry",
                ours_push_stage,
                peer_push_time,
                1.2,
                "s",
                "ours: the push stage (all tags, digest read back) in process; peer: docker push",
            )
        )
        figures.append(
            Figure(
                "build + push, layers already in the registry",
                ours_push,
                peer_both,
                1.2,
                "s",
                f"peer: docker build + docker push (push alone {peer_push_time:.2f} s)",
            )
        )
        ours_rss = _peak_rss_mb([sys.executable, str(ROOT / "entrypoint.py")], _env(push_inputs))
        peer_rss = _peak_rss_mb(peer_push, docker_env)
        figures.append(
            Figure(
                "peak memory, build and push",
                ours_rss,
                None,
                150,
                "MB",
                f"docker push CLI: {peer_rss:.0f} MB",
            )
        )
    return figures


def _push_stage_seconds(inputs: dict[str, str]) -> float:
    """Median time of our push stage alone, in this process, image already built."""
    import io

    from deployer.actions import ActionsIO
    from deployer.config import load_config
    from deployer.pipeline import docker_client
    from deployer.push import push_image

    config = load_config(_env(inputs))
    client = docker_client(config)
    try:
        return median_seconds(lambda: push_image(config, client, ActionsIO(io.StringIO())), REPEAT)
    finally:
        client.close()


def _run_failing(inputs: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "entrypoint.py")],
        env=_env(inputs),
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    if result.returncode != 1:
        raise RuntimeError(f"expected exit 1 for a bad input, got {result.returncode}")
