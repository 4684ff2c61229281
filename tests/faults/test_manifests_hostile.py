"""Hostile or surprising ``manifests`` against the real control plane.

What deployer/manifests.py and rollout.py do today: every document is validated by
a server-side dry-run apply before anything changes; a document's own
``metadata.namespace`` wins over the configured namespace (kubectl instead refuses
a mismatch with an explicit ``-n``); only ``apps/v1`` Deployments are watched and
rolled back, other kinds are applied as they are (their image substituted too).
Cluster-scoped kinds (built in, or a CRD's ``scope: Cluster`` seen through discovery)
are refused unless ``allow-cluster-scoped: true``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from deployer.errors import AccessDenied, ClusterError, ConfigError
from deployer.report import RunReport, summary
from tests.helpers import (
    REGISTRY,
    Run,
    admin,
    create_deployment,
    namespace,
    read,
    ref,
    settings,
)

pytestmark = pytest.mark.integration
__all__ = ["admin", "namespace", "settings"]  # fixtures used here


def deployment_doc(name: str, image: str, namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}{ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: {image}
"""


@pytest.fixture
def restricted(admin: k8s.ApiClient, settings: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    from tests.conftest import need_service

    path = need_service("TEST_KUBECONFIG_RESTRICTED")["TEST_KUBECONFIG_RESTRICTED"]
    name = f"m-{uuid.uuid4().hex[:6]}"
    yield path, settings["TEST_NAMESPACE"], name
    try:
        k8s.AppsV1Api(admin).delete_namespaced_deployment(name, settings["TEST_NAMESPACE"])
    except ApiException as e:
        if e.status != 404:
            raise


def test_a_document_in_another_namespace_than_the_input_is_an_input_error(
    admin: k8s.ApiClient, tmp_path: Path, restricted: tuple[str, str, str]
) -> None:
    kubeconfig, ns, name = restricted
    before = create_deployment(admin, ns, name, ref("web", "v1"), replicas=1)
    (tmp_path / "app.yaml").write_text(
        deployment_doc(name, f"{REGISTRY}/web:latest")
        + "---\n"
        + deployment_doc(f"{name}-elsewhere", f"{REGISTRY}/web:latest", "default")
    )
    run = Run(tmp_path, kubeconfig, namespace=ns, manifests="app.yaml")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v2"))
    (problem,) = caught.value.problems
    assert problem.input == "manifests"
    assert f"is in namespace default, but the namespace input is {ns}" in problem.problem
    after = read(admin, ns, name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_document_in_another_namespace_is_refused_and_nothing_changes(
    admin: k8s.ApiClient, tmp_path: Path, restricted: tuple[str, str, str]
) -> None:
    kubeconfig, ns, name = restricted
    before = create_deployment(admin, ns, name, ref("web", "v1"), replicas=1)
    (tmp_path / "app.yaml").write_text(
        deployment_doc(name, f"{REGISTRY}/web:latest")
        + "---\n"
        + deployment_doc(f"{name}-elsewhere", f"{REGISTRY}/web:latest", "default")
    )
    # No namespace input: the context's namespace, and the document's own where it sets one.
    run = Run(tmp_path, kubeconfig, manifests="app.yaml")
    with pytest.raises(AccessDenied) as caught:
        run(ref("web", "v2"))
    message = caught.value.message
    assert f"patch deployments.apps {name}-elsewhere in namespace default" in message
    after = read(admin, ns, name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as missing:
        k8s.AppsV1Api(admin).read_namespaced_deployment(f"{name}-elsewhere", "default")
    assert missing.value.status == 404


def test_an_unknown_kind_stops_everything_before_any_change(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "k8s.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: b}\n---\n"
        "apiVersion: v1\nkind: Bogus\nmetadata: {name: second}\n"
    )
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="k8s.yaml")
    with pytest.raises(ClusterError) as caught:
        run(ref("web", "v2"))
    assert "does not serve kind Bogus in apiVersion v1" in caught.value.message
    with pytest.raises(ApiException) as missing:
        k8s.CoreV1Api(admin).read_namespaced_config_map("first", namespace)
    assert missing.value.status == 404


def test_a_document_the_server_rejects_names_file_and_document(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "k8s.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\ndata: {a: b}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\ndata: {a: b}\n"
    )
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="k8s.yaml")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v2"))
    [problem] = caught.value.problems
    assert problem.input == "manifests"
    assert "k8s.yaml (document 2) (ConfigMap Not_Valid) was refused" in problem.problem


def test_several_documents_and_kinds_every_workload_is_verified(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "k8s.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: cfg}\n  data: {a: b}\n"
        "- apiVersion: v1\n  kind: Service\n  metadata: {name: svc}\n"
        "  spec: {ports: [{port: 80}], selector: {app: api}}\n"
        "---\n" + deployment_doc("api", f"{REGISTRY}/web:latest") + "---\n"
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\n"
        "spec:\n  serviceName: db\n  replicas: 1\n  selector: {matchLabels: {app: db}}\n"
        "  template:\n    metadata: {labels: {app: db}}\n"
        f"    spec: {{containers: [{{name: db, image: '{REGISTRY}/web:latest'}}]}}\n"
    )
    new = ref("web", "v3")
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="k8s.yaml")
    result = run(new)
    assert result.status == "succeeded", run.log
    assert [(d.kind, d.name, d.result) for d in result.deployments] == [
        ("Deployment", "api", "succeeded"),
        ("StatefulSet", "db", "succeeded"),
    ]
    assert "statefulset/db: rolled out" in run.log
    apps = k8s.AppsV1Api(admin)
    db = apps.read_namespaced_stateful_set("db", namespace)
    assert db.spec.template.spec.containers[0].image == new
    assert k8s.CoreV1Api(admin).read_namespaced_service("svc", namespace).spec.ports[0].port == 80
    assert "Applied StatefulSet db" in run.log


