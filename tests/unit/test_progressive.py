"""Argo Rollouts and Flagger canaries through the whole rollout stage, on the fake cluster.

Each test runs :func:`deployer.rollout.roll_out` against :mod:`tests.fakecluster` with
its small Argo Rollouts and Flagger controllers (:mod:`tests.fakecluster.progressive`),
on virtual time, and asserts what a user sees: the status, each workload's result,
reason and phase, the log, and what the cluster runs afterwards. The same scenarios
run on the real controllers in tests/integration/test_progressive.py.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from deployer.actions import ActionsIO
from deployer.config import load_config
from deployer.errors import AccessDenied
from deployer.rollout import RolloutResult, roll_out
from tests.fakecluster import FakeCluster, deployment, rolled_out
from tests.fakecluster.progressive import analysis_template, canary, install, rollout

REPO = "reg.example/web"
STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "2s"}},
    {"analysis": {"templates": [{"templateName": "check"}]}},
    {"setWeight": 75},
]


def ref(repository: str, n: int) -> str:
    return f"{repository}@sha256:{str(n) * 64}"


@dataclass
class Run:
    result: RolloutResult
    log: str
    took: float  # virtual seconds

    def workload(self, kind: str = "Rollout") -> Any:
        (found,) = [d for d in self.result.deployments if d.kind == kind]
        return found


def deploy(
    cluster: FakeCluster, image: str, *, cancel_at: float | None = None, **inputs: str
) -> Run:
    env = {
        "INPUT_IMAGE": image.partition("@")[0],
        "INPUT_BUILD": "false",
        "INPUT_NAMESPACE": "default",
        "INPUT_TIMEOUT": "5m",
        "GITHUB_WORKSPACE": inputs.pop("workspace", "."),
    }
    env.update({f"INPUT_{k.upper().replace('_', '-')}": v for k, v in inputs.items()})
    config = load_config(env)
    out = io.StringIO()
    cancel = threading.Event()
    if cancel_at is not None:
        cluster.clock.call_later(cancel_at, cancel.set)
    start = cluster.clock.elapsed
    result = roll_out(
        config, image, cluster.transport, ActionsIO(out, {}), cancel, clock=cluster.clock
    )
    return Run(result, out.getvalue(), cluster.clock.elapsed - start)


def healthy(cluster: FakeCluster, name: str = "web") -> bool:
    found = cluster.get("Rollout", name) or {}
    status = found.get("status") or {}
    return status.get("phase") == "Healthy" and status.get("stableRS") == status.get(
        "currentPodHash"
    )


def argo(
    check_image: str = "reg.example/check:1", steps: list[dict[str, Any]] = STEPS
) -> FakeCluster:
    cluster = install(FakeCluster())
    cluster.create(analysis_template("check", check_image))
    cluster.create(rollout("web", ref(REPO, 1), steps))
    assert cluster.run_until(lambda: healthy(cluster), 60)
    return cluster


def template_image(cluster: FakeCluster, kind: str = "Rollout", name: str = "web") -> str:
    found = cluster.get(kind, name)
    assert found is not None
    return str(found["spec"]["template"]["spec"]["containers"][0]["image"])


# -- Argo Rollouts ---------------------------------------------------------------------------


def test_a_canary_through_two_weights_a_timed_pause_and_a_job_analysis_succeeds() -> None:
    cluster = argo()
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web")
    assert run.result.status == "succeeded", run.log
    web = run.workload()
    assert (web.result, web.phase) == ("succeeded", "Healthy")
    assert web.previous_image == ref(REPO, 1)
    assert template_image(cluster) == ref(REPO, 2)
    assert healthy(cluster)
    # Judged by the controller's steps, not by the first Healthy it showed.
    assert "step 2 of 4 (pause: 2s)" in run.log
    assert "step 3 of 4 (analysis)" in run.log
    assert (cluster.list("AnalysisRun")[0].get("status") or {}).get("phase") == "Successful"


def test_a_failed_analysis_is_reported_with_its_step_and_run_and_the_spec_is_restored() -> None:
    cluster = argo(check_image="reg.example/fail-check:1")
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web")
    assert run.result.status == "rolled-back", run.log
    web = run.workload()
    (analysis,) = cluster.list("AnalysisRun")
    name = analysis["metadata"]["name"]
    assert web.result == "rolled-back"
    assert f"aborted by Argo Rollouts at step 3 of 4 (analysis): AnalysisRun {name} Failed" in (
        web.reason
    )
    assert 'Metric "check" assessed Failed due to failed (1) > failureLimit (0)' in web.reason
    # The job provider's message is empty: the Job's pod says why.
    job = analysis["status"]["metricResults"][0]["measurements"][0]["metadata"]["job-name"]
    assert f"metric check: Job {job} failed: pod {job}-" in web.diagnosis
    assert "Error (exit code 1)" in web.diagnosis
    # All or nothing: the spec no longer names the bad image, and the Rollout is stable.
    assert template_image(cluster) == ref(REPO, 1)
    assert healthy(cluster)
    assert web.phase == "Healthy"


def test_a_crash_looping_canary_fails_fast_is_aborted_and_restored() -> None:
    cluster = argo()
    crash = "reg.example/crash-loop-web"
    run = deploy(cluster, ref(crash, 2), workloads="rollout/web")
    assert run.result.status == "rolled-back", run.log
    web = run.workload()
    assert "CrashLoopBackOff" in web.reason
    assert web.reason.startswith("pod web-")
    assert run.took < 120  # fail fast, not the controller's 600 s progress deadline
    abort = cluster.requests_to("PATCH", "/rollouts/web/status")
    restore = [r for r in cluster.requests_to("PATCH", "/rollouts/web") if r not in abort]
    assert len(abort) == 1 and abort[0].body == {"status": {"abort": True}}
    assert abort[0].at <= restore[-1].at  # aborted first, then the template put back
    assert template_image(cluster) == ref(REPO, 1)
    assert healthy(cluster)


def test_an_indefinite_pause_fails_at_the_deadline_naming_the_step() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}]
    cluster = argo(steps=steps)
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web", timeout="2m")
    assert run.result.status == "rolled-back", run.log
    web = run.workload()
    assert "paused at step 2 of 4" not in web.reason
    assert "not complete after 90 s: paused at step 2 of 3 (pause), waiting for promotion" in (
        web.reason
    )
    assert "kubectl argo rollouts promote web -n default" in web.reason
    assert template_image(cluster) == ref(REPO, 1)  # then rolled back, all or nothing


def test_on_pause_succeed_ends_at_a_promotion_pause_with_status_paused() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}]
    cluster = argo(steps=steps)
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web", on_pause="succeed")
    assert run.result.status == "paused", run.log
    web = run.workload()
    assert web.result == "paused"
    assert web.reason.startswith("paused at step 2 of 3 (pause), waiting for promotion")
    assert web.phase == "Paused at step 2 of 3 (pause)"
    assert run.took < 30
    # Never promoted by us: the Rollout still waits, with the new template.
    assert template_image(cluster) == ref(REPO, 2)
    assert (cluster.get("Rollout", "web") or {})["status"]["phase"] == "Paused"
    assert not cluster.requests_to("PATCH", "/rollouts/web/status")


def test_a_timed_pause_is_waited_through_with_on_pause_succeed() -> None:
    cluster = argo()
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web", on_pause="succeed")
    assert run.result.status == "succeeded", run.log


def test_a_workload_ref_rollout_is_patched_in_its_deployment_and_judged_on_the_rollout() -> None:
    cluster = install(FakeCluster())
    cluster.create(deployment("web", ref(REPO, 1), replicas=0))
    cluster.create(
        rollout("web", "", [{"setWeight": 50}, {"pause": {"duration": "5s"}}], workload_ref="web")
    )
    assert cluster.run_until(lambda: healthy(cluster), 60)
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web")
    assert run.result.status == "succeeded", run.log
    web = run.workload()
    assert web.previous_image == ref(REPO, 1)
    assert template_image(cluster, "Deployment") == ref(REPO, 2)
    assert not cluster.requests_to("PATCH", "/rollouts/web")
    # The Rollout's own generation does not move: it was judged only once Argo saw the
    # Deployment's new one, and then through its steps.
    assert run.took >= 5
    assert "step 2 of 2 (pause: 5s)" in run.log


def test_a_failed_workload_ref_rollout_is_undone_in_its_deployment() -> None:
    cluster = install(FakeCluster())
    cluster.create(deployment("web", ref(REPO, 1), replicas=0))
    cluster.create(rollout("web", "", [{"setWeight": 50}, {"pause": {}}], workload_ref="web"))
    assert cluster.run_until(lambda: healthy(cluster), 60)
    run = deploy(cluster, ref("reg.example/crash-loop-web", 2), workloads="rollout/web")
    assert run.result.status == "rolled-back", run.log
    assert template_image(cluster, "Deployment") == ref(REPO, 1)
    assert healthy(cluster)


def test_someone_elses_image_in_a_workload_ref_deployment_supersedes_ours_and_stands() -> None:
    cluster = install(FakeCluster())
    cluster.create(deployment("web", ref(REPO, 1), replicas=0))
    cluster.create(rollout("web", "", [{"setWeight": 50}, {"pause": {}}], workload_ref="web"))
    assert cluster.run_until(lambda: healthy(cluster), 60)
    theirs = ref(REPO, 9)

    def their_deploy() -> None:
        containers = [{"name": "app", "image": theirs}]
        cluster.patch(
            "Deployment", "web", {"spec": {"template": {"spec": {"containers": containers}}}}
        )

    cluster.clock.call_later(3, their_deploy)
    run = deploy(cluster, ref("reg.example/crash-loop-web", 2), workloads="rollout/web")
    assert run.result.status == "failed", run.log
    web = run.workload()
    assert web.reason.startswith(
        f"superseded by another change to the Deployment during the rollout: it now runs "
        f"container app: {theirs}"
    ), web.reason
    assert "not rolled back, the newer change stands" in web.reason
    assert template_image(cluster, "Deployment") == theirs


def test_a_cancel_during_a_canary_aborts_it_and_restores_its_spec_within_5_s() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}]
    cluster = argo(steps=steps)
    run = deploy(cluster, ref(REPO, 2), workloads="rollout/web", cancel_at=8)
    assert run.result.status == "cancelled"
    abort = cluster.requests_to("PATCH", "/rollouts/web/status")
    assert abort and abort[0].at <= 8 + 5
    assert template_image(cluster) == ref(REPO, 1)


# -- Flagger --------------------------------------------------------------------------------


def flagger(check: str) -> FakeCluster:
    cluster = install(FakeCluster())
    cluster.create(deployment("web", ref(REPO, 1), replicas=2))
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 60)
    cluster.create(canary("web", "web", check))
    cluster.run_until(
        lambda: (
            (cluster.get("Canary", "web") or {}).get("status", {}).get("phase") == "Initialized"
        ),
        30,
    )
    return cluster


def canary_phase(cluster: FakeCluster) -> str:
    return str(((cluster.get("Canary", "web") or {}).get("status") or {}).get("phase", ""))


def test_a_deployment_change_that_flagger_promotes_succeeds() -> None:
    cluster = flagger("/pass")
    run = deploy(cluster, ref(REPO, 2), deployments="web")
    assert run.result.status == "succeeded", run.log
    web = run.workload("Deployment")
    assert web.phase == "canary web: Succeeded"
    assert "judged by Flagger's canary web" in run.log
    # Not the Initialized/Succeeded of before: Flagger's analysis of this revision ran.
    assert "canary web: Progressing" in run.log
    assert run.took >= 20


def test_a_canary_flagger_fails_is_rolled_back_with_flaggers_reason() -> None:
    cluster = flagger("/fail")
    run = deploy(cluster, ref(REPO, 2), deployments="web")
    assert run.result.status == "rolled-back", run.log
    web = run.workload("Deployment")
    assert web.reason.startswith(
        "canary web failed: Canary analysis failed, Deployment scaled to zero. (Halt web.default "
        "advancement external check check failed"
    )
    assert "failed checks threshold reached 1" in web.reason
    # The target's template is what runs (the primary's) again, and Flagger saw it.
    assert template_image(cluster, "Deployment") == ref(REPO, 1)
    status = (cluster.get("Canary", "web") or {})["status"]
    assert status["lastAppliedSpec"] == status["lastPromotedSpec"]
    assert canary_phase(cluster) == "Failed"


def test_a_cancel_during_a_flagger_canary_puts_the_template_back_within_5_s() -> None:
    cluster = flagger("/pass")
    started = cluster.clock.elapsed
    run = deploy(cluster, ref(REPO, 2), deployments="web", cancel_at=8)
    assert run.result.status == "cancelled", run.log
    web = run.workload("Deployment")
    assert web.result == "cancelled"
    assert web.reason.startswith("cancelled while waiting (canary web: Progressing"), web.reason
    assert web.reason.endswith("put back to revision 1 (not waited for)"), web.reason
    (undo,) = [
        r
        for r in cluster.requests_to("PATCH", "/deployments/web")
        if r.content_type == "application/json-patch+json"
    ]
    assert undo.at - started <= 8 + 5
    assert template_image(cluster, "Deployment") == ref(REPO, 1)

    def back() -> bool:  # Flagger sees the promoted template again: it never promotes ours
        status = (cluster.get("Canary", "web") or {}).get("status") or {}
        return bool(status) and status.get("lastAppliedSpec") == status.get("lastPromotedSpec")

    assert cluster.run_until(back, 30)
    assert canary_phase(cluster) != "Succeeded"


def test_a_canary_that_succeeded_before_is_not_taken_for_this_run() -> None:
    cluster = flagger("/pass")
    assert deploy(cluster, ref(REPO, 2), deployments="web").result.status == "succeeded"
    assert canary_phase(cluster) == "Succeeded"
    cluster.patch(
        "Canary",
        "web",
        {
            "spec": {
                "analysis": {"webhooks": [{"name": "check", "url": "http://checks.example/fail"}]}
            }
        },
        type="merge",
    )
    run = deploy(cluster, ref(REPO, 3), deployments="web")
    assert run.result.status == "rolled-back", run.log


def test_credentials_that_may_not_list_canaries_stop_the_run_before_any_change() -> None:
    cluster = flagger("/pass")
    cluster.deny("list", "canaries", group="flagger.app")
    with pytest.raises(AccessDenied) as caught:
        deploy(cluster, ref(REPO, 2), deployments="web")
    assert "Flagger is installed, and the credentials may not list canaries.flagger.app" in (
        caught.value.message
    )
    assert "whether a Canary judges deployment/web" in caught.value.message
    assert template_image(cluster, "Deployment") == ref(REPO, 1)
    assert not cluster.requests_to("PATCH")


def test_without_flagger_installed_a_deployment_is_judged_as_before() -> None:
    cluster = FakeCluster()  # no canaries.flagger.app served
    cluster.create(deployment("web", ref(REPO, 1), replicas=2))
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 60)
    run = deploy(cluster, ref(REPO, 2), deployments="web")
    assert run.result.status == "succeeded", run.log
    assert run.workload("Deployment").phase == ""
    assert "phase" not in run.workload("Deployment").as_output()
    assert not cluster.requests_to("GET", "canaries")


def test_a_rollback_that_may_not_abort_warns_and_still_restores_the_template() -> None:
    cluster = argo()
    cluster.deny("patch", "rollouts/status", group="argoproj.io")
    run = deploy(cluster, ref("reg.example/crash-loop-web", 2), workloads="rollout/web")
    assert "::warning title=Rollback without abort::The credentials may not patch" in run.log
    assert run.result.status == "rolled-back", run.log
    (refused,) = cluster.requests_to("PATCH", "/rollouts/web/status")
    assert refused.status == 403
    assert template_image(cluster) == ref(REPO, 1)
    assert healthy(cluster)


WORKLOAD_REF_MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 0
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: web, image: reg.example/web:placeholder}]}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  strategy:
    canary:
      steps: [{setWeight: 50}, {pause: {duration: 5s}}]
"""


