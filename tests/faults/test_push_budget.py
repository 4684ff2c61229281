"""The push retry budget: a push that failed slowly is not repeated four times, and the
build's own time (before the push began) does not use up the budget."""

from __future__ import annotations

import io

import pytest

from deployer import registry
from deployer.actions import ActionsIO
from deployer.config import load_config
from deployer.errors import PushError
from tests.unit.fake_buildx import SUCCESS
from tests.unit.test_actions import commands
from tests.unit.test_pipeline import FakeEngine, go, runner_env

__all__ = ["runner_env"]  # fixture used here

MESSAGE = "received unexpected HTTP status: 500 Internal Server Error"


@pytest.mark.parametrize(("each", "attempts"), [(40.0, 1), (20.0, 2), (12.0, 3), (0.5, 4)])
def test_slow_failures_are_not_retried_past_the_budget(
    runner_env: dict[str, str], each: float, attempts: int
) -> None:
    config = load_config(runner_env)
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        raise registry.Transient(MESSAGE, seconds=each)  # the push itself retried for `each` s

    with pytest.raises(PushError) as caught:
        registry.with_retries(
            config, ActionsIO(io.StringIO()), "pushing x", attempt, lambda _s: None
        )
    assert len(calls) == attempts
    assert f"after {attempts} attempt" in caught.value.message
    assert "500 Internal Server Error" in caught.value.message


def test_the_build_before_the_push_does_not_count_against_the_budget(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "RETRY_BUDGET_SECONDS", 2.5)
    monkeypatch.setattr(registry, "backoff_sleep", lambda _s: None)
    slow_build_fast_push_failure = {
        "lines": [
            *SUCCESS[:8],
            "#3 [2/2] RUN make",
            "@sleep 3",  # longer than the whole budget
            "#3 DONE 3.0s",
            "#4 pushing ghcr.io/acme/web:v1 with docker",
            f"#4 ERROR: {MESSAGE}",
            f"ERROR: failed to build: {MESSAGE}",
        ],
        "code": 1,
    }
    engine = FakeEngine([slow_build_fast_push_failure])
    code, log, outputs, _ = go(runner_env, engine)
    assert code == 1 and outputs["status"] == "failed"
    # waits of 1 s and 2 s fit a 2.5 s budget once: two attempts, not one
    assert len(engine.builds()) == 2
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "after 2 attempts" in error
