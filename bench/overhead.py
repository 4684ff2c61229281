"""Our own cost over buildx, in seconds, on Docker 29: where each 10 ms goes.

A warm rebuild + push of a two-step busybox image with the engine's own BuildKit
(what a run costs when the build itself is nothing), ours and the peer
alternating, medians of REPEAT. Both run the same buildx through a wrapper
that stamps its start and end (bash's $EPOCHREALTIME, no extra process), so a
run of ours splits into:

* before buildx: the interpreter's start (``python -c pass``, measured apart),
  our imports (a run's modules, timed inside an interpreter, measured apart),
  then configuration, the engine's ping and the private buildx directory (the
  rest of the time before buildx; the parts are medians taken apart, so they
  add up only roughly);
* buildx inside ours, against the same buildx alone (the peer): what our flags,
  environment and log reading add to buildx itself;
* after buildx: the digest read back from the registry, outputs, summary,
  removing the private directory, interpreter exit.

Figures: ours minus the peer (absolute, target 0.25 s) with that split in the
note, and the start-up to our first log line (target 0.2 s). Needs `make env-up`
(Docker 29: TEST_DOCKER29_HOST).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.buildx import Buildx, Ours
from bench.common import Figure
from tests.conftest import read_testenv

REPEAT = 7
_WRAPPER = """#!/bin/bash
echo "start $EPOCHREALTIME" >> "{log}"
"{buildx}" "$@"
code=$?
echo "end $EPOCHREALTIME" >> "{log}"
exit $code
"""


def _context(directory: Path) -> None:
    shutil.copy("/bin/busybox", directory / "busybox")
    (directory / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )


class _Stamps:
    """The wrapper's log: when buildx started and ended (wall clock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def take(self) -> tuple[float, float]:
        lines = self.path.read_text().split("\n")
        self.path.unlink()
        starts = [float(x.split()[1]) for x in lines if x.startswith("start ")]
        ends = [float(x.split()[1]) for x in lines if x.startswith("end ")]
        return starts[0], ends[-1]


def _ours_once(ours: Ours, image: str, stamps: _Stamps) -> dict[str, float]:
    """One run of ours: total, first log line, and the buildx phases (seconds)."""
    began = time.time()
    process = subprocess.Popen(
        ours.argv(image, tags="bench"),
        env=ours.env,
        cwd=ours.workspace,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = None
    for line in process.stdout:
        if first is None and not line.startswith("::add-mask::"):
            first = time.time() - began
    if process.wait() != 0:
        raise RuntimeError("the benchmark's build failed")
    ended = time.time()
    start, end = stamps.take()
    return {
        "total": ended - began,
        "first line": first or 0.0,
        "before": start - began,
        "buildx": end - start,
        "after": ended - end,
    }


def _peer_once(peer: Buildx, workspace: Path, tag: str, stamps: _Stamps) -> dict[str, float]:
    began = time.time()
    peer.build(workspace, tag)
    ended = time.time()
    start, end = stamps.take()
    return {"total": ended - began, "buildx": end - start}


# What a build-and-push run imports (deployer.__main__ and the stages it reaches),
# timed inside the interpreter: the imports alone, not their teardown at exit.
_RUN_IMPORTS = (
    "import time; began = time.perf_counter(); "
    "import deployer.__main__, deployer.pipeline, deployer.build, deployer.buildx, "
    "deployer.engine, deployer.push, deployer.registry, deployer.cloud.registry; "
    "print(time.perf_counter() - began)"
)


def _start_and_imports(ours: Ours) -> tuple[float, float]:
    """Medians: ``python -c pass``, and the time a run's imports take (pairs, same moments)."""
    starts: list[float] = []
    imports: list[float] = []
    for _ in range(REPEAT):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=ours.env, check=True)
        starts.append(time.perf_counter() - began)
        done = subprocess.run(
            [sys.executable, "-c", _RUN_IMPORTS],
            env=ours.env,
            check=True,
            capture_output=True,
            text=True,
        )
        imports.append(float(done.stdout))
    return statistics.median(starts), statistics.median(imports)


def run() -> list[Figure]:
    env = read_testenv()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        workspace = folder / "workspace"
        workspace.mkdir()
        _context(workspace)
        stamps = _Stamps(folder / "buildx.log")
        wrapper = folder / "buildx"
        wrapper.write_text(_WRAPPER.format(log=stamps.path, buildx=env["DEPLOYER_BUILDX"]))
        wrapper.chmod(0o755)
        engine = {**env, "DOCKER_HOST": env["TEST_DOCKER29_HOST"], "DEPLOYER_BUILDX": str(wrapper)}
        ours = Ours(engine, workspace)
        peer = Buildx(engine, folder)
        image = f"{env['TEST_REGISTRY']}/bench-overhead-{uuid.uuid4().hex[:8]}/web"
        _ours_once(ours, image, stamps)  # warm: the engine's cache, the registry's blobs
        _peer_once(peer, workspace, f"{image}:peer", stamps)
        mine: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for i in range(REPEAT):
            pair = [
                lambda: mine.append(_ours_once(ours, image, stamps)),
                lambda: theirs.append(_peer_once(peer, workspace, f"{image}:peer", stamps)),
            ]
            for step in pair if i % 2 == 0 else reversed(pair):
                step()
        interpreter, imports = _start_and_imports(ours)
    ours_run = {k: statistics.median(m[k] for m in mine) for k in mine[0]}
    peer_run = {k: statistics.median(p[k] for p in theirs) for k in theirs[0]}
    rest = ours_run["before"] - interpreter - imports
    split = (
        f"interpreter {interpreter * 1000:.0f} ms, imports {imports * 1000:.0f} ms, config + "
        f"engine ping + private dir {rest * 1000:.0f} ms, buildx slower inside ours "
        f"{(ours_run['buildx'] - peer_run['buildx']) * 1000:.0f} ms (buildx "
        f"{ours_run['buildx']:.3f}"
        f" s in ours, {peer_run['buildx']:.3f} s alone), after buildx (read-back, outputs, "
        f"cleanup, exit) {ours_run['after'] * 1000:.0f} ms"
    )
    overhead = ours_run["total"] - peer_run["total"]
    return [
        Figure(
            "ours minus buildx, warm rebuild + push (Docker 29, engine's BuildKit)",
            overhead,
            None,
            0.25,
            "s",
            f"ours {ours_run['total']:.3f} s, `buildx build --push` {peer_run['total']:.3f} s "
            f"({ours_run['total'] / peer_run['total']:.2f}x); {split}",
        ),
        Figure(
            "start-up to first log line (a build run, `python -m deployer`)",
            ours_run["first line"],
            None,
            0.2,
            "s",
            f"of which the interpreter {interpreter:.3f} s; from bytecode, as in the image",
        ),
    ]


if __name__ == "__main__":  # python -m bench.overhead: this module alone
    for figure in run():
        print(figure.row())
