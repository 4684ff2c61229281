"""Both sides of a build benchmark: our product, and the peer, buildx itself.

The peer is what a build-push-action user runs on a hosted runner: the same
buildx binary (DEPLOYER_BUILDX from the test environment) with the same flags;
when a docker-container builder is needed, created with the same BuildKit
image (DEPLOYER_BUILDKIT_IMAGE) and removed afterwards, as
docker/setup-buildx-action does. Credentials go to a private docker config,
never to argv.
"""

from __future__ import annotations

import base64
import compileall
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600


class Buildx:
    """The peer: buildx with its own docker config and a loopback-registry buildkitd config."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.buildx = env["DEPLOYER_BUILDX"]
        self.image = env["DEPLOYER_BUILDKIT_IMAGE"]
        self.registry = env["TEST_REGISTRY"]
        self.config = directory / "peer-docker-config"
        self.config.mkdir(mode=0o700)
        pair = f"{env['TEST_REGISTRY_USERNAME']}:{env['TEST_REGISTRY_PASSWORD']}"
        auths = {self.registry: {"auth": base64.b64encode(pair.encode()).decode()}}
        (self.config / "config.json").write_text(json.dumps({"auths": auths}))
        self.buildkitd = directory / "peer-buildkitd.toml"
        self.buildkitd.write_text(f'[registry."{self.registry}"]\n  http = true\n')
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(directory),
            "DOCKER_HOST": env["DOCKER_HOST"],
            "DOCKER_CONFIG": str(self.config),
            # The same image as ours: no provenance attestation unless asked for
            # (buildx adds one by default wherever the builder can store it).
            "BUILDX_NO_DEFAULT_ATTESTATIONS": "1",
        }

    def run(self, *args: str) -> None:
        subprocess.run(
            [self.buildx, *args],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
        )

    @contextmanager
    def builder(self) -> Iterator[str]:
        """A docker-container builder for one build, removed afterwards."""
        name = f"bench-peer-{uuid.uuid4().hex[:8]}"
        self.run(
            "create",
            "--name",
            name,
            "--driver",
            "docker-container",
            "--driver-opt",
            f"image={self.image},network=host",
            "--buildkitd-config",
            str(self.buildkitd),
        )
        try:
            yield name
        finally:
            self.run("rm", "--force", name)

    def build(self, context: Path, tag: str, *flags: str, builder: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            self.run(
                "build",
                *(["--builder", builder] if builder else []),
                "--progress",
                "plain",
                "--push",
                "-t",
                tag,
                "--metadata-file",
                str(Path(tmp) / "metadata.json"),
                *flags,
                str(context),
            )


class Ours:
    """The product, as `python -m deployer --flag value ...` (secrets in the environment)."""

    def __init__(self, env: dict[str, str], workspace: Path) -> None:
        self.workspace = workspace
        event = workspace.parent / "event.json"  # outside the build context
        event.write_text('{"head_commit": {"timestamp": "2026-11-27T00:00:00Z"}}')
        self.env = dict(os.environ)
        self.env.update(
            {
                "DOCKER_HOST": env["DOCKER_HOST"],
                "DEPLOYER_BUILDX": env["DEPLOYER_BUILDX"],
                "DEPLOYER_BUILDKIT_IMAGE": env["DEPLOYER_BUILDKIT_IMAGE"],
                "GITHUB_WORKSPACE": str(workspace),
                # A re-run of one commit: the image's created label is the commit's time.
                "GITHUB_EVENT_PATH": str(event),
                "INPUT_REGISTRY-USERNAME": env["TEST_REGISTRY_USERNAME"],
                "INPUT_REGISTRY-PASSWORD": env["TEST_REGISTRY_PASSWORD"],
            }
        )
        self.env.pop("KUBECONFIG", None)  # build and push only: nothing to roll out
        # From bytecode, as in the action's image (which compiles deployer at build time):
        # these machines set PYTHONDONTWRITEBYTECODE, so each run would compile the sources.
        compileall.compile_dir(ROOT / "deployer", quiet=1)
        # This checkout's deployer, whatever the interpreter has installed (editable elsewhere).
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )

    def argv(self, image: str, **inputs: str) -> list[str]:
        flags = [f"--{name}={value}" for name, value in inputs.items()]
        return [sys.executable, "-m", "deployer", f"--image={image}", "--push=true", *flags]

    def run(self, image: str, **inputs: str) -> None:
        subprocess.run(
            self.argv(image, **inputs),
            env=self.env,
            cwd=self.workspace,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=TIMEOUT,
        )

    def peak_rss_mb(self, image: str, **inputs: str) -> tuple[float, float]:
        """Peak RSS of our Python process alone, and of its largest child (buildx)."""
        probe = (
            "import resource, runpy, sys\n"
            "code = 0\n"
            "try:\n"
            "    runpy.run_module('deployer', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n"
            "    code = e.code\n"
            "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print('RSS', own, child, file=sys.stderr)\n"
            "sys.exit(code)\n"
        )
        argv = self.argv(image, **inputs)
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv[3:]],
            env=self.env,
            cwd=self.workspace,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
        )
        line = [x for x in done.stderr.splitlines() if x.startswith("RSS ")][-1]
        own, child = (int(x) / 1024 for x in line.split()[1:])
        return own, child


def docker(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["docker", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_HOST": env["DOCKER_HOST"]},
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    ).stdout


def wipe(env: dict[str, str], repository: str) -> None:
    """A fresh runner: no engine build cache, none of the bench's images, no builder.

    The BuildKit image stays: a hosted runner pulls moby/buildkit for either tool.
    """
    docker(env, "builder", "prune", "-af")
    images = docker(env, "images", "-q", "--filter", f"reference={repository}*").split()
    if images:
        docker(env, "image", "rm", "-f", *sorted(set(images)))
