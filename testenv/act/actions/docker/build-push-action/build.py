"""docker/build-push-action stand-in (see action.yml): docker build, docker push."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    if done.returncode != 0:
        print(f"::error::build-push-action stand-in: {argv[:2]} failed")
        sys.exit(1)
    return done.stdout


def main() -> None:
    env = os.environ
    tags = [t.strip() for t in re.split(r"[\n,]", env["INPUT_TAGS"]) if t.strip()]
    if not tags:
        print("::error::build-push-action stand-in: no tags")
        sys.exit(1)
    argv = ["docker", "build", "-q"]
    for tag in tags:
        argv += ["-t", tag]
    if env.get("INPUT_FILE"):
        argv += ["-f", env["INPUT_FILE"]]
    for line in env.get("INPUT_BUILD_ARGS", "").splitlines():
        if line.strip():
            argv += ["--build-arg", line.strip()]
    image_id = run([*argv, env.get("INPUT_CONTEXT") or "."]).strip().splitlines()[-1]
    digest = ""
    if env.get("INPUT_PUSH", "false").lower() == "true":
        for tag in tags:
            out = run(["docker", "push", tag])
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
            digest = found.group(1) if found else digest
        if not digest:
            print("::error::build-push-action stand-in: the push printed no digest")
            sys.exit(1)
    outputs = {
        "digest": digest,
        "imageid": image_id,
        "metadata": json.dumps({"containerimage.digest": digest, "image.name": ",".join(tags)}),
    }
    with open(env["GITHUB_OUTPUT"], "a") as out:
        for name, value in outputs.items():
            delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            out.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


if __name__ == "__main__":
    main()