def test_a_deployment_in_manifests_whose_pods_a_rollout_runs_is_judged_as_the_rollout(
    tmp_path: Any,
) -> None:
    (tmp_path / "k8s.yaml").write_text(WORKLOAD_REF_MANIFESTS)
    cluster = install(FakeCluster())
    inputs = {"manifests": "k8s.yaml", "workspace": str(tmp_path)}
    first = deploy(cluster, ref(REPO, 1), **inputs)
    assert first.result.status == "succeeded", first.log
    run = deploy(cluster, ref(REPO, 2), **inputs)
    assert run.result.status == "succeeded", run.log
    assert "deployment/api: its pods are run by rollout/api (workloadRef): judged there" in run.log
    (api,) = run.result.deployments
    assert (api.kind, api.name, api.previous_image) == ("Rollout", "api", ref(REPO, 1))
    assert "step 2 of 2 (pause: 5s)" in run.log  # not the Deployment's 0 replicas at once
    crashing = WORKLOAD_REF_MANIFESTS.replace("reg.example/web:", "reg.example/crash-loop-web:")
    (tmp_path / "k8s.yaml").write_text(crashing)
    crash = deploy(cluster, ref("reg.example/crash-loop-web", 3), **inputs)
    assert crash.result.status == "rolled-back", crash.log
    assert template_image(cluster, "Deployment", "api") == ref(REPO, 2)
    assert healthy(cluster, "api")


