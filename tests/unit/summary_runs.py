"""Realistic runs of the whole pipeline (fake engine, fake deploy stage) and their summaries.

Used by tests/unit/test_report.py and the browser test (tests/browser/). The rollout
results are shaped like the ones the real rollout produces against the test cluster
(reasons and diagnoses copied from such a run, names made longer, as on EKS/ECR).
"""

from __future__ import annotations

import io
from pathlib import Path

from deployer.pipeline import run
from deployer.plan import Plan, compare
from deployer.rollout import DeploymentResult, RolloutResult
from tests.unit.fake_buildx import SUCCESS, install
from tests.unit.test_actions import runner_outputs
from tests.unit.test_pipeline import FakeDeploy, FakeEngine

REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments/checkout-web"
NEW_DIGEST = "sha256:e2ec6d4e9d5f4b0c8a7e6f5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291"
OLD_IMAGE = f"{REPO}@sha256:{'5f0c2b7a' * 8}"
NEW_IMAGE = f"{REPO}@{NEW_DIGEST}"
NAMESPACE = "payments-production"
POD = "checkout-web-6bc6899bdd-hkx7r"
CRASH = (
    f"pod {POD}, container app: CrashLoopBackOff (last exit: Error): back-off 40s restarting "
    f"failed container=app pod={POD}_{NAMESPACE}(21f6b779-df50-40be-9b6c-569264f5e2c4)"
)
DIAGNOSIS = "\n".join(
    [
        CRASH,
        "Warning events:",
        f"  BackOff: Back-off restarting failed container app in pod {POD}_{NAMESPACE}"
        "(21f6b779-df50-40be-9b6c-569264f5e2c4) (x4)",
        "Last 4 log lines:",
        "  2026-11-27T02:04:11.532Z INFO  checkout-web 4.18.0 starting (profile=production)",
        "  2026-11-27T02:04:11.871Z INFO  connecting to postgres://payments-db.payments-production"
        ".svc.cluster.local:5432/checkout",
        "  2026-11-27T02:04:12.904Z ERROR missing required setting PAYMENTS_API_KEY "
        "(environment variable or /etc/checkout/config.yaml)",
        "  2026-11-27T02:04:12.905Z FATAL exiting with status 1",
    ]
)


def result(
    name: str,
    outcome: str,
    reason: str = "",
    *,
    revision: int | None = 7,
    diagnosis: str = "",
    previous: str = OLD_IMAGE,
    new: str = NEW_IMAGE,
    containers: tuple[str, ...] = ("app",),
) -> DeploymentResult:
    return DeploymentResult(
        NAMESPACE, name, containers, previous, new, revision, outcome, reason, diagnosis
    )


SUCCEEDED = RolloutResult(
    "succeeded",
    (
        result("checkout-web", "succeeded", revision=8),
        result("checkout-worker", "succeeded", revision=12, containers=("worker", "sidecar")),
    ),
)
ROLLED_BACK = RolloutResult(
    "rolled-back",
    (
        result(
            "checkout-web",
            "rolled-back",
            f"{CRASH}; rolled back to the previous revision",
            revision=9,
            diagnosis=DIAGNOSIS,
        ),
        result(
            "checkout-worker",
            "rolled-back",
            "rolled back because checkout-web failed; rolled back to the previous revision",
            revision=13,
        ),
    ),
)


# Names at the lengths Kubernetes and registries allow in practice.
LONG = "payments-checkout-web-canary-eu-west-1b"
LONG_REPO = f"{REPO}-service-canary"
LONG_NAMES = RolloutResult(
    "rolled-back",
    (
        result(
            f"{LONG}-blue",
            "rolled-back",
            f"pod {LONG}-blue-6bc6899bdd-hkx7r, container application-server: CrashLoopBackOff "
            "(last exit: OOMKilled): back-off 5m0s restarting failed container; rolled back to "
            "the previous revision",
            previous=f"{LONG_REPO}@sha256:{'ab' * 32}",
            containers=("application-server",),
            diagnosis=f"pod {LONG}-blue-6bc6899bdd-hkx7r, container application-server: "
            "CrashLoopBackOff (last exit: OOMKilled): back-off 5m0s restarting failed container",
        ),
        result(
            f"{LONG}-green",
            "rolled-back",
            f"rolled back because {LONG}-blue failed; rolled back to the previous revision",
            previous=f"{LONG_REPO}:release-2026-11-27-hotfix-with-a-long-tag-name",
        ),
    ),
)


def planned(image: str) -> RolloutResult:
    return RolloutResult(
        "planned",
        (
            result("checkout-web", "planned", revision=7, new=image),
            result(
                "checkout-worker",
                "planned",
                revision=12,
                new=image,
                containers=("worker", "sidecar"),
                previous=f"{OLD_IMAGE}, docker.io/envoyproxy/envoy:v1.31.2",
            ),
        ),
    )


