"""A rebuild of an unchanged commit on a fresh runner, with a registry cache.

Hosted runners are new VMs: no engine cache, no images, no builder. What makes
the second build of a commit fast there is ``cache-from``/``cache-to`` of type
registry. The Dockerfile has a RUN step of SLOW seconds, then a small context.

* seed: one build and push with ``cache-to`` (mode=max) fills the cache;
* each measured round wipes the engine's build cache, the bench's images and
  any builder (bench.buildx.wipe), then runs, alternately,
  - ours: ``python -m deployer --cache-from … --cache-to … --push true``;
  - the peer: ``buildx build`` with the same cache flags and ``--push``.
* the reference: ours without ``cache-from`` (after the same wipe; ``cache-to``
  kept, so the same kind of builder), SLOW s of RUN included.

On Docker 20.10 (classic image store, as Docker 28 on the runners) ours creates
its own docker-container builder and removes it, and the peer does the same
(``buildx create`` on the same BuildKit image + build + ``buildx rm``, as
setup-buildx-action and build-push-action do). On Docker 29 (containerd image
store) ours builds with the engine's own BuildKit, and the peer is ``docker
buildx build`` on the default builder, which is that BuildKit too.

Targets: ours <= 1.1x the peer on each engine; ours <= 0.3x the build without a
cache (Docker 20.10). Needs `make env-up` (both engines, registry, BuildKit).
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


def _rounds(
    env: dict[str, str], builder: bool, uncached_too: bool
) -> tuple[float, float, float | None]:
    """Medians: ours, the peer (with its own builder when ``builder``), ours without a cache."""
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
            flags = ("--cache-from", cache_from, "--cache-to", cache_to)
            if not builder:
                peer.build(workspace, f"{image}:peer", *flags)
                return
            with peer.builder() as name:
                peer.build(workspace, f"{image}:peer", *flags, builder=name)

        # Seed the cache (not timed), then rounds, alternating who goes first.
        _fresh(env, repository, ours_cached)
        ours_times: list[float] = []
        peer_times: list[float] = []
        for i in range(REPEAT):
            pair = [(ours_times, ours_cached), (peer_times, peer_cached)]
            for times, fn in pair if i % 2 == 0 else reversed(pair):
                times.append(_fresh(env, repository, fn))
        uncached = None
        if uncached_too:
            uncached = statistics.median(
                _fresh(env, repository, ours_uncached) for _ in range(max(1, REPEAT - 1))
            )
        wipe(env, repository)
    return statistics.median(ours_times), statistics.median(peer_times), uncached


def run() -> list[Figure]:
    env = read_testenv()
    ours20, peer20, uncached = _rounds(env, builder=True, uncached_too=True)
    ours29, peer29, _ = _rounds({**env, "DOCKER_HOST": env["TEST_DOCKER29_HOST"]}, False, False)
    assert uncached is not None
    return [
        Figure(
            f"fresh-runner rebuild, registry cache, RUN of {SLOW} s (Docker 20.10)",
            ours20,
            peer20,
            1.1,
            "s",
            "peer: buildx create + build --cache-from/--cache-to --push + rm (same image); "
            "ours makes its own docker-container builder too",
        ),
        Figure(
            f"fresh-runner rebuild, registry cache, RUN of {SLOW} s (Docker 29)",
            ours29,
            peer29,
            1.1,
            "s",
            "peer: docker buildx build --cache-from/--cache-to --push (the default builder); "
            f"ours: the engine's own BuildKit too; ours minus peer {ours29 - peer29:.2f} s",
        ),
        Figure(
            "fresh-runner rebuild, registry cache vs no cache (Docker 20.10)",
            ours20,
            uncached,
            0.3,
            "s",
            f"reference: ours without cache-from after the same wipe ({uncached:.1f} s)",
        ),
    ]