MIGRATION = """
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: reg.example/web:placeholder}]
"""


def test_a_failed_migration_leaves_a_workload_ref_deployment_in_manifests_unchanged(
    tmp_path: Any,
) -> None:
    (tmp_path / "k8s.yaml").write_text(WORKLOAD_REF_MANIFESTS)
    cluster = install(FakeCluster())
    inputs = {"manifests": "k8s.yaml", "workspace": str(tmp_path)}
    assert deploy(cluster, ref(REPO, 1), **inputs).result.status == "succeeded"
    # The next release's migration crashes: the Deployment (the Rollout's template) is a
    # workload document, applied after the Jobs, so it is never changed.
    crashing = WORKLOAD_REF_MANIFESTS + MIGRATION
    (tmp_path / "k8s.yaml").write_text(
        crashing.replace("reg.example/web:", "reg.example/crash-loop-web:")
    )
    started = cluster.clock.elapsed
    run = deploy(cluster, ref("reg.example/crash-loop-web", 3), **inputs)
    assert run.result.status == "failed", run.log
    api = run.workload()
    assert (api.result, api.reason) == ("failed", "not changed: Job migrate failed")
    assert template_image(cluster, "Deployment", "api") == ref(REPO, 1)
    assert healthy(cluster, "api")
    applied = cluster.requests_to("PATCH", "/deployments/api")
    assert not [r for r in applied if r.at >= started and r.param("dryRun") is None]


