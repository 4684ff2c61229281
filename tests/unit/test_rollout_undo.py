"""Undo per kind, against a scripted fake API: what is chosen and what is sent."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.cluster import Response
from deployer.errors import ClusterError
from deployer.rollout.kinds import DAEMONSET, DEPLOYMENT, STATEFULSET, Kind
from deployer.rollout.undo import plan_undo, revision_of, undo
from tests.helpers import ScriptedApi

UID = "uid-1"
OURS = "ghcr.io/acme/web@sha256:ours"


def template(image: str, hash_: str = "", **annotations: str) -> dict[str, Any]:
    labels = {"app": "web"}
    if hash_:
        labels["pod-template-hash"] = hash_
    meta: dict[str, Any] = {"labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"containers": [{"name": "web", "image": image}]}}


def replicaset(
    revision: int, image: str, owner: str = UID, tpl: dict[str, Any] | None = None, **ann: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{revision}",
            "annotations": {"deployment.kubernetes.io/revision": str(revision), **ann},
            "ownerReferences": [{"uid": owner, "controller": True}],
        },
        "spec": {"template": tpl or template(image, f"h{revision}")},
    }


def controller_revision(revision: int, image: str, owner: str = UID) -> dict[str, Any]:
    return {
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"db-{revision}",
            "ownerReferences": [{"uid": owner, "controller": True}],
        },
        "revision": revision,
        "data": {"spec": {"template": {**template(image), "$patch": "replace"}}},
    }


def workload(image: str, tpl: dict[str, Any] | None = None, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "uid": UID, "annotations": annotations, "resourceVersion": "7"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": tpl or template(image)},
    }


def chosen(kind: Kind, live: dict[str, Any], history: list[dict[str, Any]], **kw: Any) -> Any:
    plan = plan_undo(kind, live, history, kw.get("before"), OURS, ("web",))
    return None if plan is None else plan.revision


def test_the_previous_revision_like_kubectl() -> None:
    sets = [replicaset(1, "a"), replicaset(3, OURS), replicaset(2, "b"), replicaset(9, "z", "x")]
    assert chosen(DEPLOYMENT, workload(OURS), sets) == 2


def test_nothing_to_undo_without_history() -> None:
    assert chosen(DEPLOYMENT, workload("a"), [replicaset(1, "a")]) is None
    assert chosen(DEPLOYMENT, workload("a"), []) is None


def test_a_new_replicaset_never_created_goes_to_the_highest_other() -> None:
    assert chosen(DEPLOYMENT, workload(OURS), [replicaset(1, "a"), replicaset(2, "b")]) == 2


def test_a_restart_during_our_rollout_does_not_make_us_land_on_our_image() -> None:  # fix 6
    # N = 4 (before), N+1 = ours, N+2 = ours + restartedAt (kubectl rollout restart).
    restarted = template(OURS, **{"kubectl.kubernetes.io/restartedAt": "now"})
    sets = [replicaset(4, "before"), replicaset(5, OURS), replicaset(6, OURS, tpl=restarted)]
    live = workload(OURS, restarted)
    assert chosen(DEPLOYMENT, live, sets) == 4
    before = workload("before")
    assert chosen(DEPLOYMENT, live, sets, before=before) == 4


def test_the_template_the_run_found_wins_over_a_newer_revision() -> None:
    sets = [replicaset(1, "before"), replicaset(2, "someone-else"), replicaset(3, OURS)]
    assert chosen(DEPLOYMENT, workload(OURS), sets, before=workload("before")) == 1


def test_revision_history_limit_zero_still_goes_back_to_what_the_run_found() -> None:  # fix 7
    plan = plan_undo(DEPLOYMENT, workload(OURS), [], workload("before"), OURS, ("web",))
    assert plan is not None
    assert plan.source == "the template as the run found it"
    assert plan.body[1] == {"op": "replace", "path": "/spec/template", "value": template("before")}


def test_the_deployment_patch_is_kubectls_json_patch_guarded_by_resource_version() -> None:
    live = workload(
        OURS,
        **{
            "deployment.kubernetes.io/revision": "3",
            "kubernetes.io/change-cause": "deployer: c",
            "deployer.dev/image": OURS,
        },
    )
    rs = replicaset(2, "b", **{"kubernetes.io/change-cause": "deployer: b"})
    plan = plan_undo(DEPLOYMENT, live, [rs], None, OURS, ("web",))
    assert plan is not None and plan.content_type == "application/json-patch+json"
    assert plan.body == [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"},
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


@pytest.mark.parametrize("kind", [STATEFULSET, DAEMONSET])
def test_statefulsets_and_daemonsets_go_back_through_controller_revisions(kind: Kind) -> None:
    history = [
        controller_revision(1, "a"),
        controller_revision(2, "b"),
        controller_revision(3, OURS),
    ]
    plan = plan_undo(kind, workload(OURS), history, None, OURS, ("web",))
    assert plan is not None and plan.revision == 2
    assert plan.content_type == "application/strategic-merge-patch+json"
    assert plan.body == {
        "metadata": {"resourceVersion": "7"},
        "spec": {"template": {**template("b"), "$patch": "replace"}},
    }
    assert revision_of(history[0]) == 1


def test_undo_reads_plans_and_patches() -> None:
    api = ScriptedApi(
        ("GET", "deployments", workload(OURS)),
        ("GET", "replicasets", {"items": [replicaset(1, "a"), replicaset(2, OURS)]}),
        ("PATCH", "deployments", {"metadata": {"name": "web"}}),
    )
    plan, live = undo(api, DEPLOYMENT, "prod", "web", None, OURS, ("web",))
    assert plan is not None and plan.revision == 1
    assert live == {"metadata": {"name": "web"}}
    assert api.calls[1][2]["query"] == [("labelSelector", "app=web")]
    assert api.done


def test_undo_after_a_conflict_plans_again_on_the_fresh_object() -> None:  # fix 10
    api = ScriptedApi(
        ("GET", "statefulsets", workload(OURS)),
        ("GET", "controllerrevisions", {"items": [controller_revision(1, "a")]}),
        ("PATCH", "statefulsets", Response(409, {})),
        ("GET", "statefulsets", workload(OURS)),
        ("GET", "controllerrevisions", {"items": [controller_revision(1, "a")]}),
        ("PATCH", "statefulsets", {"metadata": {}}),
    )
    plan, _ = undo(api, STATEFULSET, "prod", "db", None, OURS, ("web",))
    assert plan is not None and api.done


def test_undo_refuses_a_paused_deployment_like_kubectl() -> None:  # fix 10
    paused = workload(OURS)
    paused["spec"]["paused"] = True
    api = ScriptedApi(("GET", "deployments", paused))
    with pytest.raises(ClusterError, match="paused"):
        undo(api, DEPLOYMENT, "prod", "web", None, OURS, ("web",))


def test_undo_of_a_deleted_workload_says_so() -> None:
    api = ScriptedApi(("GET", "daemonsets", Response(404, {})))
    with pytest.raises(ClusterError, match="no longer exists"):
        undo(api, DAEMONSET, "prod", "agent", None, OURS, ("web",))


def test_undo_with_nothing_to_go_back_to_patches_nothing() -> None:
    api = ScriptedApi(("GET", "deployments", workload("a")), ("GET", "replicasets", {"items": []}))
    plan, live = undo(api, DEPLOYMENT, "prod", "web", None, OURS, ("web",))
    assert plan is None and live["metadata"]["name"] == "web" and api.done


def test_undo_that_keeps_conflicting_gives_up() -> None:
    steps: list[tuple[str, str, Any]] = []
    for _ in range(4):
        steps += [
            ("GET", "deployments", workload(OURS)),
            ("GET", "replicasets", {"items": [replicaset(1, "a")]}),
            ("PATCH", "deployments", Response(409, {})),
        ]
    with pytest.raises(ClusterError, match="kept changing"):
        undo(ScriptedApi(*steps), DEPLOYMENT, "prod", "web", None, OURS, ("web",))
