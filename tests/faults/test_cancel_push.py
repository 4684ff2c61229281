"""SIGTERM (the runner's cancel) while BuildKit's push hangs: cancelled, buildx ended, no digest."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.unit.fake_buildx import SUCCESS
from tests.unit.test_actions import commands
from tests.unit.test_pipeline import FakeEngine, go, runner_env

__all__ = ["runner_env"]  # fixture used here


def test_sigterm_during_a_blocked_push_cancels_quickly(runner_env: dict[str, str]) -> None:
    hanging_push = {"lines": [*SUCCESS, "#5 pushing ghcr.io/acme/web:v1 with docker"], "sleep": 60}
    engine = FakeEngine([hanging_push])
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    code, log, outputs, _summary = go(runner_env, engine)
    took = time.monotonic() - started
    timer.cancel()
    assert code == 1
    assert outputs["status"] == "cancelled"
    assert outputs["digest"] == "" and outputs["image"] == ""
    [build] = engine.buildx_calls()  # not retried after the cancel
    with pytest.raises(ProcessLookupError):
        os.kill(build["pid"], 0)
    assert "inspect_distribution" not in engine.names()
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "Cancelled by SIGTERM" in error
    assert took < 5
    assert "Traceback" not in log
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
