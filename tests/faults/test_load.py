"""Load: 50 Deployments in one run, and 5 runs at once (real engine, registry, cluster).

Each run is a real ``python -m deployer`` subprocess with ``build: false`` against
an image pushed once by the module fixture. The 50-Deployment run reports its wall
time, the API requests it sent and its peak RSS (printed; see docs/faults.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from tests.conftest import ROOT, need_service
from tests.helpers import read, ref
from tests.integration.test_build_push import go, runner_env, workspace
from tests.unit.test_actions import runner_outputs

pytestmark = pytest.mark.integration
__all__ = ["workspace"]  # fixture used here

# Runs the action in a child process, counting API requests and reporting peak RSS.
CHILD = """
import json, resource, sys
from deployer import cluster
count = 0
def counting(method):
    def counted(self, *args, **kwargs):
        global count
        count += 1
        return method(self, *args, **kwargs)
    return counted
cluster.ApiTransport.send = counting(cluster.ApiTransport.send)
cluster.ApiTransport.open_stream = counting(cluster.ApiTransport.open_stream)
from deployer.__main__ import main
code = main(sys.argv[1:])
print("LOAD " + json.dumps({"requests": count,
      "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def services() -> dict[str, str]:
    return need_service(
        "DOCKER_HOST",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
        "KUBECONFIG",
        "DEPLOYER_BUILDX",
    )


@pytest.fixture(scope="module")
def pushed(services: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image repository with tag v1 in the shared registry (pushed once)."""
    import shutil

    ws = tmp_path_factory.mktemp("load") / "ws"
    ws.mkdir()
    shutil.copy("/bin/busybox", ws / "busybox")
    (ws / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
    env = runner_env(services, ws, tags="v1")
    code, log, _outputs, _ = go(env)
    assert code == 0, log
    return env["INPUT_IMAGE"]


@pytest.fixture
def cluster(services: dict[str, str]) -> Iterator[tuple[k8s.ApiClient, str]]:
    admin = kube_config.new_client_from_config(config_file=services["KUBECONFIG"])
    namespace = f"load-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    yield admin, namespace
    core.delete_namespace(namespace)
    admin.close()


def create_many(admin: k8s.ApiClient, namespace: str, names: list[str], image: str) -> None:
    apps = k8s.AppsV1Api(admin)
    for name in names:
        apps.create_namespaced_deployment(
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": image}]},
                    },
                },
            },
        )
    end = time.monotonic() + 120
    pending = set(names)
    while pending and time.monotonic() < end:
        for d in apps.list_namespaced_deployment(namespace).items:
            s = d.status
            if (
                d.metadata.name in pending
                and (s.available_replicas or 0) == 1
                and (s.observed_generation or 0) >= d.metadata.generation
            ):
                pending.discard(d.metadata.name)
        time.sleep(0.5)
    assert not pending, f"not available: {sorted(pending)[:5]}"


def start(
    services: dict[str, str], tmp: Path, repository: str, namespace: str, deployments: str
) -> tuple[subprocess.Popen[str], Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "output").write_text("")
    (tmp / "summary").write_text("")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "PYTHONPATH": str(ROOT),
        "DOCKER_HOST": services["DOCKER_HOST"],
        "KUBECONFIG": services["KUBECONFIG"],
        "GITHUB_WORKSPACE": str(tmp),
        "GITHUB_OUTPUT": str(tmp / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp / "summary"),
        "INPUT_REGISTRY-USERNAME": services["TEST_REGISTRY_USERNAME"],
        "INPUT_REGISTRY-PASSWORD": services["TEST_REGISTRY_PASSWORD"],
    }
    args = [
        "--image", repository, "--tags", "v1", "--build", "false",
        "--namespace", namespace, "--deployments", deployments, "--timeout", "120s",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        env=env,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, tmp


def finish(
    process: subprocess.Popen[str], tmp: Path
) -> tuple[int, str, dict[str, Any], dict[str, str]]:
    out, err = process.communicate(timeout=180)
    stats = next(
        (json.loads(line[5:]) for line in err.splitlines() if line.startswith("LOAD ")), {}
    )
    assert "Traceback" not in err, err[-3000:]
    return process.returncode, out, stats, runner_outputs((tmp / "output").read_text())


def test_fifty_deployments_in_one_run(
    services: dict[str, str],
    pushed: str,
    cluster: tuple[k8s.ApiClient, str],
    tmp_path: Path,
) -> None:
    admin, namespace = cluster
    names = [f"d{i:02d}" for i in range(50)]
    create_many(admin, namespace, names, ref("web", "v1"))
    started = time.monotonic()
    process, tmp = start(services, tmp_path / "run", pushed, namespace, ",".join(names))
    code, log, stats, outputs = finish(process, tmp)
    took = time.monotonic() - started
    assert code == 0, log[-4000:]
    assert outputs["status"] == "succeeded"
    results = json.loads(outputs["deployments"])
    assert len(results) == 50 and {d["result"] for d in results} == {"succeeded"}
    for name in (names[0], names[-1]):
        live = read(admin, namespace, name)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == outputs["image"]
    print(
        f"50 deployments: {took:.1f} s wall, {stats.get('requests')} API requests "
        f"(watches included), peak RSS {stats.get('max_rss_kib', 0) / 1024:.0f} MiB"
    )
    assert took < 120


def test_five_runs_at_once(
    services: dict[str, str],
    pushed: str,
    cluster: tuple[k8s.ApiClient, str],
    tmp_path: Path,
) -> None:
    admin, namespace = cluster
    names = [f"c{i}" for i in range(5)]
    create_many(admin, namespace, names, ref("web", "v1"))
    started = time.monotonic()
    runs = [start(services, tmp_path / name, pushed, namespace, name) for name in names]
    finished = [finish(process, tmp) for process, tmp in runs]
    took = time.monotonic() - started
    for (code, log, _stats, outputs), name in zip(finished, names, strict=True):
        assert code == 0, f"{name}: {log[-3000:]}"
        assert outputs["status"] == "succeeded"
        [result] = json.loads(outputs["deployments"])
        assert result["name"] == name and result["result"] == "succeeded"
    rss = max(stats.get("max_rss_kib", 0) for _c, _l, stats, _o in finished) / 1024
    print(f"5 concurrent runs: {took:.1f} s wall, largest peak RSS {rss:.0f} MiB")
    assert took < 90
