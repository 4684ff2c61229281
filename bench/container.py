"""Start-up and size of the action's image, run the way the GitHub Actions runner runs it.

Needs `make env-up` (the Docker engine). Builds deployer-action:local first with
scripts/action-image.sh (seconds when nothing changed), so the figures are for
the working tree.

* start-up: from ``docker run`` (tests/integration/runner.py: every input, the
  /github mounts, the socket) to the action's first log line, with an invalid
  input so nothing else happens; median of 5. The peer, in the note, is the
  container runtime alone: ``docker run --rm --entrypoint true`` of the same image.
* size: the image as the engine reports it (what a runner builds or pulls per job),
  with the share of buildx.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Figure, median_seconds
from tests.conftest import read_testenv
from tests.integration.runner import IMAGE, ActionRunner

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 5


def _first_line_seconds(runner: ActionRunner) -> float:
    running = runner.start({"image": "Not/Valid"})
    try:
        running.wait_for_line(".", timeout=60)
        seconds = time.monotonic() - running.started
        result = running.wait(timeout=60)
    finally:
        running.close()
    if result.code != 1:
        raise RuntimeError(f"expected exit 1 for a bad input, got {result.code}:\n{result.log}")
    return seconds


def _image_bytes(docker_env: dict[str, str], image: str) -> int:
    """Size of an image scripts/action-image.sh copies from: its one layer."""
    out = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", image],
        env=docker_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out)


def run() -> list[Figure]:
    env = read_testenv()
    docker_env = dict(os.environ, DOCKER_HOST=env["DOCKER_HOST"])
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "action-image.sh")],
        env=docker_env,
        check=True,
        capture_output=True,
        timeout=1200,
    )
    with tempfile.TemporaryDirectory() as tmp:
        runner = ActionRunner(Path(tmp), docker_host=env["DOCKER_HOST"])
        _first_line_seconds(runner)  # warm: page cache, overlay mounts
        ours = statistics.median(_first_line_seconds(runner) for _ in range(REPEAT))
    peer = median_seconds(
        lambda: subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "true", IMAGE],
            env=docker_env,
            check=True,
            capture_output=True,
        ),
        REPEAT,
    )
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE],
        env=docker_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    buildx = _image_bytes(docker_env, "deployer-buildx-bin:local")
    tools = _image_bytes(docker_env, "deployer-tools:local")
    return [
        Figure(
            "container start to first log line (input error, runner's docker run)",
            ours,
            None,
            1.0,
            "s",
            f"peer: docker run --rm --entrypoint true, start to exit and removal: {peer:.3f} s",
        ),
        Figure(
            "action image size",
            int(size) / 1e6,
            None,
            320,
            "MB",
            f"{IMAGE}; buildx adds {buildx / 1e6:.0f} MB, kustomize and helm {tools / 1e6:.0f} MB",
        ),
    ]
