"""Fixtures for the test control plane (scripts/testenv/cluster-up.sh, docs/cluster.md).

Only cluster things live here; the settings come from ``.testenv/env`` through
``need_service`` (fails under CI=true, skips on a laptop when missing). The
``engine`` fixture is in tests/conftest.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from tests.conftest import need_service

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of the admin kubeconfig (client certificate, system:masters)."""
    return need_service("KUBECONFIG")["KUBECONFIG"]


@pytest.fixture(scope="session")
def restricted_kubeconfig() -> str:
    """Path of the kubeconfig of ServiceAccount deployer (testenv/cluster/rbac.yaml)."""
    return need_service("TEST_KUBECONFIG_RESTRICTED")["TEST_KUBECONFIG_RESTRICTED"]


@pytest.fixture(scope="session")
def kube_admin(kubeconfig: str) -> Iterator[k8s.ApiClient]:
    """An ApiClient with the admin kubeconfig."""
    api = kube_config.new_client_from_config(config_file=kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def test_namespace() -> str:
    """The namespace the restricted account may deploy to (deployer-test)."""
    return need_service("TEST_NAMESPACE")["TEST_NAMESPACE"]


@pytest.fixture
def fresh_namespace(kube_admin: k8s.ApiClient) -> Iterator[str]:
    """A new namespace ``t-<random>`` for one test, deleted afterwards.

    Returned once its ``default`` ServiceAccount exists, so pods can be created
    at once (the ServiceAccount admission plugin refuses them before that).
    """
    core = k8s.CoreV1Api(kube_admin)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"deployer-test": "true"}}})

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    try:
        wait_until(has_default_sa, 30, f"ServiceAccount {name}/default")
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise
