"""SIGTERM (the runner's cancel) while the push blocks: cancelled, no digest claimed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tests.unit.test_actions import commands
from tests.unit.test_pipeline import FakeEngine, go, runner_env

__all__ = ["runner_env"]  # fixture used here


class BlockingPush(FakeEngine):
    """The engine accepted the push and then says nothing (a registry that hangs)."""

    def push(self, repository: str, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        self.calls.append(("push", (repository, kwargs)))
        yield {"status": "The push refers to repository [x]"}
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        threading.Event().wait(30)  # interrupted by the signal handler's exception
        yield {"aux": {"Tag": kwargs["tag"], "Digest": "sha256:" + "ab" * 32, "Size": 1}}


def test_sigterm_during_a_blocked_push_cancels_quickly(runner_env: dict[str, str]) -> None:
    engine = BlockingPush()
    started = time.monotonic()
    code, log, outputs, _summary = go(runner_env, engine)
    took = time.monotonic() - started
    assert code == 1
    assert outputs["status"] == "cancelled"
    assert outputs["digest"] == "" and outputs["image"] == ""
    assert engine.names().count("push") == 1  # not retried after the cancel
    assert "inspect_distribution" not in engine.names()
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "Cancelled by SIGTERM" in error
    assert took < 5
    assert "Traceback" not in log
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
