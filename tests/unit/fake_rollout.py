"""One ``roll_out`` against the in-memory fake cluster, on its virtual clock (for unit tests).

``FakeRun(cluster, tmp_path, deployments="web")(image)`` runs the real stage
(``deployer.rollout.roll_out``) through ``cluster.transport`` with
``clock=cluster.clock``: no real time passes, whatever the timeouts.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from typing import Any

from deployer.actions import ActionsIO
from deployer.config import load_config
from deployer.rollout import RolloutResult, roll_out
from tests.fakecluster import FakeCluster

REPO = "reg.example/web"


def ref(repo: str, seed: str) -> str:
    """``reg.example/<repo>@sha256:…``: the last path segment decides the pods' fate."""
    return f"reg.example/{repo}@sha256:{hashlib.sha256(seed.encode()).hexdigest()}"


class FakeRun:
    """The inputs of one run (``INPUT_*`` as keyword arguments) against ``cluster``."""

    def __init__(
        self,
        cluster: FakeCluster,
        workspace: Path,
        env: dict[str, str] | None = None,
        **inputs: str,
    ) -> None:
        base = {
            "INPUT_IMAGE": REPO,
            "INPUT_BUILD": "false",
            "INPUT_TIMEOUT": "300s",
            "INPUT_NAMESPACE": "default",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_SHA": "abc1234def5678",
            "GITHUB_REPOSITORY": "acme/web",
            "GITHUB_RUN_ID": "42",
            "GITHUB_RUN_ATTEMPT": "1",
            **(env or {}),
        }
        for key, value in inputs.items():
            base["INPUT_" + key.upper().replace("_", "-")] = value
        self.cluster = cluster
        self.workspace = workspace
        self.config = load_config(base)
        self.out = io.StringIO()
        self.io = ActionsIO(self.out, {})
        self.cancel = threading.Event()

    def manifest(self, name: str, text: str) -> None:
        (self.workspace / name).write_text(text)

    def __call__(self, image: str) -> RolloutResult:
        clock = self.cluster.clock
        transport: Any = self.cluster.transport
        return roll_out(self.config, image, transport, self.io, self.cancel, clock=clock)

    @property
    def log(self) -> str:
        return self.out.getvalue()