# -- cluster-scoped objects (issue 11, item 3) ----------------------------------------------


def cluster_admin_binding(name: str, namespace: str) -> str:
    return f"""apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {name}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
subjects: [{{kind: ServiceAccount, name: default, namespace: {namespace}}}]
"""


def binding_exists(admin: k8s.ApiClient, name: str) -> bool:
    try:
        k8s.RbacAuthorizationV1Api(admin).read_cluster_role_binding(name)
    except ApiException as e:
        if e.status != 404:
            raise
        return False
    return True


@pytest.fixture
def binding(admin: k8s.ApiClient) -> Iterator[str]:
    """A ClusterRoleBinding name; deleted afterwards should a run have applied it."""
    name = f"ci-admin-{uuid.uuid4().hex[:6]}"
    yield name
    if binding_exists(admin, name):
        k8s.RbacAuthorizationV1Api(admin).delete_cluster_role_binding(name)


def test_a_cluster_admin_binding_is_refused_and_nothing_changes(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path, binding: str
) -> None:
    before = create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=1)
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "app.yaml").write_text(deployment_doc("web", f"{REGISTRY}/web:latest"))
    (tmp_path / "k8s" / "rbac.yaml").write_text(cluster_admin_binding(binding, namespace))
    # Admin credentials: the API server would accept it; deployer must not send it.
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="k8s")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v2"))
    [problem] = caught.value.problems
    assert problem.input == "manifests"
    assert problem.problem.startswith(
        f"k8s/rbac.yaml (document 1) (ClusterRoleBinding {binding}) is cluster-scoped: it would "
        f"change the whole cluster, not only namespace {namespace}"
    )
    assert not binding_exists(admin, binding)
    after = read(admin, namespace, "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.fixture
def cluster_scoped_crd(admin: k8s.ApiClient) -> Iterator[str]:
    """A custom kind served cluster-scoped: only discovery can tell."""
    group = f"t{uuid.uuid4().hex[:6]}.deployer.test"
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"tenants.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": "tenants", "singular": "tenant", "kind": "Tenant"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    crds = k8s.ApiextensionsV1Api(admin)
    crds.create_custom_resource_definition(body)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = crds.read_custom_resource_definition(f"tenants.{group}").status
            if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the CRD was not established in 30 s")
        yield group
    finally:
        crds.delete_custom_resource_definition(f"tenants.{group}")


def test_a_cluster_scoped_custom_kind_is_refused_through_discovery(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tmp_path: Path,
    cluster_scoped_crd: str,
) -> None:
    (tmp_path / "k8s.yaml").write_text(
        f"apiVersion: {cluster_scoped_crd}/v1\nkind: Tenant\nmetadata: {{name: acme}}\n"
    )
    run = Run(tmp_path, settings["KUBECONFIG"], namespace=namespace, manifests="k8s.yaml")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v2"))
    [problem] = caught.value.problems
    assert problem.problem.startswith("k8s.yaml (document 1) (Tenant acme) is cluster-scoped")
    tenants = k8s.CustomObjectsApi(admin).list_cluster_custom_object(
        cluster_scoped_crd, "v1", "tenants"
    )
    assert tenants["items"] == []


def test_allowed_cluster_scoped_objects_are_listed_in_the_dry_run_plan(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path, binding: str
) -> None:
    create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=1)
    (tmp_path / "k8s.yaml").write_text(
        deployment_doc("web", f"{REGISTRY}/web:latest")
        + "---\n"
        + cluster_admin_binding(binding, namespace)
    )
    run = Run(
        tmp_path,
        settings["KUBECONFIG"],
        namespace=namespace,
        manifests="k8s.yaml",
        allow_cluster_scoped="true",
        dry_run="true",
    )
    result = run(ref("web", "v2"))
    assert result.status == "planned", run.log
    assert f"create ClusterRoleBinding/{binding} (cluster-scoped) (k8s.yaml (document 2))" in (
        run.log
    )
    text = summary(RunReport(status=result.status, rollout=result), redact=lambda t: t)
    assert (
        "Cluster-scoped objects (allowed by `allow-cluster-scoped`): "
        f"`ClusterRoleBinding` `{binding}`." in text
    )
    assert f"#### create: `ClusterRoleBinding` `{binding}` (cluster-scoped)" in text
    assert "From `k8s.yaml (document 2)`." in text
    assert not binding_exists(admin, binding)  # a dry run