def with_plan(image: str) -> RolloutResult:
    """A dry run of manifests: each object compared with the live one (deployer.plan)."""
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout-web", "namespace": NAMESPACE},
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "app", "image": OLD_IMAGE}]}},
        },
    }
    planned = {**live, "spec": {**live["spec"], "replicas": 4}}
    planned["spec"]["template"] = {"spec": {"containers": [{"name": "app", "image": image}]}}
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "checkout-web-settings", "namespace": NAMESPACE},
        "data": {"PAYMENTS_API_URL": "https://payments.internal.example.com/v2", "TIMEOUT": "5s"},
    }
    new_settings = {**settings, "data": {**settings["data"], "TIMEOUT": "10s"}}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "checkout-web-credentials", "namespace": NAMESPACE},
        "data": {"PAYMENTS_API_KEY": "c2stbGl2ZS0xMjM0NTY3ODkw"},
    }
    new_secret = {**secret, "data": {"PAYMENTS_API_KEY": "c2stbGl2ZS0wOTg3NjU0MzIx"}}
    source = "deploy/overlays/production/manifests.yaml"
    objects = (
        compare(live, planned, source=f"{source} (document 1)", namespace=NAMESPACE),
        compare(settings, new_settings, source=f"{source} (document 2)", namespace=NAMESPACE),
        compare(secret, new_secret, source=f"{source} (document 3)", namespace=NAMESPACE),
        compare(
            None,
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "checkout-web"}},
            source=f"{source} (document 4)",
            namespace=NAMESPACE,
        ),
    )
    return RolloutResult(
        "planned",
        (result("checkout-web", "planned", new=image),),
        plan=Plan(image, objects),
    )


PIP_ERROR = "ERROR: No matching distribution found for payments-sdk==9.9.9"
RUN_ERROR = (
    'process "/bin/sh -c pip install -r requirements.txt" did not complete successfully: '
    "exit code: 1"
)
# What buildx --progress=plain prints when a RUN step fails (buildx 0.2x, docker driver).
FAILED_BUILD = [
    *SUCCESS[:2],
    "#1 [internal] load build definition from Dockerfile",
    "#1 transferring dockerfile: 187B done",
    "#1 DONE 0.0s",
    "",
    "#2 [internal] load metadata for docker.io/library/python:3.12-slim",
    "#2 DONE 0.6s",
    "",
    "#3 [1/4] FROM docker.io/library/python:3.12-slim@sha256:" + "9e" * 32,
    "#3 CACHED",
    "",
    "#4 [2/4] COPY requirements.txt .",
    "#4 DONE 0.0s",
    "",
    "#5 [3/4] RUN pip install -r requirements.txt",
    "#5 1.204 Collecting payments-sdk==9.9.9 (from -r requirements.txt (line 3))",
    "#5 1.912 ERROR: Could not find a version that satisfies the requirement "
    "payments-sdk==9.9.9 (from versions: 1.0.0, 1.1.0, 2.0.0)",
    f"#5 1.913 {PIP_ERROR}",
    f"#5 ERROR: {RUN_ERROR}",
    "------",
    " > [3/4] RUN pip install -r requirements.txt:",
    f"1.913 {PIP_ERROR}",
    "------",
    "Dockerfile:3",
    "--------------------",
    "   2 |     COPY requirements.txt .",
    "   3 | >>> RUN pip install -r requirements.txt",
    "   4 |     COPY . .",
    "--------------------",
    f"ERROR: failed to build: failed to solve: {RUN_ERROR}",
]


def runner_env(tmp_path: Path) -> dict[str, str]:
    workspace = tmp_path / "ws"
    workspace.mkdir(parents=True)
    (workspace / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "output").write_text("")
    (tmp_path / "summary").write_text("")
    return {
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_SHA": "0123456789abcdef0123",
        "GITHUB_REPOSITORY": "acme/checkout",
        "DEPLOYER_BUILDX": str(install(tmp_path / "bin")),  # the fake of fake_buildx.py
        "INPUT_IMAGE": REPO,
        "INPUT_TAGS": "sha-0123456",
        "INPUT_REGISTRY-USERNAME": "AWS",
        "INPUT_REGISTRY-PASSWORD": "ecr-password-for-the-summary-tests",
        "INPUT_NAMESPACE": NAMESPACE,
        "INPUT_DEPLOYMENTS": "checkout-web, checkout-worker",
    }


def go(
    env: dict[str, str], rollout: RolloutResult | None, engine: FakeEngine | None = None
) -> tuple[int, str, dict[str, str], str]:
    """One run; returns exit code, log, outputs and the summary file."""
    engine = engine or FakeEngine()
    engine.distribution_digest = NEW_DIGEST  # what the registry says BuildKit pushed
    for build in engine.plan["runs"]:
        build.setdefault("digest", NEW_DIGEST)
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    calls: list[str] = []
    code = run(
        env,
        out,
        make_docker=lambda _c: engine,
        make_deploy=lambda _c: FakeDeploy(calls, rollout),
    )
    outputs = runner_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    return code, out.getvalue(), outputs, Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def summaries(tmp_path: Path) -> dict[str, str]:
    """The summaries of a success, a rolled-back run, a dry run, an input error, a failed build."""
    found = {}
    found["succeeded"] = go(runner_env(tmp_path / "succeeded"), SUCCEEDED)[3]
    found["rolled-back"] = go(runner_env(tmp_path / "rolled-back"), ROLLED_BACK)[3]
    env = runner_env(tmp_path / "dry-run")
    env["INPUT_DRY-RUN"] = "true"
    found["dry-run"] = go(env, planned(f"{REPO}:sha-0123456"))[3]
    env = runner_env(tmp_path / "plan")
    env["INPUT_DRY-RUN"] = "true"
    env["INPUT_BUILD"] = "false"
    found["plan"] = go(env, with_plan(NEW_IMAGE))[3]
    env = runner_env(tmp_path / "input-error")
    env["INPUT_IMAGE"] = "ghcr.io/acme/checkout-web:v1"
    env["INPUT_TIMEOUT"] = "5 minutes"
    found["input-error"] = go(env, None)[3]
    broken = FakeEngine([{"lines": FAILED_BUILD, "code": 1}])
    found["build-failed"] = go(runner_env(tmp_path / "build-failed"), SUCCEEDED, broken)[3]
    found["long-names"] = go(runner_env(tmp_path / "long-names"), LONG_NAMES)[3]
    return found