def test_an_error_after_a_workload_ref_deployment_was_applied_still_undoes_it(
    tmp_path: Any,
) -> None:
    (tmp_path / "k8s.yaml").write_text(WORKLOAD_REF_MANIFESTS)
    cluster = install(FakeCluster())
    inputs = {"manifests": "k8s.yaml", "workspace": str(tmp_path)}
    assert deploy(cluster, ref(REPO, 1), **inputs).result.status == "succeeded"
    # Only the Deployment this time (the Rollout stays as it is in the cluster). The read
    # after its apply, before the image patch, fails: the apply alone changed the pods.
    (tmp_path / "k8s.yaml").write_text(WORKLOAD_REF_MANIFESTS.split("---")[0])
    failed: list[str] = []

    def refuse_the_read_after_the_apply(method: str, path: str) -> tuple[int, bytes] | None:
        applied = [
            r
            for r in cluster.requests_to("PATCH", "/deployments/api")
            if r.at >= started and r.param("dryRun") is None
        ]
        if method == "GET" and path.endswith("/deployments/api") and applied and not failed:
            failed.append(path)
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                      "reason": "BadRequest", "message": "refused by the test"}  # fmt: skip
            return 400, json.dumps(status).encode()
        return None

    started = cluster.clock.elapsed
    cluster.faults.hooks.append(refuse_the_read_after_the_apply)
    run = deploy(cluster, ref(REPO, 2), **inputs)
    assert run.result.status == "rolled-back", run.log
    api = run.workload()
    assert api.result == "rolled-back"
    assert "refused by the test" in api.reason, api.reason
    assert template_image(cluster, "Deployment", "api") == ref(REPO, 1)


CANARY_MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: reg.example/web:placeholder}]}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web}
spec:
  provider: kubernetes
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  service: {port: 80}
  analysis:
    interval: 10s
    threshold: 1
    iterations: 1
    webhooks: [{name: check, url: "http://checks.example/pass"}]
"""


def test_a_canary_created_with_its_deployment_is_waited_for_until_initialized(
    tmp_path: Any,
) -> None:
    (tmp_path / "k8s.yaml").write_text(CANARY_MANIFESTS)
    cluster = install(FakeCluster())
    inputs = {"manifests": "k8s.yaml", "workspace": str(tmp_path)}
    run = deploy(cluster, ref(REPO, 1), **inputs)
    assert run.result.status == "succeeded", run.log
    web = run.workload("Deployment")
    assert web.phase == "canary web: Initialized"
    assert "a first deploy is not analysed" in run.log
    again = deploy(cluster, ref(REPO, 2), **inputs)
    assert again.result.status == "succeeded", again.log
    assert again.workload("Deployment").phase == "canary web: Succeeded"
