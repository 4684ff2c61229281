"""A rebuild of an unchanged commit on a fresh runner, with a registry cache.

Hosted runners are new VMs: no engine cache, no images, no builder. What makes
the second build of a commit fast there is ``cache-from``/``cache-to`` of type
registry. The Dockerfile has a RUN step of SLOW seconds, then a small context.

* seed: one build and push with ``cache-to`` (mode=max) fills the cache;
* each measured round wipes the engine's build cache, the bench's images and
  any builder (bench.buildx.wipe), then runs, alternately,
  - ours: ``python -m deployer --cache-from … --cache-to … --push true``, which
    creates its own docker-container builder and removes it;
  - the peer: ``buildx create`` (same BuildKit image) + ``buildx build`` with the
    same cache flags and ``--push`` + ``buildx rm``, as setup-buildx-action and
    build-push-action do;
* the reference: ours without ``cache-from`` (after the same wipe; ``cache-to``
  kept, so the same kind of builder), SLOW s of RUN included.

Targets: ours <= 1.1x the peer; ours <= 0.3x the build without a cache.
Needs `make env-up` (engine, registry, BuildKit).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.buildx import Buildx, Ours, wipe
from bench.common import Figure
from tests.conftest import read_testenv

REPEAT = 3
SLOW = 12  # seconds of the RUN step the cache must save


def _context(directory: Path) -> None:
    shutil.copy("/bin/busybox", directory / "busybox")
    (directory / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        f'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep {SLOW}; '
        '/bin/busybox echo compiled > /compiled"]\n'
        "COPY src /src\n"
    )
    for i in range(200):
        sub = directory / "src" / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(f"file {i}\n")


def _fresh(env: dict[str, str], repository: str, run: Callable[[], None]) -> float:
    """Wall time of ``run`` on a wiped engine.

    (Builders are not checked for here: other processes may be running their own.
    tests/integration prove that ours removes its builder.)
    """
    wipe(env, repository)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run() -> list[Figure]:
    env = read_testenv()
    registry = env["TEST_REGISTRY"]
    repository = f"{registry}/bench-cache-{uuid.uuid4().hex[:8]}/"
    image = repository + "web"
    cache = repository + "cache:buildcache"
    cache_from = f"type=registry,ref={cache}"
    cache_to = f"type=registry,ref={cache},mode=max"
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        _context(workspace)
        ours = Ours(env, workspace)
        peer = Buildx(env, Path(tmp))

        def ours_cached() -> None:
            ours.run(image, **{"tags": "bench", "cache-from": cache_from, "cache-to": cache_to})

        def ours_uncached() -> None:
            # The same build minus cache-from (cache-to kept, to another ref: same builder).
            other = f"type=registry,ref={repository}uncached:buildcache,mode=max"
            ours.run(image, **{"tags": "uncached", "cache-to": other})

        def peer_cached() -> None:
            with peer.builder() as builder:
                peer.build(
                    workspace,
                    f"{image}:peer",
                    "--cache-from",
                    cache_from,
                    "--cache-to",
                    cache_to,
                    builder=builder,
                )

        # Seed the cache (not timed), then rounds, alternating who goes first.
        _fresh(env, repository, ours_cached)
        ours_times: list[float] = []
        peer_times: list[float] = []
        for i in range(REPEAT):
            pair = [(ours_times, ours_cached), (peer_times, peer_cached)]
            for times, fn in pair if i % 2 == 0 else reversed(pair):
                times.append(_fresh(env, repository, fn))
        uncached = statistics.median(
            _fresh(env, repository, ours_uncached) for _ in range(max(1, REPEAT - 1))
        )
        wipe(env, repository)
    ours_median = statistics.median(ours_times)
    peer_median = statistics.median(peer_times)
    return [
        Figure(
            f"fresh-runner rebuild, registry cache, RUN of {SLOW} s",
            ours_median,
            peer_median,
            1.1,
            "s",
            "peer: buildx create + build --cache-from/--cache-to --push + rm (same image)",
        ),
        Figure(
            "fresh-runner rebuild, registry cache vs no cache",
            ours_median,
            uncached,
            0.3,
            "s",
            f"reference: ours without cache-from after the same wipe ({uncached:.1f} s)",
        ),
    ]
