"""The cluster misbehaving: unreachable, refusing, restarting, edited or emptied under us.

Real control plane (kube-apiserver + KWOK). The apiserver "restart" is simulated
with a :class:`FaultProxy` in front of the real, shared apiserver: the kubeconfig
points at the proxy (127.0.0.1:<port>, which the serving certificate's SAN
127.0.0.1 still matches); cutting the proxy refuses connections and resets open
watches exactly as a stopped apiserver would, and restoring it is the restart.
The shared apiserver itself is never stopped.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client as k8s

from deployer.rollout import RolloutResult
from tests.faults.proxy import FaultProxy
from tests.helpers import (
    Run,
    admin,
    create_deployment,
    namespace,
    read,
    ref,
    settings,
    wait_complete,
)
from tests.unit.test_actions import commands, runner_outputs
from tests.unit.test_pipeline import FakeEngine

pytestmark = pytest.mark.integration
__all__ = ["admin", "namespace", "settings"]  # fixtures used here

ACTION_OUTPUTS = set(
    yaml.safe_load((Path(__file__).resolve().parents[2] / "action.yml").read_text())["outputs"]
)


def admin_kubeconfig(settings: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(Path(settings["KUBECONFIG"]).read_text())
    return data


def server_of(config: dict[str, Any]) -> tuple[str, int]:
    url = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert url.hostname in ("127.0.0.1", "localhost")
    return "127.0.0.1", int(url.port or 443)


def token_kubeconfig(config: dict[str, Any], server: str, token: str) -> str:
    """The admin kubeconfig's cluster (server, CA) with a bearer token instead of the cert."""
    cluster = dict(config["clusters"][0]["cluster"])
    cluster["server"] = server
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


def pipeline_env(tmp_path: Path, kubeconfig: str, namespace: str) -> dict[str, str]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (tmp_path / "output").write_text("")
    (tmp_path / "summary").write_text("")
    return {
        "GITHUB_WORKSPACE": str(ws),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "INPUT_IMAGE": "127.0.0.1:5000/web",
        "INPUT_TAGS": "v1",
        "INPUT_BUILD": "false",
        "INPUT_KUBECONFIG": kubeconfig,
        "INPUT_NAMESPACE": namespace,
        "INPUT_DEPLOYMENTS": "web",
        "INPUT_TIMEOUT": "60s",
    }


def run_pipeline(env: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    from deployer.pipeline import run

    out = io.StringIO()
    engine = FakeEngine()
    code = run(env, out, make_docker=lambda _c: engine)
    return code, out.getvalue(), runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())


# -- unreachable or refusing -----------------------------------------------------------------


def test_a_closed_port_is_a_clear_cluster_error_in_bounded_time(
    settings: dict[str, str], tmp_path: Path
) -> None:
    config = admin_kubeconfig(settings)
    env = pipeline_env(
        tmp_path, token_kubeconfig(config, "https://127.0.0.1:1", "t0ken-closed-port"), "default"
    )
    started = time.monotonic()
    code, log, outputs = run_pipeline(env)
    took = time.monotonic() - started
    assert code == 1
    assert outputs["status"] == "failed"
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert error.startswith("::error title=Kubernetes error::")
    assert "cannot reach the API server at https://127.0.0.1:1" in error, error
    assert "get deployments.apps web in namespace default" in error
    assert took < 30, f"took {took:.1f} s"
    assert "t0ken-closed-port" not in log.replace("::add-mask::t0ken-closed-port", "")


def test_a_wrong_token_is_a_401_naming_what_was_refused(
    settings: dict[str, str], tmp_path: Path
) -> None:
    config = admin_kubeconfig(settings)
    server = config["clusters"][0]["cluster"]["server"]
    token = "expired-or-wrong-" + uuid.uuid4().hex
    env = pipeline_env(tmp_path, token_kubeconfig(config, server, token), "default")
    code, log, outputs = run_pipeline(env)
    assert code == 1
    assert outputs["status"] == "failed"
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert error.startswith("::error title=Kubernetes access denied::"), error
    assert "did not accept the credentials (401 Unauthorized)" in error
    assert "get deployments.apps web in namespace default" in error
    assert "expired" in error
    visible = "\n".join(line for line in log.splitlines() if not line.startswith("::add-mask::"))
    assert token not in visible
    assert base64.b64encode(token.encode()).decode()[:20] not in visible


