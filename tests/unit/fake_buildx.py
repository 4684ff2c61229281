"""A stand-in for the buildx binary, for unit tests: a real executable, run as buildx would be.

The product runs it through the same subprocess code as the real buildx (argv,
environment, log reading, signals). What it prints, how it exits (a line ``@sleep N`` pauses) and what it
writes to ``--metadata-file`` come from ``<script>.plan.json``; each call's argv
and environment are appended to ``<script>.calls.jsonl``. Without a plan it
prints a short successful build whose log contains a forged ``::add-mask::``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_DIGEST", "DIGEST", "SUCCESS", "install", "read_calls", "write_plan"]

DIGEST = "sha256:" + "ab" * 32
CONFIG_DIGEST = "sha256:" + "cd" * 32
SUCCESS = [
    '#0 building with "default" instance using docker driver',
    "",
    "#1 [internal] load build definition from Dockerfile",
    "#1 DONE 0.0s",
    "",
    "#2 [1/2] FROM scratch",
    "#2 DONE 0.0s",
    "",
    "#3 [2/2] RUN echo ::add-mask::evil",
    "#3 0.101 ::add-mask::evil",
    "#3 DONE 0.1s",
    "",
    "#4 exporting to image",
    "#4 DONE 0.1s",
]

_SCRIPT = r"""#!{python}
import json, os, sys, time
from pathlib import Path

me = Path(__file__)
plan_path = Path(str(me) + ".plan.json")
plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {{}}
calls_path = Path(str(me) + ".calls.jsonl")
argv = sys.argv[1:]
seen = {{"argv": argv, "env": dict(os.environ), "pid": os.getpid(), "secrets": {{}}}}
for arg in argv:  # what buildx would read from the private directory, while it exists
    if arg.startswith("--secret="):
        fields = dict(f.split("=", 1) for f in arg[len("--secret="):].split(","))
        src = Path(fields["src"])
        seen["secrets"][fields["id"]] = [src.read_bytes().decode("latin-1"), oct(src.stat().st_mode & 0o777), oct(src.parent.stat().st_mode & 0o777)]
    if arg.startswith("--ssh="):  # an agent's socket, or key files (their text)
        ssh_id, _, paths = arg[len("--ssh="):].partition("=")
        seen.setdefault("ssh", {{}})[ssh_id] = [
            "socket" if Path(p).is_socket() else [Path(p).read_text(), oct(Path(p).stat().st_mode & 0o777)]
            for p in paths.split(",")
        ]
    if arg.startswith("--file="):
        ignore = Path(arg[len("--file="):] + ".dockerignore")
        seen["dockerignore"] = ignore.read_text() if ignore.is_file() else None
    if arg.startswith("--buildkitd-config="):
        seen["buildkitd"] = Path(arg.split("=", 1)[1]).read_text()
config = Path(os.environ.get("DOCKER_CONFIG", "/nonexistent")) / "config.json"
seen["docker_config"] = config.read_text() if config.is_file() else None
with calls_path.open("a") as fh:
    fh.write(json.dumps(seen) + "\n")
command = argv[0] if argv else ""
if command != "build":
    print(f"#1 [internal] {{command}} done", flush=True)
    sys.exit(plan.get(command + "_code", 0))
earlier = sum(1 for line in calls_path.read_text().splitlines() if json.loads(line)["argv"][:1] == ["build"]) - 1
runs = plan.get("runs") or [{{}}]
run = runs[min(earlier, len(runs) - 1)]
out = sys.stderr.buffer
for line in run.get("lines", {success}):
    if line.startswith("@sleep "):  # a pause between lines, e.g. a build step before the push
        time.sleep(float(line.split()[1]))
        continue
    out.write(line.encode() + b"\n")
    out.flush()
if run.get("raw_bytes"):
    chunk = b"x" * 65536
    for _ in range(run["raw_bytes"] // 65536):
        out.write(chunk)
    out.flush()
if run.get("sleep"):
    time.sleep(run["sleep"])
code = run.get("code", 0)
if code == 0:
    metadata = next((a.split("=", 1)[1] for a in argv if a.startswith("--metadata-file=")), None)
    if metadata:
        data = {{"containerimage.config.digest": "{config}"}}
        if "--push" in argv:
            data["containerimage.digest"] = run.get("digest", "{digest}")
        Path(metadata).write_text(json.dumps(data))
sys.exit(code)
"""


def install(folder: Path) -> Path:
    """Write the fake buildx into ``folder``; return its path (for DEPLOYER_BUILDX)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "buildx"
    path.write_text(
        _SCRIPT.format(
            python=sys.executable, success=repr(SUCCESS), config=CONFIG_DIGEST, digest=DIGEST
        )
    )
    path.chmod(0o755)
    return path


def write_plan(buildx: Path, plan: dict[str, Any]) -> None:
    Path(f"{buildx}.plan.json").write_text(json.dumps(plan))


def read_calls(buildx: Path) -> list[dict[str, Any]]:
    path = Path(f"{buildx}.calls.jsonl")
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
