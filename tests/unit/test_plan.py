"""The dry-run plan (deployer/plan.py): normalise, hide Secret values, diff, render, bounds.

The cluster's part is :func:`deployer.plan.ask_cluster` against ``tests.helpers.ScriptedApi``
here; against the real control plane in tests/integration/test_plan_pr.py.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from deployer.cluster import Resource, Response
from deployer.errors import ClusterError
from deployer.plan import (
    HIDDEN,
    HIDDEN_CHANGED,
    PLAN_BYTES,
    ObjectChange,
    Plan,
    ask_cluster,
    compare,
    normalised,
)
from deployer.secretvalues import secret_values
from tests.helpers import ScriptedApi
from tests.unit.test_secrets import assert_no_leaks

IMAGE = "ghcr.io/acme/web@sha256:" + "ab" * 32
OLD = "ghcr.io/acme/web@sha256:" + "01" * 32
PASSWORD = "db-Passw0rd-that-must-never-print"
NEW_PASSWORD = "a-new-Passw0rd-also-never-printed"

SERVER_NOISE = {
    "uid": "6f0b8a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    "resourceVersion": "4711",
    "generation": 3,
    "creationTimestamp": "2026-12-01T10:00:00Z",
    "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
}


def deployment(image: str, **meta: Any) -> dict[str, Any]:
    """A Deployment as the API server stores it: defaults filled in, status set."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", **meta},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,  # defaulted by the server
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log",
                        }
                    ],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                },
            },
        },
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3},
    }


def secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "db", "namespace": "shop", **SERVER_NOISE},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_server_set_fields_and_deployers_own_annotations_are_left_out() -> None:
    live = deployment(
        OLD,
        **SERVER_NOISE,
        annotations={
            "deployment.kubernetes.io/revision": "3",
            "kubernetes.io/change-cause": "deployer: old (run 41)",
            "deployer.dev/run-url": "https://github.com/acme/web/actions/runs/41",
            "team": "payments",
        },
    )
    found = normalised(live)
    assert found is not None
    assert "status" not in found
    assert found["metadata"] == {
        "name": "web",
        "namespace": "shop",
        "annotations": {"team": "payments"},
    }
    assert "creationTimestamp" not in found["spec"]["template"]["metadata"]
    assert live["status"] and live["metadata"]["uid"]  # the caller's object is untouched


def test_a_new_jobs_generated_uid_labels_are_left_out() -> None:
    uid = "8cf07af6-582a-41ca-af6a-33fdfdf88cac"
    labels = {"controller-uid": uid, "batch.kubernetes.io/controller-uid": uid, "job-name": "m"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "m", "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": []}},
        },
    }
    found = compare(None, job, source="k8s/job.yaml")
    assert not any(uid in line for line in found.diff)
    assert "+    job-name: m" in found.diff


def test_an_apply_that_changes_only_what_the_server_sets_is_unchanged() -> None:
    """Both sides as the server stores them: defaults are on both, so they are no change."""
    live = deployment(IMAGE, **SERVER_NOISE, annotations={"deployer.dev/run-url": "run 41"})
    planned = deployment(IMAGE, **{**SERVER_NOISE, "resourceVersion": "4712", "generation": 4})
    planned["metadata"]["annotations"] = {"deployer.dev/run-url": "run 42"}
    found = compare(live, planned, source="k8s/web.yaml (document 1)", namespace="shop")
    assert (found.action, found.diff, found.images) == ("unchanged", (), ())


def test_an_image_change_is_a_change_with_its_diff_and_its_image_line() -> None:
    found = compare(deployment(OLD), deployment(IMAGE), source="k8s/web.yaml", namespace="shop")
    assert found.action == "change"
    assert [(i.container, i.before, i.after) for i in found.images] == [("app", OLD, IMAGE)]
    assert found.diff[:2] == ("--- Deployment/web (live)", "+++ Deployment/web (planned)")
    changed = [line for line in found.diff if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert changed == [f"-      - image: {OLD}", f"+      - image: {IMAGE}"]


def test_a_new_object_is_created_and_every_line_is_added() -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop", **SERVER_NOISE},
        "data": {"LOG_LEVEL": "info"},
    }
    found = compare(None, config_map, source="k8s/cm.yaml", namespace="shop")
    assert found.action == "create"
    assert found.diff[0] == "--- (absent)"
    body = [line for line in found.diff[3:]]
    assert body and all(line.startswith("+") for line in body)
    assert "+  LOG_LEVEL: info" in body
    assert not any("uid" in line or "managedFields" in line for line in body)