# -- the apiserver restarting during the watch ---------------------------------------------------


@pytest.fixture
def apiserver_proxy(settings: dict[str, str]) -> Iterator[tuple[FaultProxy, str]]:
    config = admin_kubeconfig(settings)
    with FaultProxy(server_of(config)) as proxy:
        proxied = json.loads(json.dumps(config))
        for entry in proxied["clusters"]:
            entry["cluster"]["server"] = f"https://{proxy.address}"
        yield proxy, yaml.safe_dump(proxied)


def background(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as e:  # reported by the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def slow_deployment(admin: k8s.ApiClient, namespace: str, name: str, image: str) -> None:
    """A Deployment whose rollouts take a while: 3 replicas, one at a time, 4 s each."""
    create_deployment(admin, namespace, name, image, replicas=3)
    k8s.AppsV1Api(admin).patch_namespaced_deployment(
        name,
        namespace,
        {
            "spec": {
                "minReadySeconds": 4,
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            }
        },
    )
    wait_complete(admin, namespace, name)


def test_apiserver_cut_and_restored_mid_watch_the_rollout_still_completes(
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    apiserver_proxy: tuple[FaultProxy, str],
) -> None:
    proxy, kubeconfig = apiserver_proxy
    path = tmp_path / "proxied.kubeconfig"
    path.write_text(kubeconfig)
    slow_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(tmp_path, str(path), namespace=namespace, deployments="web", timeout="90s")
    new = ref("web", "v2")
    started = time.monotonic()
    thread, box = background(lambda: run(new))
    # Wait until the watch runs (our patch is in), then "stop" the apiserver for 6 s.
    end = time.monotonic() + 30
    while "updated, generation" not in run.log and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(1.0)
    before = proxy.connections
    proxy.cut()
    time.sleep(6.0)
    proxy.restore()
    thread.join(90)
    took = time.monotonic() - started
    assert not thread.is_alive(), "roll_out did not return"
    assert "error" not in box, box.get("error")
    result: RolloutResult = box["result"]
    assert result.status == "succeeded", run.log
    assert result.deployments[0].result == "succeeded"
    assert proxy.connections > before, "no reconnection after the restart"
    live = read(admin, namespace, "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == new
    assert live["status"]["updatedReplicas"] == 3 and live["status"]["availableReplicas"] == 3
    assert took < 90
    print(f"apiserver cut for 6 s mid-watch: rollout succeeded in {took:.1f} s")


# -- someone else in the Deployment -----------------------------------------------------------


def test_a_newer_rollout_by_someone_else_is_reported_and_not_rolled_back(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        container="app",
        timeout="40s",
    )
    ours = ref("never-ready-web", "ours")
    theirs = ref("web", "theirs")
    thread, box = background(lambda: run(ours))
    end = time.monotonic() + 30
    while "updated, generation" not in run.log and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(1.0)
    k8s.AppsV1Api(admin).patch_namespaced_deployment(
        "web",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": theirs}]}}}},
    )
    thread.join(60)
    assert "error" not in box, box.get("error")
    result: RolloutResult = box["result"]
    (web,) = result.deployments
    assert result.status == "failed", run.log
    assert web.result == "failed"
    assert "superseded" in web.reason and theirs in web.reason, web.reason
    assert "not rolled back" in web.reason
    # Their change stands: no undo over it.
    wait_complete(admin, namespace, "web")
    live = read(admin, namespace, "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == theirs
    assert "rolling back to revision" not in run.log


def test_deployment_deleted_mid_rollout_is_a_clear_error(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        container="app",
        timeout="40s",
    )
    thread, box = background(lambda: run(ref("never-ready-web", "x")))
    end = time.monotonic() + 30
    while "updated, generation" not in run.log and time.monotonic() < end:
        time.sleep(0.1)
    k8s.AppsV1Api(admin).delete_namespaced_deployment("web", namespace)
    thread.join(60)
    assert "error" not in box, box.get("error")
    result: RolloutResult = box["result"]
    (web,) = result.deployments
    assert result.status == "failed"
    assert f"Deployment {namespace}/web was deleted during the rollout" in web.reason
    assert "rollback failed" in web.reason and "no longer exists" in web.reason
    assert f"::error title=Rollout of web failed::{namespace}/web: " in run.log


def test_rollback_to_a_failing_revision_says_both_and_where_it_stands(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    first = ref("fail-pull-web", "first")
    k8s.AppsV1Api(admin).create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": first}]},
                },
            },
        },
    )
    end = time.monotonic() + 20  # revision 1 exists (it never becomes ready: fine)
    while time.monotonic() < end:
        annotations = read(admin, namespace, "web")["metadata"].get("annotations") or {}
        if annotations.get("deployment.kubernetes.io/revision") == "1":
            break
        time.sleep(0.2)
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        deployments="web",
        container="app",
        timeout="60s",
    )
    started = time.monotonic()
    result = run(ref("fail-pull-web", "second"))
    took = time.monotonic() - started
    (web,) = result.deployments
    assert result.status == "failed", run.log
    assert web.result == "failed"
    assert web.reason.count("ImagePullBackOff") >= 2, web.reason  # ours, then the rollback's
    assert "rollback failed" in web.reason
    assert f"now runs {first}" in web.reason, web.reason
    assert "::error title=Rollback of web failed::" in run.log
    live = read(admin, namespace, "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == first
    assert took < 60


# -- hostile event messages reach the log and the summary inertly ---------------------------------

HOSTILE_EVENT = (
    "::add-mask::stolen\n::error::forged from an event\r\n::set-output name=status::succeeded"
    "%0A::warning::escaped\nstatus<<EOF\nevil\nEOF\nghadelimiter_x\n```\n<script>x</script>"
)


def test_hostile_event_messages_issue_no_command_and_no_output(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=1)
    env = pipeline_env(tmp_path, Path(settings["KUBECONFIG"]).read_text(), namespace)
    env["INPUT_CONTAINER"] = "app"
    env["INPUT_TIMEOUT"] = "15s"
    env["INPUT_IMAGE"] = "127.0.0.1:5000/never-ready-web"
    core = k8s.CoreV1Api(admin)
    thread, box = background(lambda: run_pipeline(env))
    # The new pod appears; give it a Warning event whose message is hostile.
    pod = None
    end = time.monotonic() + 20
    while pod is None and time.monotonic() < end:
        for p in core.list_namespaced_pod(namespace, label_selector="app=web").items:
            if "never-ready-web" in p.spec.containers[0].image:
                pod = p
        time.sleep(0.2)
    assert pod is not None, "the new pod never appeared"
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"name": f"hostile-{uuid.uuid4().hex[:6]}"},
            "involvedObject": {
                "kind": "Pod",
                "name": pod.metadata.name,
                "namespace": namespace,
                "uid": pod.metadata.uid,
                "apiVersion": "v1",
            },
            "type": "Warning",
            "reason": "Unhealthy::error::r",
            "message": HOSTILE_EVENT,
            "count": 3,
            "source": {"component": "faults-test"},
        },
    )
    thread.join(60)
    assert "error" not in box, box.get("error")
    code, log, outputs = box["result"]
    assert code == 1
    assert outputs["status"] == "rolled-back", log
    assert "forged from an event" in log  # it was shown ...
    executed = commands(log)  # ... but only inside a stop-commands block
    assert not [c for c in executed if "stolen" in c or "forged" in c or "escaped" in c], executed
    assert set(outputs) == ACTION_OUTPUTS
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    # In the summary the event is inside a code fence longer than any backtick run in it,
    # so neither its ``` nor its <script> can become Markdown or HTML.
    fence = summary.index("````text\n")
    assert fence < summary.index("forged from an event") < summary.index("\n````\n", fence)
    assert fence < summary.index("<script>")
