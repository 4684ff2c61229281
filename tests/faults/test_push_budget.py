"""The push retry budget: an engine call that failed slowly is not repeated four times."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from deployer import push
from tests.unit.test_actions import commands
from tests.unit.test_pipeline import FakeEngine, go, runner_env

__all__ = ["runner_env"]  # fixture used here

FAILURE = {"errorDetail": {"message": "received unexpected HTTP status: 500 Internal Server Error"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("each", "attempts"), [(40.0, 1), (20.0, 2), (12.0, 3), (0.5, 4)])
def test_slow_failures_are_not_retried_past_the_budget(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, each: float, attempts: int
) -> None:
    clock = Clock()
    monkeypatch.setattr(push.time, "monotonic", clock)
    monkeypatch.setattr("time.sleep", lambda s: setattr(clock, "now", clock.now + s))

    class SlowFailing(FakeEngine):
        def push(self, repository: str, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
            self.calls.append(("push", (repository, kwargs)))
            clock.now += each  # the engine retried inside this call
            yield FAILURE

    engine = SlowFailing()
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1 and outputs["status"] == "failed"
    assert engine.names().count("push") == attempts
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert f"after {attempts} attempt" in error
    assert "500 Internal Server Error" in error