def test_secret_values_are_changed_or_unchanged_never_shown_in_any_encoding() -> None:
    live = secret(password=PASSWORD, user="app-user-name")
    planned = secret(password=NEW_PASSWORD, user="app-user-name", token="t0ken-added-now")
    annotation = "kubectl.kubernetes.io/last-applied-configuration"
    live["metadata"]["annotations"] = {annotation: json.dumps({"data": live["data"]})}
    planned["metadata"]["annotations"] = {annotation: json.dumps({"data": planned["data"]})}
    found = compare(live, planned, source="k8s/secret.yaml", namespace="shop")
    assert found.action == "change"
    text = "\n".join(found.diff)
    assert f"-  password: {HIDDEN}" in text and f"+  password: {HIDDEN_CHANGED}" in text
    assert f"   user: {HIDDEN}" in text  # context line: the same on both sides
    assert f"+  token: {HIDDEN_CHANGED}" in text
    assert f"{annotation}: {HIDDEN_CHANGED}" in text
    plan = Plan(IMAGE, (found,))
    assert_no_leaks(
        {"diff": text, "plan": plan.markdown(), "changes": plan.changes_json()},
        {"old": PASSWORD, "new": NEW_PASSWORD, "kept": "app-user-name", "added": "t0ken-added-now"},
    )


def test_an_unchanged_secret_is_unchanged_and_a_new_one_shows_only_its_keys() -> None:
    same = compare(secret(password=PASSWORD), secret(password=PASSWORD), source="s.yaml")
    assert same.action == "unchanged"
    new = compare(None, secret(password=PASSWORD), source="s.yaml")
    assert f"+  password: {HIDDEN}" in new.diff
    assert PASSWORD not in "\n".join(new.diff)
    assert base64.b64encode(PASSWORD.encode()).decode() not in "\n".join(new.diff)


def test_secret_values_are_found_for_the_mask_raw_and_decoded_long_ones_only() -> None:
    doc = secret(password=PASSWORD, flag="true", pem="-----BEGIN KEY-----\nMIIEvQIBADAN\n")
    doc["stringData"] = {"api-key": "sk-live-0123456789"}
    found = secret_values(doc)
    assert PASSWORD in found and base64.b64encode(PASSWORD.encode()).decode() in found
    assert "sk-live-0123456789" in found and "MIIEvQIBADAN" in found
    assert "true" not in found  # too short to mask without blotting the log
    assert secret_values({"kind": "ConfigMap", "apiVersion": "v1", "data": {"a": "x" * 20}}) == []


# -- the Markdown --------------------------------------------------------------------------------


def change(name: str, action: str, *, diff: tuple[str, ...] = (), **kw: Any) -> ObjectChange:
    return ObjectChange("ConfigMap", "shop", name, action, f"k8s/{name}.yaml", diff, **kw)


def test_the_header_counts_and_names_the_cluster_scoped_objects() -> None:
    plan = Plan(
        IMAGE,
        (
            change("a", "create"),
            change("b", "change"),
            change("c", "unchanged"),
            change("d", "unchanged"),
            ObjectChange(
                "ClusterRole", "", "reader", "create", "k8s/rbac.yaml", cluster_scoped=True
            ),
        ),
    )
    text = plan.markdown()
    assert text.startswith("**Plan:** 2 to create, 1 to change, 2 unchanged.\n")
    assert (
        "Cluster-scoped objects (allowed by `allow-cluster-scoped`): `ClusterRole` `reader`."
        in (text)
    )
    assert "Unchanged: `ConfigMap` `c`, `ConfigMap` `d`." in text
    assert f"Image: `{IMAGE}` (pinned by digest)." in text
    assert [c["action"] for c in json.loads(plan.changes_json())] == [
        "create",
        "change",
        "unchanged",
        "unchanged",
        "create",
    ]
    assert json.loads(plan.changes_json())[4] == {
        "kind": "ClusterRole",
        "namespace": "",
        "name": "reader",
        "action": "create",
    }


def test_an_image_by_tag_says_a_real_run_deploys_it_by_digest() -> None:
    text = Plan("ghcr.io/acme/web:sha-0123456", ()).markdown()
    assert "a real run pushes it and deploys it by the digest the registry answers with" in text


def test_each_workloads_image_change_is_in_a_table() -> None:
    found = compare(deployment(OLD), deployment(IMAGE), source="k8s/web.yaml", namespace="shop")
    text = Plan(IMAGE, (found,)).markdown()
    assert "| Workload | Container | Now | Planned |" in text
    assert "| `deployment/web` | `app` | `ghcr.io/acme/web@sha256:01010101…` " in text
    assert "| `ghcr.io/acme/web@sha256:abababab…` |" in text
    assert "```diff\n--- Deployment/web (live)" in text


