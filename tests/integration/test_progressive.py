"""Argo Rollouts and Flagger canaries through the rollout stage, on the real controllers.

The controllers run against the test control plane (scripts/testenv/progressive-up.sh):
KWOK pods for the canary, Argo's ``job`` metric provider with Jobs whose pods KWOK
completes or fails by image name (``job-fail…``), Flagger with ``provider:
kubernetes`` and webhook checks against the stand-in (``/pass``, ``/fail``). One fresh
namespace per test. Flagger steps once per ``analysis.interval`` (10 s at least), so
its two tests take about a minute each; the Argo ones 10-40 s.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from deployer.cluster import connect
from deployer.rollout import roll_out
from tests.conftest import need_service
from tests.helpers import REGISTRY, Run, admin, create_deployment, namespace, read, ref, settings

pytestmark = pytest.mark.integration
__all__ = ["admin", "namespace", "settings"]  # fixtures used here

ARGO = ("argoproj.io", "v1alpha1")
STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "2s"}},
    {"analysis": {"templates": [{"templateName": "check"}]}},
    {"setWeight": 75},
]


@pytest.fixture
def argo(settings: dict[str, str]) -> dict[str, str]:
    return {**settings, **need_service("TEST_ARGO_ROLLOUTS_VERSION")}


@pytest.fixture
def flagger(settings: dict[str, str]) -> dict[str, str]:
    return {**settings, **need_service("TEST_FLAGGER_VERSION", "TEST_WEBHOOK_URL")}


def wait_for(check: Any, seconds: float, what: str) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {seconds} s")


def analysis_template(image: str) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "check", "image": image}]}
    job = {"spec": {"backoffLimit": 0, "template": {"spec": pod}}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "check"},
        "spec": {"metrics": [{"name": "check", "provider": {"job": job}}]},
    }


def rollout_doc(image: str, steps: list[dict[str, Any]], workload_ref: bool = False) -> Any:
    labels = {"app": "web"}
    spec: dict[str, Any] = {
        "replicas": 4,
        "selector": {"matchLabels": labels},
        "strategy": {"canary": {"steps": steps}},
    }
    if workload_ref:
        spec["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    else:
        spec["template"] = {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": image}]},
        }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": spec,
    }


def get_rollout(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    found = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
        *ARGO, namespace, "rollouts", "web"
    )
    return dict(found)


def healthy(admin: k8s.ApiClient, namespace: str) -> dict[str, Any] | None:
    ro = get_rollout(admin, namespace)
    status = ro.get("status") or {}
    observed = status.get("observedGeneration") == str(ro["metadata"]["generation"])
    stable = status.get("stableRS") == status.get("currentPodHash")
    return ro if observed and stable and status.get("phase") == "Healthy" else None


def create_rollout(
    admin: k8s.ApiClient, namespace: str, steps: list[dict[str, Any]], check: str = "check:1"
) -> None:
    api = k8s.CustomObjectsApi(admin)
    template = analysis_template(f"{REGISTRY}/progressive/{check}")
    api.create_namespaced_custom_object(*ARGO, namespace, "analysistemplates", template)
    doc = rollout_doc(ref("web", "v1"), steps)
    api.create_namespaced_custom_object(*ARGO, namespace, "rollouts", doc)
    wait_for(lambda: healthy(admin, namespace), 60, "the first revision")


def image(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


# -- Argo Rollouts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "source"),
    [("check:1", "manifests"), ("job-fail-check:1", "kustomize")],
    ids=["passes-manifests", "fails-kustomize"],
)
def test_a_canary_with_weights_a_pause_and_a_job_analysis_from_manifests_or_kustomize(
    admin: k8s.ApiClient,
    namespace: str,
    argo: dict[str, str],
    tmp_path: Path,
    check: str,
    source: str,
) -> None:
    import yaml

    (tmp_path / "deploy").mkdir()

    def write(image_: str) -> None:
        docs = [analysis_template(f"{REGISTRY}/progressive/{check}"), rollout_doc(image_, STEPS)]
        # Through JSON: shared dicts would become YAML aliases, which manifests refuse.
        text = yaml.safe_dump_all(json.loads(json.dumps(docs)))
        (tmp_path / "deploy" / "k8s.yaml").write_text(text)
        kustomization = {"resources": ["k8s.yaml"]}
        (tmp_path / "deploy" / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    environ = {}
    if source == "kustomize":
        environ = need_service("DEPLOYER_KUSTOMIZE")
    where = "deploy" if source == "kustomize" else "deploy/k8s.yaml"
    inputs = {"namespace": namespace, source: where, "timeout": "2m"}
    write(f"{REGISTRY}/web:placeholder")
    first = Run(tmp_path, argo["KUBECONFIG"], environ=environ, **inputs)
    assert first(ref("web", "v1")).status == "succeeded", first.log
    run = Run(tmp_path, argo["KUBECONFIG"], environ=environ, **inputs)
    result = run(ref("web", "v2"))
    (web,) = result.deployments
    assert web.kind == "Rollout"
    if check == "check:1":
        assert result.status == "succeeded", run.log
        assert web.phase == "Healthy"
        assert image(get_rollout(admin, namespace)) == ref("web", "v2")
        assert "step 3 of 4 (analysis)" in run.log
        return
    assert result.status == "rolled-back", run.log
    runs = k8s.CustomObjectsApi(admin).list_namespaced_custom_object(
        *ARGO, namespace, "analysisruns"
    )["items"]
    (analysis,) = [r for r in runs if r["status"].get("phase") == "Failed"]
    name = analysis["metadata"]["name"]
    assert f"aborted by Argo Rollouts at step 3 of 4 (analysis): AnalysisRun {name} Failed" in (
        web.reason
    )
    assert 'Metric "check" assessed Failed due to failed (1) > failureLimit (0)' in web.reason
    assert "Error (exit code 1)" in web.diagnosis  # the Job's pod: the job provider says nothing
    # All or nothing: the spec no longer names the bad image, and Argo says Healthy.
    assert image(get_rollout(admin, namespace)) == ref("web", "v1")
    assert healthy(admin, namespace)


def test_a_crash_looping_canary_fails_fast_and_is_aborted(
    admin: k8s.ApiClient, namespace: str, argo: dict[str, str], tmp_path: Path
) -> None:
    create_rollout(admin, namespace, STEPS)
    run = Run(tmp_path, argo["KUBECONFIG"], namespace=namespace, workloads="rollout/web")
    started = time.monotonic()
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    (web,) = result.deployments
    assert "CrashLoopBackOff" in web.reason and web.reason.startswith("pod web-")
    assert time.monotonic() - started < 60  # not Argo's 600 s progress deadline
    events = k8s.CoreV1Api(admin).list_namespaced_event(
        namespace, field_selector="involvedObject.kind=Rollout"
    )
    assert any(e.reason == "RolloutAborted" for e in events.items), [e.reason for e in events.items]
    assert image(get_rollout(admin, namespace)) == ref("web", "v1")
    assert healthy(admin, namespace)


@pytest.mark.parametrize("on_pause", ["wait", "succeed"])
def test_an_indefinite_pause_fails_at_the_deadline_or_ends_the_run_paused(
    admin: k8s.ApiClient, namespace: str, argo: dict[str, str], tmp_path: Path, on_pause: str
) -> None:
    create_rollout(admin, namespace, [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}])
    run = Run(
        tmp_path,
        argo["KUBECONFIG"],
        namespace=namespace,
        workloads="rollout/web",
        timeout="20s",
        on_pause=on_pause,
    )
    result = run(ref("web", "v2"))
    (web,) = result.deployments
    if on_pause == "succeed":
        assert result.status == "paused", run.log
        assert web.reason.startswith("paused at step 2 of 3 (pause), waiting for promotion")
        assert f"kubectl argo rollouts promote web -n {namespace}" in web.reason
        ro = get_rollout(admin, namespace)
        assert (ro["status"]["phase"], image(ro)) == ("Paused", ref("web", "v2"))  # not promoted
        return
    assert result.status == "rolled-back", run.log
    assert "paused at step 2 of 3 (pause), waiting for promotion" in web.reason
    assert web.reason.startswith("not complete after 15 s")
    assert image(get_rollout(admin, namespace)) == ref("web", "v1")


def test_a_workload_ref_rollout_is_changed_in_its_deployment(
    admin: k8s.ApiClient, namespace: str, argo: dict[str, str], tmp_path: Path
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=0)
    steps = [{"setWeight": 50}, {"pause": {"duration": "2s"}}]
    doc = rollout_doc("", steps, workload_ref=True)
    k8s.CustomObjectsApi(admin).create_namespaced_custom_object(*ARGO, namespace, "rollouts", doc)
    wait_for(lambda: healthy(admin, namespace), 60, "the first revision")
    run = Run(tmp_path, argo["KUBECONFIG"], namespace=namespace, workloads="rollout/web")
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    (web,) = result.deployments
    assert web.previous_image == ref("web", "v1")
    assert image(read(admin, namespace, "web")) == ref("web", "v2")
    assert "step 2 of 2 (pause: 2s)" in run.log  # judged through the steps, not at once
    ro = get_rollout(admin, namespace)
    assert ro["metadata"]["annotations"]["rollout.argoproj.io/workload-generation"] == str(
        read(admin, namespace, "web")["metadata"]["generation"]
    )


def test_a_cancel_during_a_canary_aborts_it_and_restores_its_spec_within_5_s(
    admin: k8s.ApiClient, namespace: str, argo: dict[str, str], tmp_path: Path
) -> None:
    create_rollout(admin, namespace, [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}])
    run = Run(tmp_path, argo["KUBECONFIG"], namespace=namespace, workloads="rollout/web")
    cancel = threading.Event()

    def paused() -> bool:
        return (get_rollout(admin, namespace).get("status") or {}).get("phase") == "Paused"

    cancelled_at: list[float] = []

    def cancel_at_the_pause() -> None:
        wait_for(paused, 30, "the canary's pause")
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_at_the_pause, daemon=True).start()
    api, _ = connect(run.config)
    try:
        result = roll_out(run.config, ref("web", "v2"), api, run.io, cancel)
    finally:
        api.close()
    assert result.status == "cancelled", run.log
    restored = wait_for(
        lambda: image(get_rollout(admin, namespace)) == ref("web", "v1"), 10, "the restore"
    )
    assert restored and time.monotonic() - cancelled_at[0] < 5
    events = k8s.CoreV1Api(admin).list_namespaced_event(
        namespace, field_selector="involvedObject.kind=Rollout"
    )
    assert any(e.reason == "RolloutAborted" for e in events.items)


# -- Flagger ---------------------------------------------------------------------------------


def canary_doc(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "web"},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "progressDeadlineSeconds": 60,
            "service": {"port": 80, "targetPort": 8080},
            "analysis": {
                "interval": "10s",  # Flagger's minimum
                "threshold": 1,
                "iterations": 1,
                "webhooks": [{"name": "check", "url": url, "timeout": "5s"}],
            },
        },
    }


@pytest.mark.parametrize("check", ["/pass", "/fail"], ids=["promoted", "rolled-back"])
def test_a_deployment_that_a_flagger_canary_targets_is_judged_by_it(
    admin: k8s.ApiClient, namespace: str, flagger: dict[str, str], tmp_path: Path, check: str
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"))
    api = k8s.CustomObjectsApi(admin)
    group = ("flagger.app", "v1beta1", namespace, "canaries")
    api.create_namespaced_custom_object(*group, canary_doc(flagger["TEST_WEBHOOK_URL"] + check))

    def phase() -> str:
        return str(
            (api.get_namespaced_custom_object(*group, "web").get("status") or {}).get("phase", "")
        )

    wait_for(lambda: phase() == "Initialized", 90, "Flagger's primary")
    run = Run(tmp_path, flagger["KUBECONFIG"], namespace=namespace, deployments="web", timeout="3m")
    result = run(ref("web", "v2"))
    (web,) = result.deployments
    assert "judged by Flagger's canary web" in run.log
    primary = k8s.AppsV1Api(admin).read_namespaced_deployment("web-primary", namespace)
    if check == "/pass":
        assert result.status == "succeeded", run.log
        assert web.phase == "canary web: Succeeded"
        assert primary.spec.template.spec.containers[0].image == ref("web", "v2")
        return
    assert result.status == "rolled-back", run.log
    assert web.reason.startswith("canary web failed: Canary analysis failed"), web.reason
    assert "failed checks threshold reached 1" in web.reason
    # The target's template matches what runs (the primary's), and Flagger saw it.
    assert image(read(admin, namespace, "web")) == ref("web", "v1")
    assert primary.spec.template.spec.containers[0].image == ref("web", "v1")
    status = api.get_namespaced_custom_object(*group, "web")["status"]
    assert status["lastAppliedSpec"] == status["lastPromotedSpec"]
