"""The stage's pure parts: undo like kubectl, container resolution, manifests, results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployer.errors import ConfigError, InputProblem
from deployer.manifests import load_manifests, repository_of, same_repository
from deployer.rollout import DeploymentResult, RolloutResult, resolve_containers


def pod_spec(*containers: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "template": {"spec": {"containers": [{"name": n, "image": i} for n, i in containers]}}
        },
    }


@pytest.mark.parametrize(
    ("containers", "wanted", "expected"),
    [
        ((("app", "ghcr.io/acme/web:1"), ("proxy", "envoy:1")), None, ("app",)),
        ((("a", "ghcr.io/acme/web@sha256:1"), ("b", "ghcr.io/acme/web:2")), None, ("a", "b")),
        ((("only", "nginx"),), None, ("only",)),
        ((("app", "x"), ("proxy", "y")), "proxy", ("proxy",)),
    ],
)
def test_containers_are_resolved(
    containers: tuple[tuple[str, str], ...], wanted: str | None, expected: tuple[str, ...]
) -> None:
    assert resolve_containers(pod_spec(*containers), wanted, "ghcr.io/acme/web") == expected


def test_an_unknown_or_ambiguous_container_lists_the_containers() -> None:
    missing = resolve_containers(pod_spec(("app", "x"), ("proxy", "y")), "side", "ghcr.io/acme/web")
    assert isinstance(missing, InputProblem)
    assert missing.input == "container"
    assert "(it has: app, proxy)" in missing.problem
    ambiguous = resolve_containers(pod_spec(("app", "x"), ("proxy", "y")), None, "ghcr.io/acme/web")
    assert isinstance(ambiguous, InputProblem)
    assert "app, proxy" in ambiguous.problem


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("ghcr.io/acme/web:1.2", "ghcr.io/acme/web"),
        ("ghcr.io/acme/web@sha256:abc", "ghcr.io/acme/web"),
        ("localhost:5000/web:tag@sha256:abc", "localhost:5000/web"),
        ("localhost:5000/web", "localhost:5000/web"),
    ],
)
def test_repository_of(reference: str, repository: str) -> None:
    assert repository_of(reference) == repository


def test_docker_hub_spellings_are_the_same_repository() -> None:
    assert same_repository("nginx:1", "docker.io/library/nginx")
    assert same_repository("docker.io/acme/web@sha256:1", "acme/web")
    assert not same_repository("ghcr.io/acme/web-api:1", "ghcr.io/acme/web")


MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers: [{name: migrate, image: "ghcr.io/acme/web:old"}]
      containers:
      - {name: web, image: "ghcr.io/acme/web"}
      - {name: proxy, image: "envoy:1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
"""


