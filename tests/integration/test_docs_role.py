"""The Role and the token Secret of docs/cluster.md, as written, on the real control plane.

The YAML is read from the Markdown (not copied into the test), applied to a fresh
namespace, and the ServiceAccount's token from its ``kubernetes.io/service-account-token``
Secret runs a ``manifests`` deploy (ConfigMap, Secret, Service, Ingress, migration
Job, Deployment) and then a failing one that is rolled back and restored: every
verb the docs promise is enough is used, with nothing more.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import utils as k8s_utils

from tests.helpers import REGISTRY, Run, image_of, read, ref
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def documented_yaml() -> list[dict[str, Any]]:
    """Every YAML document of the section on permissions, namespace ``my-app`` as written."""
    text = DOCS.read_text()
    section = text.split("## Minimum permissions for a deploy", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Secret"], kinds
    return docs


def in_namespace(docs: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    text = yaml.safe_dump_all(docs)
    assert text.count("my-app") == 5  # each object's namespace and the binding's subject
    return list(yaml.safe_load_all(text.replace("my-app", namespace)))


def token_kubeconfig(
    admin: k8s.ApiClient, admin_kubeconfig: str, namespace: str, path: Path
) -> Path:
    """The kubeconfig docs/cluster.md tells users to make from the token Secret."""
    core = k8s.CoreV1Api(admin)

    def filled() -> dict[str, str] | None:
        data = core.read_namespaced_secret("deployer-token", namespace).data or {}
        return data if data.get("token") and data.get("ca.crt") else None

    data = wait_until(filled, 30, "the token controller to fill in deployer-token")
    server = yaml.safe_load(Path(admin_kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cluster",
                "cluster": {"server": server, "certificate-authority-data": data["ca.crt"]},
            }
        ],
        "users": [
            {"name": "deployer", "user": {"token": base64.b64decode(data["token"]).decode()}}
        ],
        "contexts": [
            {
                "name": "deployer",
                "context": {"cluster": "cluster", "user": "deployer", "namespace": namespace},
            }
        ],
        "current-context": "deployer",
    }
    path.write_text(yaml.safe_dump(config))
    return path


APP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {LOG_LEVEL: __LEVEL__}
---
apiVersion: v1
kind: Secret
metadata: {name: app-credentials}
stringData: {api-key: not-a-real-key-but-a-secret}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: JOB_IMAGE}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: WEB_IMAGE}]
"""


def write_app(workspace: Path, *, level: str, web: str, job: str, extra: bool = False) -> None:
    text = APP.replace("__LEVEL__", level).replace("WEB_IMAGE", web).replace("JOB_IMAGE", job)
    if extra:
        text += "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n"
    (workspace / "k8s").mkdir(exist_ok=True)
    (workspace / "k8s" / "app.yaml").write_text(text)


def test_the_documented_role_deploys_manifests_and_rolls_them_back(
    kube_admin: k8s.ApiClient, kubeconfig: str, fresh_namespace: str, tmp_path: Path
) -> None:
    namespace = fresh_namespace
    for doc in in_namespace(documented_yaml(), namespace):
        k8s_utils.create_from_dict(kube_admin, doc, namespace=namespace)
    account = token_kubeconfig(kube_admin, kubeconfig, namespace, tmp_path / "deployer.kubeconfig")

    write_app(tmp_path, level="info", web=f"{REGISTRY}/web:latest", job=f"{REGISTRY}/web:latest")
    first = Run(tmp_path, str(account), namespace=namespace, manifests="k8s")
    result = first(ref("web", "v1"))
    assert result.status == "succeeded", first.log
    assert {(d.kind, d.result) for d in result.deployments} == {
        ("Job", "succeeded"),
        ("Deployment", "succeeded"),
    }
    assert image_of(read(kube_admin, namespace, "web")) == ref("web", "v1")

    # A broken release: the ConfigMap changes, a new one appears, the Deployment crash-loops.
    write_app(
        tmp_path,
        level="debug",
        web=f"{REGISTRY}/crash-loop-web:latest",
        job=ref("web", "v1"),
        extra=True,
    )
    second = Run(
        tmp_path,
        str(account),
        namespace=namespace,
        manifests="k8s",
        image=f"{REGISTRY}/crash-loop-web",
    )
    result = second(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", second.log
    assert f"ConfigMap settings in {namespace}: restored to what it was before the run" in (
        result.restored
    )
    assert f"ConfigMap extra in {namespace}: deleted (created by this run)" in result.restored
    assert not [line for line in result.restored if "not restored" in line], result.restored
    core = k8s.CoreV1Api(kube_admin)
    assert core.read_namespaced_config_map("settings", namespace).data == {"LOG_LEVEL": "info"}
    assert "extra" not in [
        c.metadata.name for c in core.list_namespaced_config_map(namespace).items
    ]
    assert image_of(read(kube_admin, namespace, "web")) == ref("web", "v1")
