"""Start-up, warm rebuild and memory of the build-and-push path, against buildx.

Needs `make env-up` (engine, registry, BuildKit). Each figure is a median over
several runs; the peer (bench.buildx.Buildx: the same buildx binary, the same
flags) runs in the same process tree, right before or after ours. The
fresh-runner rebuild with a registry cache is bench/cache.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.buildx import Buildx, Ours
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
    (directory / ".dockerignore").write_text("src/ignored\n**/*.tmp\n")
    for i in range(FILES):
        sub = directory / "src" / f"d{i % 50}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(f"file {i}\n")
        if i % 10 == 0:
            (sub / f"f{i}.tmp").write_text("ignored\n")
    (directory / "src" / "ignored").mkdir()
    (directory / "src" / "ignored" / "big.bin").write_bytes(b"\0" * 1024 * 1024)


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
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        _context(workspace)
        image = f"{env['TEST_REGISTRY']}/bench-{uuid.uuid4().hex[:8]}/web"
        ours = Ours(env, workspace)
        peer = Buildx(env, Path(tmp))
        # Default inputs: the engine's own BuildKit (buildx's docker driver) for
        # both; the first runs fill the engine's cache and the registry.
        ours.run(image, tags="bench")
        peer.build(workspace, f"{image}:peer")
        ours_time = median_seconds(lambda: ours.run(image, tags="bench"), REPEAT)
        peer_time = median_seconds(lambda: peer.build(workspace, f"{image}:peer"), REPEAT)
        figures.append(
            Figure(
                f"warm rebuild + push, unchanged {FILES}-file context",
                ours_time,
                peer_time,
                1.1,
                "s",
                "peer: buildx build --push (docker driver), same context",
            )
        )
        own, child = ours.peak_rss_mb(image, tags="bench")
        figures.append(
            Figure(
                "peak memory of our process, build and push",
                own,
                None,
                150,
                "MB",
                f"buildx, its child: {child:.0f} MB",
            )
        )
    return figures


def _run_failing(inputs: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "entrypoint.py")],
        env=_env(inputs),
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    if result.returncode != 1:
        raise RuntimeError(f"expected exit 1 for a bad input, got {result.returncode}")