def test_untrusted_text_cannot_close_its_fence_or_become_markup() -> None:
    """A ConfigMap value with a fence of its own, a name with a link: all stays inert."""
    hostile = "````\n# Approved ![x](https://evil.example/x.png) <img src=x>\n````"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a`[x](https://evil)`", "namespace": "shop"},
        "data": {"readme": hostile},
    }
    found = compare(None, config_map, source="k8s/a`[x](https:evil)`.yaml", namespace="shop")
    text = Plan(IMAGE, (found,)).markdown()
    fence = re.search(r"^(`{3,})diff$", text, flags=re.MULTILINE)
    assert fence is not None
    body = text[fence.end() :].split("\n" + fence[1] + "\n", 1)[0]
    assert "evil.example" in body  # shown, inside the fence: 4 backticks cannot close 5
    assert len(fence[1]) > 4
    outside = text.replace(body, "")
    assert "evil.example" not in outside
    assert "`` a`[x](https://evil)` ``" in outside  # the name: one code span
    assert "``k8s/a`[x](https:evil)`.yaml``" in outside


def test_the_plan_is_capped_at_64_kib_with_a_note_and_every_object_in_changes() -> None:
    lines = tuple(f"+  key{n}: {'v' * 300}" for n in range(80))
    objects = tuple(change(f"cm-{n}", "create", diff=lines) for n in range(40))
    plan = Plan(IMAGE, objects)
    text = plan.markdown()
    assert len(text.encode()) <= PLAN_BYTES
    found = re.search(
        r"(\d+) more changed objects are not shown, to keep the plan under 64 KiB", text
    )
    assert found is not None
    assert text.count("#### create:") + int(found[1]) == 40
    assert len(json.loads(plan.changes_json())) == 40
    assert text.rstrip().endswith("Secret values are never shown.</sub>")


def test_one_objects_diff_is_bounded() -> None:
    before = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}}
    after = copy.deepcopy(before)
    after["data"] = {f"k{n:04}": "x" for n in range(500)}
    found = compare(before, after, source="big.yaml")
    assert len(found.diff) == 81
    assert found.diff[-1].startswith("… (") and "more lines of this diff" in found.diff[-1]


def test_the_changes_output_is_cut_at_whole_entries() -> None:
    plan = Plan(IMAGE, tuple(change(f"cm-{n:05}", "create") for n in range(3000)))
    text = plan.changes_json(limit=64 * 1024)
    entries = json.loads(text)
    assert len(text.encode()) <= 64 * 1024
    assert 500 < len(entries) < 3000 and entries[-1]["kind"] == "ConfigMap"


# -- asking the cluster ----------------------------------------------------------------------------

CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
JOBS = Resource("batch", "v1", "jobs")


@dataclass
class FakeManifest:
    doc: dict[str, Any]
    source: str = "k8s/app.yaml (document 1)"
    cluster_scoped: bool | None = False

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


@dataclass
class FakeApplied:
    manifest: FakeManifest
    resource: Resource | None
    namespace: str | None = "shop"
    prior: dict[str, Any] | None = None
    readable: bool = True
    replace: bool = False


@dataclass
class FakeKind:
    name: str = "Deployment"


@dataclass
class FakeWorkload:
    before: dict[str, Any] | None
    kind: FakeKind = field(default_factory=FakeKind)
    namespace: str = "shop"
    name: str = "web"
    containers: tuple[str, ...] = ("app",)
    from_manifest: bool = False
    images: dict[str, str] = field(default_factory=dict)  # container → an ``images`` entry

    def target_images(self, default: str) -> dict[str, str]:
        return {c: self.images.get(c, default) for c in self.containers}


def test_ask_cluster_diffs_the_servers_dry_run_against_the_live_object() -> None:
    doc = secret(password=NEW_PASSWORD)
    live = secret(password=PASSWORD)
    api = ScriptedApi(("PATCH", "secrets", {**doc, "metadata": {**doc["metadata"]}}))
    masked: list[str] = []
    plan = ask_cluster(
        api,  # type: ignore[arg-type]
        [FakeApplied(FakeManifest(doc), SECRETS, prior=live)],
        [FakeWorkload(deployment(OLD))],
        IMAGE,
        "deployer",
        masked.append,
    )
    assert api.done
    method, plural, request = api.calls[0]
    assert (method, plural) == ("PATCH", "secrets")
    assert ("dryRun", "All") in request["query"]
    assert ("fieldManager", "deployer") in request["query"]
    assert request["content_type"] == "application/apply-patch+yaml"
    assert [(o.kind, o.action) for o in plan.objects] == [
        ("Secret", "change"),
        ("Deployment", "change"),
    ]
    assert plan.objects[1].images[0].after == IMAGE
    assert plan.objects[1].source == "Deployment named in the inputs: only its images are set"
    assert PASSWORD in masked and NEW_PASSWORD in masked


