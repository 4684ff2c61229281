"""Shared test plumbing.

Integration tests read the services started by ``make env-up`` from
``.testenv/env`` (shell ``export NAME=value`` lines). When a service is missing
they fail under ``CI=true`` and skip, saying why, on a developer laptop.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".testenv" / "env"


def read_testenv(path: Path = ENV_FILE) -> dict[str, str]:
    """Parse the ``export NAME=value`` lines that ``make env-up`` writes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            values[name] = value
    return values


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need_service(*names: str) -> dict[str, str]:
    """Return the named test-environment settings, or fail (CI) / skip (laptop)."""
    env = read_testenv()
    missing = [n for n in names if not env.get(n)]
    if missing:
        why = (
            f"test environment setting(s) {', '.join(missing)} missing from {ENV_FILE}; "
            "run `make env-up` first"
        )
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    return {n: env[n] for n in names}


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Every test gets back the environment it started with."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
