"""A registry's failures, told apart and retried within a budget.

Shared by the build (BuildKit pushes while it builds) and the push stage (reading
the digest back): an authentication error is never retried, a transient one
(5xx, a reset connection, a timeout) is, at most :data:`ATTEMPTS` times within
:data:`RETRY_BUDGET_SECONDS`, and anything else is a :class:`PushError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import PushError, RegistryAuthError

__all__ = ["ATTEMPTS", "RETRY_BUDGET_SECONDS", "Transient", "classify", "with_retries"]

ATTEMPTS = 4
BACKOFF_SECONDS = (1.0, 2.0, 4.0)
# No new attempt once this much time went by: an engine call that failed slowly has
# already retried on its own (the engine retries each layer upload for about 50 s),
# and four of those would keep a dead registry's run busy for four minutes.
RETRY_BUDGET_SECONDS = 30.0
backoff_sleep: Callable[[float], None] = time.sleep  # the wait between attempts (tests replace it)
_AUTH_HINTS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
    "403 forbidden",
)
_TRANSIENT_HINTS = (
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway",
    "connection reset",
    "connection refused",
    "broken pipe",
    "eof",
    "timeout",
    "i/o timeout",
    "tls handshake",
    "received unexpected http status: 5",
    "unexpected status: 5",
    "unexpected status from",
    "too many requests",
    "no route to host",
)


class Transient(Exception):
    """A failure worth another attempt; ``seconds`` is what the failing attempt cost."""

    def __init__(self, message: str, seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


def classify(config: Config, message: str, action: str) -> Exception:
    """A registry failure → RegistryAuthError, Transient (retry) or PushError."""
    lowered = message.lower()
    if any(hint in lowered for hint in _AUTH_HINTS):
        who = (
            f"user '{config.registry_username}'" if config.registry_username else "anonymous access"
        )
        return RegistryAuthError(
            f"Registry {config.registry} refused {who} while {action}: {message.strip()}. "
            "Check registry-username and registry-password (a `docker login` in an earlier "
            "step is not visible inside this action)"
        )
    if any(hint in lowered for hint in _TRANSIENT_HINTS):
        return Transient(message.strip())
    return PushError(
        f"{action.capitalize()} failed at registry {config.registry}: {message.strip()}"
    )


def with_retries(
    config: Config,
    io: ActionsIO,
    action: str,
    attempt: Callable[[], str],
    sleep: Callable[[float], None] | None,
) -> str:
    """``attempt()`` until it does not raise Transient: at most ATTEMPTS, within the budget.

    The budget counts the failed attempts' cost (``Transient.seconds`` when the
    attempt knows it, e.g. only the push part of a build, else wall time) and the
    waits between them.
    """
    sleep = sleep or backoff_sleep
    spent = 0.0
    for number in range(1, ATTEMPTS + 1):
        began = time.monotonic()
        try:
            return attempt()
        except Transient as e:
            spent += e.seconds if e.seconds is not None else time.monotonic() - began
            delay = BACKOFF_SECONDS[min(number, len(BACKOFF_SECONDS)) - 1]
            if number == ATTEMPTS or spent + delay > RETRY_BUDGET_SECONDS:
                tries = f"{number} attempt{'s' if number > 1 else ''}"
                raise PushError(
                    f"{action.capitalize()} failed at registry {config.registry} after "
                    f"{tries} ({spent:.0f} s): {e}"
                ) from None
            io.warning(
                f"{action.capitalize()}: {e}; trying again in {delay:.0f} s ({number}/{ATTEMPTS})"
            )
            sleep(delay)
            spent += delay
    raise AssertionError("unreachable")  # pragma: no cover
