"""The test environment itself: the engine answers and the registry demands auth.

These fail fast and plainly when ``make env-up`` did not do its job, before the
product's build/push/rollout integration tests produce less obvious errors.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest

from tests.conftest import need_service

pytestmark = pytest.mark.integration


def _v2_status(registry: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(f"http://{registry}/v2/")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def test_docker_engine_answers() -> None:
    import docker

    env = need_service("DOCKER_HOST")
    client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=30)
    try:
        version = client.version()
        assert version.get("ApiVersion"), version
        assert client.ping() is True
    finally:
        client.close()


def test_registry_refuses_anonymous_access() -> None:
    env = need_service("TEST_REGISTRY")
    assert _v2_status(env["TEST_REGISTRY"]) == 401


def test_registry_refuses_a_wrong_password() -> None:
    env = need_service("TEST_REGISTRY", "TEST_REGISTRY_USERNAME")
    wrong = (env["TEST_REGISTRY_USERNAME"], "not-the-password")
    assert _v2_status(env["TEST_REGISTRY"], wrong) == 401


def test_registry_accepts_the_test_credentials() -> None:
    env = need_service("TEST_REGISTRY", "TEST_REGISTRY_USERNAME", "TEST_REGISTRY_PASSWORD")
    auth = (env["TEST_REGISTRY_USERNAME"], env["TEST_REGISTRY_PASSWORD"])
    assert _v2_status(env["TEST_REGISTRY"], auth) == 200