def test_ask_cluster_shows_an_object_in_a_namespace_the_run_creates_as_written() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "new"}}
    api = ScriptedApi(
        ("PATCH", "configmaps", Response(404, {"message": 'namespaces "new" not found'}))
    )
    plan = ask_cluster(
        api,  # type: ignore[arg-type]
        [FakeApplied(FakeManifest(doc), CONFIGMAPS, namespace="new")],
        [],
        IMAGE,
        "deployer",
        lambda _: None,
    )
    [found] = plan.objects
    assert (found.action, found.namespace) == ("create", "new")
    assert "Shown as written" in found.note


def test_ask_cluster_names_a_refused_dry_run() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    api = ScriptedApi(("PATCH", "configmaps", Response(422, {"message": "data: Invalid value"})))
    with pytest.raises(ClusterError, match=r"refused the dry run of k8s/app.yaml .*Invalid value"):
        ask_cluster(
            api,  # type: ignore[arg-type]
            [FakeApplied(FakeManifest(doc), CONFIGMAPS)],
            [],
            IMAGE,
            "deployer",
            lambda _: None,
        )


def test_a_job_whose_template_changed_is_replaced_with_a_diff_computed_here() -> None:
    live = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "shop", **SERVER_NOISE},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "migrate", "image": OLD, "args": ["up"]}],
                }
            },
        },
        "status": {"succeeded": 1},
    }
    doc = copy.deepcopy(live)
    del doc["status"]
    doc["spec"] = {"template": {"spec": {"containers": [{"name": "migrate", "image": IMAGE}]}}}
    api = ScriptedApi()  # nothing asked: the API server cannot dry-run an immutable change
    plan = ask_cluster(
        api,  # type: ignore[arg-type]
        [FakeApplied(FakeManifest(doc), JOBS, prior=live, replace=True)],
        [],
        IMAGE,
        "deployer",
        lambda _: None,
    )
    [job] = plan.objects
    assert job.action == "replace"
    assert [(i.before, i.after) for i in job.images] == [(OLD, IMAGE)]
    assert "+        image: " + IMAGE in job.diff  # the args and defaults stay: merged by name
    assert not any("args" in line and line[0] in "+-" for line in job.diff)
    assert "deleted and created again" in job.note
    assert "1 to replace" in plan.headline()


def test_an_object_the_credentials_cannot_read_has_no_diff() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    plan = ask_cluster(
        ScriptedApi(),  # type: ignore[arg-type]
        [FakeApplied(FakeManifest(doc), CONFIGMAPS, readable=False)],
        [],
        IMAGE,
        "deployer",
        lambda _: None,
    )
    [found] = plan.objects
    assert (found.action, found.diff) == ("unknown", ())
    assert plan.headline() == "0 to create, 0 to change, 0 unchanged, 1 not readable"


def test_a_long_diff_line_is_wrapped_and_each_piece_keeps_its_sign() -> None:
    long_image = "registry.example.com/" + "team/" * 20 + "web@sha256:" + "cd" * 32
    found = compare(deployment(OLD), deployment(long_image), source="k8s/web.yaml")
    text = Plan(long_image, (found,)).markdown()
    body = text.split("```diff\n", 1)[1].split("\n```", 1)[0]
    lines = body.splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert all(line[:1] in (" ", "+", "-", "@") for line in lines), lines
    assert any(line.startswith("+↳ ") for line in lines)


def test_a_named_workload_shows_the_image_each_container_gets() -> None:
    """With ``images``, a container running another repository gets that image, not ``image``."""
    live = deployment(OLD)
    live["spec"]["template"]["spec"]["containers"].append({"name": "worker", "image": "w:1"})
    worker = "ghcr.io/acme/worker@sha256:" + "c" * 64
    workload = FakeWorkload(live, containers=("app", "worker"), images={"worker": worker})
    plan = ask_cluster(ScriptedApi(), [], [workload], IMAGE, "deployer", lambda _v: None)  # type: ignore[arg-type]
    (change,) = plan.objects
    assert [(i.container, i.before, i.after) for i in change.images] == [
        ("app", OLD, IMAGE),
        ("worker", "w:1", worker),
    ]
