"""The stage's pure parts: undo like kubectl, container resolution, manifests, results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployer.errors import ConfigError, InputProblem
from deployer.manifests import load_manifests, repository_of, same_repository
from deployer.rollout import (
    DeploymentResult,
    RolloutResult,
    resolve_containers,
    undo_patch,
    undo_target,
)

UID = "uid-1"


def template(image: str, hash_: str = "") -> dict[str, Any]:
    labels = {"app": "web"}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }


def replicaset(revision: int, image: str, owner: str = UID, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{revision}",
            "annotations": {"deployment.kubernetes.io/revision": str(revision), **annotations},
            "ownerReferences": [{"uid": owner, "controller": True}],
        },
        "spec": {"template": template(image, f"h{revision}")},
    }


def deployment(image: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "uid": UID, "annotations": annotations},
        "spec": {"template": template(image)},
    }


def test_undo_picks_the_second_highest_owned_revision() -> None:
    sets = [
        replicaset(1, "a"),
        replicaset(3, "c"),
        replicaset(2, "b"),
        replicaset(9, "z", owner="someone-else"),
    ]
    chosen = undo_target(deployment("c"), sets)
    assert chosen is not None and chosen["metadata"]["name"] == "web-2"


def test_undo_without_history_finds_nothing() -> None:
    assert undo_target(deployment("a"), [replicaset(1, "a")]) is None
    assert undo_target(deployment("a"), []) is None


def test_undo_when_the_new_replicaset_was_never_created_goes_to_the_highest() -> None:
    chosen = undo_target(deployment("new"), [replicaset(1, "a"), replicaset(2, "b")])
    assert chosen is not None and chosen["metadata"]["name"] == "web-2"


def test_undo_skips_a_reused_replicaset_the_controller_has_not_renumbered_yet() -> None:
    # Our template "a" matches an old ReplicaSet (revision 3) that the controller will
    # reuse; until it renumbers it, "second-highest" would be that one: our own template.
    sets = [replicaset(3, "a"), replicaset(4, "b"), replicaset(5, "c")]
    chosen = undo_target(deployment("a"), sets)
    assert chosen is not None
    assert chosen["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "5"


def test_undo_patch_is_kubectls_json_patch() -> None:
    live = deployment(
        "c",
        **{
            "deployment.kubernetes.io/revision": "3",
            "kubernetes.io/change-cause": "deployer: c",
            "deployer.dev/image": "c",
        },
    )
    rs = replicaset(2, "b", **{"kubernetes.io/change-cause": "deployer: b"})
    patch = undo_patch(live, rs)
    assert patch == [
        {"op": "replace", "path": "/spec/template", "value": template("b")},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {
                "deployment.kubernetes.io/revision": "3",
                "kubernetes.io/change-cause": "deployer: b",
            },
        },
    ]
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "h2"


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
        "namespace": "prod",
        "name": "web",
        "containers": ["web"],
        "previous-image": "a",
        "new-image": "b",
        "revision": 4,
        "result": "succeeded",
        "reason": "",
    }
    assert RolloutResult("succeeded", (one,)).revisions == {"web": 4}
    other = DeploymentResult("staging", "web", ("web",), "a", "b", 2, "succeeded", "")
    assert RolloutResult("succeeded", (one, other)).revisions == {"prod/web": 4, "staging/web": 2}
