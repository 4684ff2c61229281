"""webfactory/ssh-agent stand-in (see action.yml): a minimal agent on a unix socket."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12
FAILURE = 5


def serve(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(8)
    while True:
        conn, _ = server.accept()
        with conn:
            header = conn.recv(5)
            if len(header) < 5:
                continue
            length, kind = struct.unpack(">IB", header)
            conn.recv(max(0, length - 1))
            if kind == REQUEST_IDENTITIES:
                conn.sendall(struct.pack(">IBI", 5, IDENTITIES_ANSWER, 0))
            else:
                conn.sendall(struct.pack(">IB", 1, FAILURE))


def start() -> None:
    key = os.environ.get("INPUT_SSH_PRIVATE_KEY", "")
    for line in key.splitlines():
        if line.strip() and not line.startswith("-----"):
            print(f"::add-mask::{line.strip()}")
    path = os.environ.get("INPUT_SSH_AUTH_SOCK") or os.path.join(
        os.environ.get("RUNNER_TEMP", "/tmp"), "ssh-agent.sock"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    subprocess.Popen(  # this file, detached so that it outlives the step
        [sys.executable, __file__, "serve", path],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(path).is_socket():
        if time.monotonic() > deadline:
            print("::error::ssh-agent stand-in: the agent did not start")
            sys.exit(1)
        time.sleep(0.05)
    with open(os.environ["GITHUB_ENV"], "a") as env:
        env.write(f"SSH_AUTH_SOCK={path}\n")
    print(f"ssh-agent stand-in listening on {path}")


if __name__ == "__main__":
    serve(sys.argv[2]) if sys.argv[1:2] == ["serve"] else start()
