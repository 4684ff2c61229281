"""Roll-out benchmarks against the test control plane (KWOK nodes).

1. Detection latency: from the moment the Deployment's status becomes complete
   (seen by an independent admin watch) to our "succeeded", against
   ``kubectl rollout status`` watching the same rollout; with request counts.
2. 50 mixed workloads (Deployments, StatefulSets, DaemonSets) in one run, in a
   child process (peak RSS, API requests per workload), against one
   ``kubectl set image`` + 50 parallel ``kubectl rollout status``: <= 0.4x.
3. How fast the cluster is put back after a SIGINT and after a failure
   (:mod:`bench.rollback`).
4. A crash-looping image until rolled back, per kind, against the failure
   delay + 10 s.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as kube_config

from bench import rollback
from bench.common import Figure
from deployer.actions import ActionsIO
from deployer.cluster import connect
from deployer.config import load_config
from deployer.rollout import roll_out
from deployer.rollout.kinds import KINDS
from deployer.rollout.status import rollout_status
from tests.conftest import read_testenv

REGISTRY = "127.0.0.1:5000"
# testenv/cluster/stages/pod-crash-loop*.yaml: first crash 1 s + up to 1.5 s jitter, then a
# restart every 3 s; the default policy fails once a container restarted more than 3 times.
KWOK_CRASH_DELAY = 2.5 + 3 * 3.0
REPEAT = 5


def _ref(repo: str, seed: str) -> str:
    return f"{REGISTRY}/{repo}@sha256:{hashlib.sha256(seed.encode()).hexdigest()}"


class _Cluster:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.admin = kube_config.new_client_from_config(config_file=kubeconfig)
        self.apps = k8s.AppsV1Api(self.admin)
        self.namespace = f"bench-{uuid.uuid4().hex[:6]}"
        k8s.CoreV1Api(self.admin).create_namespace({"metadata": {"name": self.namespace}})

    def close(self) -> None:
        k8s.CoreV1Api(self.admin).delete_namespace(self.namespace)

    def create(self, name: str, image: str, replicas: int = 2) -> None:
        self.apps.create_namespaced_deployment(
            self.namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": image}]},
                    },
                },
            },
        )

    def create_kind(self, kind: str, name: str, image: str, replicas: int = 1) -> None:
        if kind == "deployment":
            self.create(name, image, replicas)
            return
        spec: dict[str, Any] = {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        }
        if kind == "statefulset":
            spec.update(replicas=replicas, serviceName=name)
            self.apps.create_namespaced_stateful_set(
                self.namespace, {"metadata": {"name": name}, "spec": spec}
            )
        else:
            self.apps.create_namespaced_daemon_set(
                self.namespace, {"metadata": {"name": name}, "spec": spec}
            )

    def wait_kind(self, kind: str, name: str, timeout: float = 120) -> None:
        read = {
            "deployment": self.apps.read_namespaced_deployment,
            "statefulset": self.apps.read_namespaced_stateful_set,
            "daemonset": self.apps.read_namespaced_daemon_set,
        }[kind]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            obj = self.admin.sanitize_for_serialization(read(name, self.namespace))
            if KINDS[kind].status(obj).state == "complete":
                return
            time.sleep(0.2)
        raise RuntimeError(f"{kind}/{name} did not complete")

    def wait_complete(self, name: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            obj = self.admin.sanitize_for_serialization(
                self.apps.read_namespaced_deployment(name, self.namespace)
            )
            if rollout_status(obj).state == "complete":
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not complete")

    def config(self, deployments: str, timeout: str = "120s") -> Any:
        return load_config(
            {
                "INPUT_IMAGE": f"{REGISTRY}/web",
                "INPUT_BUILD": "false",
                "INPUT_NAMESPACE": self.namespace,
                "INPUT_DEPLOYMENTS": deployments,
                "INPUT_TIMEOUT": timeout,
                "GITHUB_WORKSPACE": tempfile.gettempdir(),
                "KUBECONFIG": self.kubeconfig,
            }
        )


class _CompletionWatch(threading.Thread):
    """Records when a Deployment's status first becomes complete at a new generation."""

    def __init__(self, cluster: _Cluster, name: str, generation: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.name, self.generation = cluster, name, generation
        self.at: float | None = None

    def run(self) -> None:
        watch_client = kube_config.new_client_from_config(config_file=self.cluster.kubeconfig)
        apps = k8s.AppsV1Api(watch_client)
        from kubernetes import watch

        w = watch.Watch()
        for event in w.stream(
            apps.list_namespaced_deployment,
            self.cluster.namespace,
            field_selector=f"metadata.name={self.name}",
            timeout_seconds=60,
        ):
            obj = watch_client.sanitize_for_serialization(event["object"])
            if obj["metadata"]["generation"] >= self.generation and (
                rollout_status(obj).state == "complete"
            ):
                self.at = time.monotonic()
                w.stop()
                break
        watch_client.close()


class _Verdict(io.StringIO):
    """The log, noting when the verdict line (our equivalent of kubectl's) is written."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.at: float | None = None

    def write(self, text: str) -> int:
        if self.at is None and self.marker in text:
            self.at = time.monotonic()
        return super().write(text)


def _counting(api: Any, on_patch: Callable[[], None] | None = None) -> list[str]:
    calls: list[str] = []
    original = api.call_api

    def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"{method} {url}")
        answer = original(method, url, *args, **kwargs)
        if method == "PATCH" and on_patch is not None and "dryRun" not in url:
            on_patch()
        return answer

    api.call_api = call_api
    return calls


def _latency(cluster: _Cluster, round_: int) -> tuple[float, float, int, int]:
    name = "latency"
    current = cluster.apps.read_namespaced_deployment(name, cluster.namespace)
    watcher = _CompletionWatch(cluster, name, current.metadata.generation + 1)
    watcher.start()
    kubectl_done: list[float] = []
    kubectl_log: list[str] = []

    def start_kubectl() -> None:
        proc = subprocess.Popen(
            [
                "kubectl",
                "--kubeconfig",
                cluster.kubeconfig,
                "-n",
                cluster.namespace,
                "rollout",
                "status",
                f"deployment/{name}",
                "--timeout=60s",
                "-v=6",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def read_out() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "successfully rolled out" in line:
                    kubectl_done.append(time.monotonic())

        def read_err() -> None:
            assert proc.stderr is not None
            kubectl_log.extend(proc.stderr)

        threading.Thread(target=read_out, daemon=True).start()
        reader = threading.Thread(target=read_err, daemon=True)
        reader.start()
        threads.append((proc, reader))

    threads: list[tuple[subprocess.Popen[str], threading.Thread]] = []
    config = cluster.config(name)
    api, _ = connect(config)
    calls = _counting(api, on_patch=start_kubectl)
    log = _Verdict(f"{name}: rolled out")
    result = roll_out(
        config, _ref("web", f"latency-{round_}"), api, ActionsIO(log), threading.Event()
    )
    ours_done = log.at if log.at is not None else time.monotonic()
    api.close()
    for proc, reader in threads:
        proc.wait(60)
        reader.join(5)
    watcher.join(60)
    if result.status != "succeeded" or watcher.at is None or not kubectl_done:
        raise RuntimeError(f"latency round failed: {result.status}")
    requests = sum(
        1 for line in kubectl_log if re.search(r'verb="|\b(GET|PATCH|POST) https://', line)
    )
    return ours_done - watcher.at, kubectl_done[0] - watcher.at, len(calls), requests


def _timed_rollout(
    cluster: _Cluster, names: list[str], image: str, timeout: str = "120s"
) -> tuple[float, str]:
    config = cluster.config(",".join(names), timeout)
    api, _ = connect(config)
    started = time.monotonic()
    result = roll_out(config, image, api, ActionsIO(io.StringIO()), threading.Event())
    took = time.monotonic() - started
    api.close()
    return took, result.status


# One roll_out in a child process, so its peak RSS and request count are its own.
CHILD = """
import json, resource, sys, threading, time
from deployer import cluster
count = 0
send = cluster.Kube.request_path
def counted(self, *args, **kwargs):
    global count
    count += 1
    return send(self, *args, **kwargs)
cluster.Kube.request_path = counted
import io, os
from deployer.actions import ActionsIO
from deployer.config import load_config
from deployer.rollout import roll_out
config = load_config(dict(os.environ))
api, _ = cluster.connect(config)
started = time.monotonic()
result = roll_out(config, sys.argv[1], api, ActionsIO(io.StringIO()), threading.Event())
print(json.dumps({"status": result.status, "seconds": time.monotonic() - started,
      "requests": count, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      "results": [d.result for d in result.deployments]}))
"""


def _child_rollout(cluster: _Cluster, workloads: list[str], image: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "INPUT_IMAGE": f"{REGISTRY}/web",
        "INPUT_BUILD": "false",
        "INPUT_NAMESPACE": cluster.namespace,
        "INPUT_WORKLOADS": ",".join(workloads),
        "INPUT_TIMEOUT": "180s",
        "GITHUB_WORKSPACE": tempfile.gettempdir(),
        "KUBECONFIG": cluster.kubeconfig,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, image],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    took = time.monotonic() - started  # interpreter start and imports included, as kubectl's
    if done.returncode != 0:
        raise RuntimeError(f"rollout child failed: {done.stderr[-2000:]}")
    stats: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    stats["wall"] = took
    return stats


def _kubectl_many(cluster: _Cluster, workloads: list[str], image: str) -> float:
    """The peer: one ``kubectl set image`` for all, then a ``rollout status`` each, in parallel."""
    base = ["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", cluster.namespace]
    started = time.monotonic()
    subprocess.run(
        [*base, "set", "image", *workloads, f"app={image}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    waits = [
        subprocess.Popen(
            [*base, "rollout", "status", w, "--timeout=180s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for w in workloads
    ]
    if any(p.wait(200) != 0 for p in waits):
        raise RuntimeError("kubectl rollout status failed")
    return time.monotonic() - started


def _mixed(cluster: _Cluster) -> list[str]:
    """30 Deployments, 10 StatefulSets, 10 DaemonSets (the two KWOK nodes: 2 pods each)."""
    workloads = [f"deployment/dep-{i}" for i in range(30)]
    workloads += [f"statefulset/sts-{i}" for i in range(10)]
    workloads += [f"daemonset/ds-{i}" for i in range(10)]
    for w in workloads:
        kind, name = w.split("/")
        cluster.create_kind(kind, name, _ref("web", "start"), replicas=1)
    for w in workloads:
        cluster.wait_kind(*w.split("/"))
    return workloads


def _failing(cluster: _Cluster, kind: str) -> tuple[float, str]:
    name = f"failing-{kind}"
    cluster.create_kind(kind, name, _ref("web", "start"), replicas=2)
    cluster.wait_kind(kind, name)
    config = load_config(
        {
            "INPUT_IMAGE": f"{REGISTRY}/web",
            "INPUT_BUILD": "false",
            "INPUT_NAMESPACE": cluster.namespace,
            "INPUT_WORKLOADS": f"{kind}/{name}",
            "INPUT_TIMEOUT": "90s",
            "GITHUB_WORKSPACE": tempfile.gettempdir(),
            "KUBECONFIG": cluster.kubeconfig,
        }
    )
    api, _ = connect(config)
    started = time.monotonic()
    result = roll_out(
        config, _ref("crash-loop-web", kind), api, ActionsIO(io.StringIO()), threading.Event()
    )
    took = time.monotonic() - started
    api.close()
    return took, result.status


def run() -> list[Figure]:
    """The roll-out figures (needs the test control plane)."""
    env = read_testenv()
    kubeconfig = env.get("KUBECONFIG")
    if not kubeconfig:
        raise RuntimeError("KUBECONFIG missing from .testenv/env; run `make env-up`")
    cluster = _Cluster(kubeconfig)
    try:
        figures = []
        cluster.create("latency", _ref("web", "start"))
        cluster.wait_complete("latency")
        rounds = [_latency(cluster, i) for i in range(REPEAT)]
        ours = statistics.median(r[0] for r in rounds)
        peer = statistics.median(r[1] for r in rounds)
        figures.append(
            Figure(
                "rollout: detection latency after status complete",
                ours,
                peer,
                1.0,
                "s",
                f"requests per rollout: ours {rounds[0][2]} (incl. checks), "
                f"kubectl rollout status {rounds[0][3]}",
                tolerance=0.005,
            )
        )

        workloads = _mixed(cluster)
        runs = [_child_rollout(cluster, workloads, _ref("web", f"mixed-{i}")) for i in range(3)]
        if any(r["status"] != "succeeded" for r in runs):
            raise RuntimeError(f"mixed rollout: {[r['status'] for r in runs]}")
        ours = statistics.median(r["wall"] for r in runs)
        peer = statistics.median(
            _kubectl_many(cluster, workloads, _ref("web", f"kubectl-{i}")) for i in range(3)
        )
        rss = max(r["max_rss_kib"] for r in runs) / 1024
        per = statistics.median(r["requests"] for r in runs) / len(workloads)
        figures.append(
            Figure(
                "rollout: 50 mixed workloads in one run vs kubectl",
                ours,
                peer,
                0.4,
                "s",
                "30 Deployments, 10 StatefulSets, 10 DaemonSets; peer: one kubectl set image "
                f"+ 50 parallel kubectl rollout status; ours: peak RSS {rss:.0f} MiB, "
                f"{per:.1f} API requests per workload (watches, checks, access reviews)",
            )
        )

        figures += rollback.figures(cluster, kubeconfig, _ref)

        for kind in ("deployment", "statefulset", "daemonset"):
            took, status = _failing(cluster, kind)
            figures.append(
                Figure(
                    f"rollout: crash-looping {kind} to rolled back",
                    took,
                    None,
                    KWOK_CRASH_DELAY + 10,
                    "s",
                    f"status {status}; failure delay {KWOK_CRASH_DELAY} s: KWOK's first crash "
                    "after <= 2.5 s, then a restart every 3 s, and we fail at the 4th restart",
                )
            )
        return figures
    finally:
        cluster.close()
