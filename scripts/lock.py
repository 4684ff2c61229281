"""Regenerate requirements.lock: the action image's runtime dependencies, pinned, with hashes.

    python3 scripts/lock.py            # rewrite requirements.lock (scripts/lock.sh does this)
    python3 scripts/lock.py --check    # exit 1 when requirements.lock is not what it would write
    python3 scripts/lock.py --upgrade  # newest versions, not the current pins

Like pip-compile, it keeps the versions requirements.lock already pins where
pyproject.toml still allows them (they are passed to pip as constraints; when
they conflict with a new requirement, it resolves afresh), so adding one
dependency does not upgrade the others.

1. pip resolves pyproject.toml's [project.dependencies] (wheels only, for this
   interpreter) and reports the closure (``pip install --dry-run --report``).
2. Packages reachable only through EXCLUDED are left out: kubernetes requires
   aiohttp for kubernetes.aio, which deployer never imports (the image deletes
   kubernetes/aio too), so the image installs with ``--no-deps``.
3. Every pin gets the sha256 of each of its wheels on PyPI for Linux (x86_64,
   aarch64) or any platform, from the index's JSON API (PEP 691), so one lock
   serves the image's Python (3.11 in the tests, the release base image's in
   production) and the wheel-house path of scripts/action-image.sh.

The Dockerfile installs it with ``--require-hashes --only-binary=:all: --no-deps``.
Adding a runtime dependency: add it to pyproject.toml, run scripts/lock.sh, commit both.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
INDEX = "https://pypi.org/simple"
EXCLUDED = {"aiohttp", "aiohttp-retry"}
PLATFORMS = ("any", "manylinux", "musllinux")  # musllinux: kept for Alpine-based forks
ARCHES = ("x86_64", "aarch64")


def current_pins() -> list[str]:
    """The ``name==version`` lines of the existing requirements.lock."""
    if not LOCK.is_file():
        return []
    return re.findall(r"^([A-Za-z0-9._-]+==[^\s\\]+)", LOCK.read_text(), re.MULTILINE)


def resolve(requirements: list[str], upgrade: bool) -> dict[str, dict[str, object]]:
    """name -> pip's report entry (metadata included), for the whole closure."""
    pins = [] if upgrade else current_pins()
    if pins:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
            constraints.write("\n".join(pins) + "\n")
            constraints.flush()
            try:
                return _resolve([*requirements, "-c", constraints.name])
            except subprocess.CalledProcessError:
                print("lock: the current pins conflict; resolving afresh", file=sys.stderr)
    return _resolve(requirements)


def _resolve(requirements: list[str]) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--only-binary=:all:",
            "--report",
            "-",
            *requirements,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    report = json.loads(out)
    return {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}


def closure(roots: list[str], installed: dict[str, dict[str, object]]) -> list[str]:
    """Names reachable from the roots without passing through EXCLUDED."""
    env = {"extra": ""}
    seen: set[str] = set()
    todo = [canonicalize_name(Requirement(r).name) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name in EXCLUDED or name not in installed:
            continue
        seen.add(name)
        metadata = installed[name]["metadata"]
        assert isinstance(metadata, dict)
        for line in metadata.get("requires_dist", []):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    return sorted(seen)


def wheel_hashes(name: str, version: str) -> list[str]:
    """sha256 of every Linux/any wheel of name==version on PyPI."""
    request = urllib.request.Request(  # noqa: S310 (a constant https URL)
        f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (https INDEX)
        files = json.load(response)["files"]
    hashes = set()
    for f in files:
        filename = f["filename"]
        if not filename.endswith(".whl") or f.get("yanked"):
            continue
        try:
            _, wheel_version, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:  # old uploads with names today's tools reject
            continue
        if str(wheel_version) != version:
            continue
        if any(
            t.platform == "any"
            or (t.platform.startswith(PLATFORMS) and t.platform.endswith(ARCHES))
            for t in tags
        ):
            hashes.add(f["hashes"]["sha256"])
    if not hashes:
        raise SystemExit(f"lock: no Linux or pure-Python wheel of {name}=={version} on {INDEX}")
    return sorted(hashes)


def render(upgrade: bool) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots: list[str] = project["dependencies"]
    installed = resolve(roots, upgrade)
    lines = [
        "# Runtime dependencies of the action image, pinned with hashes; installed with",
        "# --require-hashes --only-binary=:all: --no-deps. GENERATED by scripts/lock.sh from",
        "# pyproject.toml: do not edit, re-run it. The closure of pyproject.toml's",
        "# dependencies, less aiohttp and its dependencies: kubernetes requires them only",
        "# for kubernetes.aio, which deployer never imports (the image deletes it as well).",
    ]
    for name in closure(roots, installed):
        metadata = installed[name]["metadata"]
        assert isinstance(metadata, dict)
        version = str(metadata["version"])
        hashes = wheel_hashes(name, version)
        lines.append(f"{name}=={version} \\")
        lines.extend(f"    --hash=sha256:{h} \\" for h in hashes[:-1])
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--upgrade", action="store_true", help="ignore the current pins")
    args = parser.parse_args()
    text = render(args.upgrade)
    if args.check:
        if LOCK.read_text() != text:
            print("requirements.lock is out of date: run scripts/lock.sh", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text)
    print(f"wrote {LOCK.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