def test_manifests_get_every_reference_substituted(tmp_path: Path) -> None:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "app.yaml").write_text(MANIFEST)
    found = load_manifests(
        tmp_path, ("k8s/*.yaml",), "ghcr.io/acme/web", "ghcr.io/acme/web@sha256:9"
    )
    assert [(m.kind, m.name, m.substituted) for m in found] == [
        ("Deployment", "web", 2),
        ("ConfigMap", "settings", 0),
    ]
    spec = found[0].doc["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["image"] == "ghcr.io/acme/web@sha256:9"
    assert spec["containers"][1]["image"] == "envoy:1"


@pytest.mark.parametrize(
    ("files", "pattern", "problem"),
    [
        ({}, "k8s/*.yaml", "matches no file"),
        ({"a.yaml": "a: [1"}, "a.yaml", "is not valid YAML at line"),
        ({"a.yaml": "kind: ConfigMap\nmetadata: {name: x}"}, "a.yaml", "needs apiVersion, kind"),
        ({}, "../etc/*.yaml", "inside the workspace"),
    ],
)
def test_bad_manifests_are_config_errors(
    tmp_path: Path, files: dict[str, str], pattern: str, problem: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_manifests(tmp_path, (pattern,), "ghcr.io/acme/web", "ghcr.io/acme/web@sha256:9")
    assert caught.value.problems[0].input == "manifests"
    assert problem in caught.value.message


def test_results_as_outputs_and_revisions() -> None:
    one = DeploymentResult("prod", "web", ("web",), "a", "b", 4, "succeeded", "")
    assert one.as_output() == {
        "kind": "Deployment",
        "namespace": "prod",
        "name": "web",
        "containers": ["web"],
        "previous-image": "a",
        "new-image": "b",
        "images": {"web": "b"},
        "revision": 4,
        "result": "succeeded",
        "reason": "",
    }
    assert RolloutResult("succeeded", (one,)).revisions == {"web": 4}
    other = DeploymentResult("staging", "web", ("web",), "a", "b", 2, "succeeded", "")
    assert RolloutResult("succeeded", (one, other)).revisions == {"prod/web": 4, "staging/web": 2}
    db = DeploymentResult("prod", "db", ("db",), "a", "b", 3, "succeeded", "", kind="StatefulSet")
    assert RolloutResult("succeeded", (one, db)).revisions == {"web": 4}


def test_init_containers_running_the_image_are_updated_too() -> None:  # fix 10
    obj = pod_spec(("app", "ghcr.io/acme/web:1"))
    obj["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "migrate", "image": "ghcr.io/acme/web:1"},
        {"name": "wait", "image": "busybox"},
    ]
    assert resolve_containers(obj, None, "ghcr.io/acme/web") == ("migrate", "app")
    assert resolve_containers(obj, "migrate", "ghcr.io/acme/web") == ("migrate",)


def test_the_workloads_input_is_kind_and_name() -> None:
    from deployer.config import load_config

    env = {"INPUT_IMAGE": "ghcr.io/acme/web", "INPUT_BUILD": "false", "GITHUB_WORKSPACE": "."}
    config = load_config({**env, "INPUT_WORKLOADS": "web\nStatefulSet/db, daemonset/agent"})
    assert config.workloads == ("deployment/web", "statefulset/db", "daemonset/agent")
    assert not config.tolerate_failures_until_deadline
    for bad, problem in (
        ("cronjob/x", "kind must be deployment, statefulset, daemonset or rollout"),
        ("statefulset/DB", "is not a valid statefulset name"),
        ("web,deployment/web", "names deployment/web more than once"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config({**env, "INPUT_WORKLOADS": bad})
        assert caught.value.problems[0].input == "workloads"
        assert problem in caught.value.message


def test_rollouts_and_on_pause_are_inputs() -> None:
    from deployer.config import load_config

    env = {"INPUT_IMAGE": "ghcr.io/acme/web", "INPUT_BUILD": "false", "GITHUB_WORKSPACE": "."}
    config = load_config({**env, "INPUT_WORKLOADS": "rollout/api, Rollout/web"})
    assert config.workloads == ("rollout/api", "rollout/web")
    assert config.on_pause == "wait"
    assert load_config({**env, "INPUT_ON-PAUSE": " Succeed "}).on_pause == "succeed"
    with pytest.raises(ConfigError) as caught:
        load_config({**env, "INPUT_ON-PAUSE": "promote"})
    assert caught.value.problems[0].input == "on-pause"
    assert "'promote' is not wait or succeed" in caught.value.message


def test_the_forward_wait_keeps_a_stated_reserve_for_the_rollback() -> None:  # fix 5
    from deployer.rollout import rollback_reserve

    assert 300 - rollback_reserve(300) == 240  # was 200 s of the default 5m
    assert rollback_reserve(20) == 5
    assert rollback_reserve(3600) == 60


def test_an_autoscaler_keeps_spec_replicas() -> None:  # fix 10: SSA with force took it
    from deployer.rollout.apply import _replicas_owned_elsewhere

    hpa = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "subresource": "scale",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    ours = {"manager": "deployer", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert _replicas_owned_elsewhere({"metadata": {"managedFields": [ours, hpa]}})
    assert not _replicas_owned_elsewhere({"metadata": {"managedFields": [ours]}})
