"""Shared test plumbing.

Integration tests read the services started by ``make env-up`` from
``.testenv/env`` (shell ``export NAME=value`` lines). When a service is missing
they fail under ``CI=true`` and skip, saying why, on a developer laptop.

**Engines.** A test that takes the ``engine`` fixture (directly, or through a
fixture such as ``services``) runs against Docker Engine 29 with the containerd
image store, what users' runners have (id ``docker29``). ``@pytest.mark.engines``
names the engines instead: ``"docker20"`` is Debian's Docker 20.10 with the
classic image store, the oldest engine the README promises, and the only one
here on which the action makes docker-container builders (as on Docker 28
runners)::

    @pytest.mark.engines("docker29", "docker20")
    def test_build_push(engine: Engine) -> None: ...   # [docker29] and [docker20]
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".testenv" / "env"

# Engine id -> the .testenv/env setting holding its DOCKER_HOST.
ENGINES = {
    "docker29": "TEST_DOCKER29_HOST",  # Docker 29, containerd image store (docker29-up.sh)
    "docker20": "DOCKER_HOST",  # Debian's Docker 20.10, classic image store (docker-up.sh)
}
DEFAULT_ENGINES = ("docker29",)  # what users have; @pytest.mark.engines(...) says otherwise


@dataclass(frozen=True)
class Engine:
    """One Docker engine of the test environment."""

    name: str  # a key of ENGINES
    host: str  # its DOCKER_HOST, unix://...
    containerd_store: bool  # images in containerd: its own BuildKit does what builders did


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that needs an engine gets one run per engine it is meant for."""
    if "engine" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("engines")
    names = list(marker.args if marker else DEFAULT_ENGINES)
    unknown = set(names) - set(ENGINES)
    if unknown:
        raise pytest.UsageError(f"unknown engine(s) {sorted(unknown)}; known: {sorted(ENGINES)}")
    metafunc.parametrize("engine", names, indirect=True, ids=names, scope="session")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Engine:
    """The engine this run of the test is for, as it describes itself (see the docstring)."""
    import docker

    setting = ENGINES[request.param]
    host = need_service(setting)[setting]
    client = docker.APIClient(base_url=host, version="auto", timeout=30)
    try:
        status = client.info().get("DriverStatus") or []
    finally:
        client.close()
    containerd = ["driver-type", "io.containerd.snapshotter.v1"] in status
    return Engine(request.param, host, containerd)


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Every test gets back the environment it started with."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


# -- the whole suite must not leak the test environment's secrets ------------------------
#
# Every test's captured stdout/stderr, and every GITHUB_OUTPUT and
# step summary file the suite wrote, are searched for the registry password and the
# credentials in the test kubeconfigs, in every encoding tests/unit/test_secrets.py
# knows. Only ``::add-mask::`` lines may hold them.

_OUTPUT_FILE = re.compile(r"^(output|summary|set_output_.*|step_summary_.*)$")
_found_leaks: list[str] = []


def _suite_secrets() -> dict[str, str]:
    from deployer.kubeconfig import credentials_in
    from tests.unit.test_secrets import MARKUP_PASSWORD

    env = read_testenv()
    # The unit tests' password full of markup characters: found escaped, too (issue 11.6).
    found: dict[str, str] = {"unit password with markup": MARKUP_PASSWORD}
    if env.get("TEST_REGISTRY_PASSWORD"):
        found["registry password"] = env["TEST_REGISTRY_PASSWORD"]
    # The cloud stand-ins' credentials (testenv/cloud/standin.py, tests/integration/cloud.py).
    for name in (
        "TEST_AWS_SECRET_ACCESS_KEY",
        "TEST_AZURE_CLIENT_SECRET",
        "TEST_OIDC_REQUEST_TOKEN",
        "TEST_ECR_REGISTRY_PASSWORD",
    ):
        if env.get(name):
            found[name] = env[name]
    gcp_key = Path(env.get("TEST_GCP_CREDENTIALS_FILE") or "/nonexistent")
    if gcp_key.is_file():
        private_key = str(json.loads(gcp_key.read_text()).get("private_key", ""))
        lines = [ln for ln in private_key.splitlines() if ln and not ln.startswith("-----")]
        if lines:
            found["Google service-account private key"] = "\n".join(lines)
    for name in ("KUBECONFIG", "TEST_KUBECONFIG_RESTRICTED"):
        path = Path(env.get(name) or "/nonexistent")
        if path.is_file():
            for number, secret in enumerate(credentials_in(path.read_text())):
                # PEM armour lines are the same in every key; the key body is the secret.
                lines = [ln for ln in secret.splitlines() if not ln.startswith("-----")]
                found[f"{name} credential {number}"] = "\n".join(lines)
    return found


def _leaks_in(where: str, text: str) -> list[str]:
    from tests.unit.test_secrets import leaks

    secrets = _suite_secrets_cached()
    if not text:
        return []
    # A failing assertion prints captured logs behind "E   ": the add-mask lines stay exempt.
    text = "\n".join(re.sub(r"^E\s+", "", line) for line in text.splitlines())
    return leaks({where: text}, secrets)


_SECRETS_CACHE: dict[str, str] | None = None


def _suite_secrets_cached() -> dict[str, str]:
    global _SECRETS_CACHE
    if _SECRETS_CACHE is None:
        _SECRETS_CACHE = _suite_secrets()
    return _SECRETS_CACHE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "teardown":  # its captured sections hold every phase's output
        return
    # A failing test's own report may show its inputs (the password among them); the
    # product's exception texts reach stdout, and tests/unit/test_secrets.py checks them.
    texts = {f"{item.nodeid} stdout": report.capstdout, f"{item.nodeid} stderr": report.capstderr}
    found = [hit for where, text in texts.items() for hit in _leaks_in(where, text)]
    if found:
        _found_leaks.extend(found)
        report.outcome = "failed"
        report.longrepr = "secrets leaked:\n" + "\n".join(found)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    for path in Path(base).rglob("*"):
        if path.is_file() and _OUTPUT_FILE.match(path.name) and path.stat().st_size < 10_000_000:
            _found_leaks.extend(_leaks_in(str(path), path.read_text(errors="replace")))
    if _found_leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("secrets leaked into outputs or summaries:", red=True)
            for hit in sorted(set(_found_leaks)):
                reporter.write_line(f"  {hit}", red=True)
