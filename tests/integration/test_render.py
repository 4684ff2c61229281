"""kustomize overlays, Helm charts, several images, pull secrets, config changes that
roll and the environment's URL, with the real kustomize and helm binaries
(DEPLOYER_KUSTOMIZE, DEPLOYER_HELM) against the real control plane (KWOK pods: an
image whose last path segment starts with ``crash-loop`` crash-loops).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from deployer.errors import ConfigError
from deployer.render.kustomize import build
from tests.conftest import need_service
from tests.helpers import REGISTRY, Run, admin, image_of, namespace, read, ref, settings

pytestmark = pytest.mark.integration
__all__ = ["admin", "namespace", "settings"]  # fixtures used here


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    return need_service("DEPLOYER_KUSTOMIZE", "DEPLOYER_HELM")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run_with(tmp_path: Path, settings: dict[str, str], tools: dict[str, str], **inputs: str) -> Run:
    return Run(tmp_path, settings["KUBECONFIG"], environ=tools, **inputs)


def config_maps(admin: k8s.ApiClient, namespace: str) -> dict[str, dict[str, str]]:
    found = k8s.CoreV1Api(admin).list_namespaced_config_map(namespace).items
    return {c.metadata.name: c.data for c in found if c.metadata.name != "kube-root-ca.crt"}


def deployments(admin: k8s.ApiClient, namespace: str) -> list[str]:
    return [
        d.metadata.name for d in k8s.AppsV1Api(admin).list_namespaced_deployment(namespace).items
    ]


# -- kustomize -----------------------------------------------------------------------------

BASE_DEPLOYMENT = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {REGISTRY}/web:placeholder
        envFrom: [{{configMapRef: {{name: web-config}}}}]
"""


def overlay(tmp_path: Path, greeting: str) -> None:
    write(
        tmp_path,
        {
            "k8s/base/deployment.yaml": BASE_DEPLOYMENT,
            "k8s/base/kustomization.yaml": (
                "resources: [deployment.yaml]\n"
                f"configMapGenerator:\n- name: web-config\n  literals: [GREETING={greeting}]\n"
            ),
            "k8s/production/kustomization.yaml": (
                "resources: [../base]\n"
                "replicas: [{name: web, count: 3}]\n"
                f"images: [{{name: {REGISTRY}/web, newTag: v1}}]\n"
            ),
        },
    )


def config_map_of(deployment: dict[str, Any]) -> str:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return str(container["envFrom"][0]["configMapRef"]["name"])


def test_an_overlay_with_a_generator_replicas_and_images_is_rolled_out_and_verified(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    overlay(tmp_path, "hello")
    run = run_with(tmp_path, settings, tools, namespace=namespace, kustomize="k8s/production")
    image = ref("web", "v1")
    result = run(image)
    assert result.status == "succeeded", run.log
    [web] = result.deployments
    assert (web.name, web.result) == ("web", "succeeded")
    live = read(admin, namespace, "web")
    assert live["spec"]["replicas"] == 3  # the replicas transformer
    assert image_of(live) == image  # the images transformer's tag, then our digest
    hashed = config_map_of(live)
    assert hashed.startswith("web-config-") and hashed != "web-config"
    assert config_maps(admin, namespace) == {hashed: {"GREETING": "hello"}}
    assert "k8s/production (kustomize output, document" in run.log


def test_a_changed_literal_with_a_crash_loop_goes_back_to_the_old_hashed_config_map(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    overlay(tmp_path, "hello")
    run = run_with(tmp_path, settings, tools, namespace=namespace, kustomize="k8s/production")
    assert run(ref("web", "v1")).status == "succeeded", run.log
    old = config_map_of(read(admin, namespace, "web"))
    overlay(tmp_path, "bonjour")
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    live = read(admin, namespace, "web")
    assert config_map_of(live) == old  # the Deployment points back at the old one
    assert image_of(live) == ref("web", "v1")
    assert config_maps(admin, namespace) == {old: {"GREETING": "hello"}}  # the new one is gone
    assert any("deleted (created by this run)" in line for line in result.restored), result


def test_a_remote_base_is_refused_naming_it_and_nothing_is_applied(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    remote = "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0"
    overlay(tmp_path, "hello")
    write(tmp_path, {"k8s/production/kustomization.yaml": f"resources: [../base, '{remote}']\n"})
    run = run_with(tmp_path, settings, tools, namespace=namespace, kustomize="k8s/production")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v1"))
    [problem] = caught.value.problems
    assert problem.input == "kustomize"
    assert problem.problem.startswith(
        "k8s/production/kustomization.yaml: resources entry 'https://"
    )
    assert "is remote; deployer renders offline" in problem.problem
    assert config_maps(admin, namespace) == {} and deployments(admin, namespace) == []


EXEC_FUNCTION = """
apiVersion: example.com/v1
kind: Touch
metadata:
  name: touch
  annotations:
    config.kubernetes.io/function: |
      exec:
        path: ./touch.sh
"""


def test_an_exec_krm_function_never_runs(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "function-ran"
    overlay(tmp_path, "hello")
    write(
        tmp_path,
        {
            "k8s/production/kustomization.yaml": "resources: [../base]\ntransformers: [fn.yaml]\n",
            "k8s/production/fn.yaml": EXEC_FUNCTION,
            "k8s/production/touch.sh": f"#!/bin/sh\ntouch {marker}\ncat\n",
        },
    )
    os.chmod(tmp_path / "k8s/production/touch.sh", 0o700)
    run = run_with(tmp_path, settings, tools, namespace=namespace, kustomize="k8s/production")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v1"))
    assert "transformers has a KRM function (Touch" in caught.value.message
    assert not marker.exists()
    # Not only refused by the check: kustomize itself, as deployer runs it, does not run it.
    root = (tmp_path / "k8s" / "production").resolve()
    with pytest.raises(ConfigError) as direct:
        build(tools["DEPLOYER_KUSTOMIZE"], root, seconds=30)
    assert "kustomize build" in direct.value.message
    assert not marker.exists()
    assert deployments(admin, namespace) == []


def test_a_dot_dot_and_a_link_out_of_the_workspace_are_refused(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    outside = write(
        tmp_path / "outside",
        {
            "kustomization.yaml": "resources: [stolen.yaml]\n",
            "stolen.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n",
            "host.env": "TOKEN=from-the-host",
        },
    )
    workspace = tmp_path / "ws"
    write(workspace, {"dots/kustomization.yaml": "resources: [../../outside]\n"})
    write(
        workspace,
        {
            "links/kustomization.yaml": (
                "resources: [base]\nconfigMapGenerator:\n- name: c\n  envs: [creds.env]\n"
            )
        },
    )
    (workspace / "links" / "base").symlink_to(outside)
    (workspace / "links" / "creds.env").symlink_to(outside / "host.env")
    # kustomize's own RootOnly restrictor lets a base directory lie anywhere:
    assert "stolen" in build(
        tools["DEPLOYER_KUSTOMIZE"], (workspace / "dots").resolve(), seconds=30
    )
    for directory, entry in (("dots", "'../../outside'"), ("links", "'base'")):
        run = run_with(workspace, settings, tools, namespace=namespace, kustomize=directory)
        with pytest.raises(ConfigError) as caught:
            run(ref("web", "v1"))
        assert f"resources entry {entry} leads outside the workspace" in caught.value.message
    assert "configMapGenerator file 'creds.env' leads outside" in caught.value.message
    assert config_maps(admin, namespace) == {}


# -- Helm ----------------------------------------------------------------------------------

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "values.yaml": f"image: {REGISTRY}/web:latest\nreplicas: 1\ngreeting: hello\n",
    "templates/configmap.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "  labels: {app.kubernetes.io/instance: '{{ .Release.Name }}'}\n"
        "data:\n  GREETING: {{ .Values.greeting | quote }}\n"
        "  NAMESPACE: {{ .Release.Namespace | quote }}\n"
        "  KUBE: {{ .Capabilities.KubeVersion.Version | quote }}\n"
        '  INGRESS_V1: {{ .Capabilities.APIVersions.Has "networking.k8s.io/v1/Ingress" | quote }}\n'
    ),
    "templates/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: '{{ .Release.Name }}'}\n"
        "spec:\n  replicas: {{ .Values.replicas }}\n"
        "  selector: {matchLabels: {app: '{{ .Release.Name }}'}}\n"
        "  template:\n    metadata: {labels: {app: '{{ .Release.Name }}'}}\n"
        "    spec:\n      containers:\n      - name: web\n        image: {{ .Values.image | quote }}\n"
        "        envFrom: [{configMapRef: {name: '{{ .Release.Name }}-config'}}]\n"
    ),
    "templates/tests/test-connection.yaml": (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: test\n  annotations: {helm.sh/hook: test}\n"
        "spec: {containers: [{name: t, image: busybox}]}\n"
    ),
}


def test_a_chart_from_the_workspace_with_values_files_and_sets(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    write(tmp_path / "charts" / "web", CHART)
    write(tmp_path, {"values-production.yaml": "replicas: 3\ngreeting: from-values\n"})
    run = run_with(
        tmp_path,
        settings,
        tools,
        namespace=namespace,
        helm_chart="charts/web",
        helm_values="values-production.yaml",
        helm_set="greeting=from-set\n",
        helm_release="shop",
    )
    image = ref("web", "v1")
    result = run(image)
    assert result.status == "succeeded", run.log
    assert [d.name for d in result.deployments] == ["shop"]
    live = read(admin, namespace, "shop")
    assert live["spec"]["replicas"] == 3 and image_of(live) == image
    data = config_maps(admin, namespace)["shop-config"]
    assert data["GREETING"] == "from-set"  # --set after -f, as helm orders them
    assert data["NAMESPACE"] == namespace
    version = k8s.VersionApi(admin).get_code().git_version
    assert data["KUBE"] == version and data["INGRESS_V1"] == "true"  # from discovery
    assert "charts/web: web/templates/deployment.yaml" in run.log  # the chart's own file
    assert "Pod test" not in run.log  # test hooks are dropped


def test_a_chart_from_an_oci_registry(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    registry = need_service(
        "TEST_OCI_CHART",
        "TEST_OCI_CHART_VERSION",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
    )
    chart = f"{registry['TEST_OCI_CHART']}:{registry['TEST_OCI_CHART_VERSION']}"
    run = run_with(
        tmp_path,
        settings,
        tools,
        image=f"{REGISTRY}/deployer-testenv/web",  # the chart's values.image.repository
        namespace=namespace,
        helm_chart=chart,
        registry_username=registry["TEST_REGISTRY_USERNAME"],
        registry_password=registry["TEST_REGISTRY_PASSWORD"],
    )
    image = ref("deployer-testenv/web", "oci")
    result = run(image)
    assert result.status == "succeeded", run.log
    [web] = result.deployments
    assert image_of(read(admin, namespace, web.name)) == image


def test_a_pre_upgrade_hook_job_runs_as_a_migration_before_the_workloads(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    hook = (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n"
        "    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-weight: '-5'\n"
        "spec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n"
        "      containers: [{name: migrate, image: {{ .Values.image | quote }}}]\n"
    )
    write(tmp_path / "chart", {**CHART, "templates/migrate.yaml": hook})
    run = run_with(tmp_path, settings, tools, namespace=namespace, helm_chart="chart")
    result = run(ref("web", "v1"))
    assert result.status == "succeeded", run.log
    assert [(d.kind, d.name) for d in result.deployments] == [
        ("Job", "migrate"),
        ("Deployment", "web"),
    ]
    assert run.log.index("Job migrate: completed") < run.log.index("Applied Deployment web")
    job = k8s.BatchV1Api(admin).read_namespaced_job("migrate", namespace)
    assert job.spec.template.spec.containers[0].image == ref("web", "v1")


def test_a_post_install_hook_is_an_input_error_naming_it(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    hook = (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: notify\n"
        "  annotations: {helm.sh/hook: post-install}\n"
        "spec: {template: {spec: {restartPolicy: Never, containers: [{name: n, image: x}]}}}\n"
    )
    write(tmp_path / "chart", {**CHART, "templates/notify.yaml": hook})
    run = run_with(tmp_path, settings, tools, namespace=namespace, helm_chart="chart")
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v1"))
    assert "(Job notify) is a helm hook 'post-install'" in caught.value.message
    assert deployments(admin, namespace) == []


# -- several images --------------------------------------------------------------------------

TWO = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: {REGISTRY}/web}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: worker}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: worker}}}}
  template:
    metadata: {{labels: {{app: worker}}}}
    spec: {{containers: [{{name: worker, image: "{REGISTRY}/worker:main"}}]}}
"""


def test_two_images_go_to_two_deployments_and_the_output_says_which(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    write(tmp_path, {"app.yaml": TWO})
    web, worker = ref("web", "w1"), ref("worker", "k1")
    run = run_with(
        tmp_path, settings, tools, namespace=namespace, manifests="app.yaml", images=worker
    )
    result = run(web)
    assert result.status == "succeeded", run.log
    assert image_of(read(admin, namespace, "web")) == web
    assert image_of(read(admin, namespace, "worker")) == worker
    outputs = {d.name: d.as_output()["images"] for d in result.deployments}
    assert outputs == {"web": {"web": web}, "worker": {"worker": worker}}


def push_empty_image(registry: dict[str, str], repository: str, tag: str) -> str:
    """An image with no layers, pushed through the registry API; its digest."""
    pair = f"{registry['TEST_REGISTRY_USERNAME']}:{registry['TEST_REGISTRY_PASSWORD']}"
    auth = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    base = f"http://{registry['TEST_REGISTRY']}/v2/{repository}"

    def call(method: str, url: str, body: bytes = b"", **headers: str) -> Any:
        request = urllib.request.Request(url, data=body or None, method=method)  # noqa: S310 - loopback registry
        for key, value in {**auth, **headers}.items():
            request.add_header(key, value)
        return urllib.request.urlopen(request, timeout=30)  # noqa: S310 - loopback registry

    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    with call("POST", f"{base}/blobs/uploads/") as started:
        location = started.headers["Location"]
    join = "&" if "?" in location else "?"
    with call(
        "PUT",
        f"{location}{join}digest={config_digest}",
        config,
        **{"Content-Type": "application/octet-stream"},
    ):
        pass
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    with call(
        "PUT",
        f"{base}/manifests/{tag}",
        manifest,
        **{"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    ) as done:
        return str(done.headers["Docker-Content-Digest"])


def test_a_missing_extra_image_is_refused_before_anything_is_built_or_changed(
    admin: k8s.ApiClient, namespace: str, settings: dict[str, str], tmp_path: Path
) -> None:
    from tests.integration.test_build_push import go, runner_env

    services = need_service(
        "DOCKER_HOST",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
        "DEPLOYER_BUILDX",
    )
    repo = f"it-{uuid.uuid4().hex[:8]}"
    web = f"{REGISTRY}/{repo}/web@" + push_empty_image(services, f"{repo}/web", "v1")
    worker = f"{REGISTRY}/{repo}/worker@" + push_empty_image(services, f"{repo}/worker", "v1")
    missing = f"{REGISTRY}/{repo}/cron@sha256:" + "0" * 64
    workspace = tmp_path / "ws"
    app = TWO.replace(f"{REGISTRY}/web", f"{REGISTRY}/{repo}/web")
    write(workspace, {"app.yaml": app.replace(f"{REGISTRY}/worker", f"{REGISTRY}/{repo}/worker")})
    env = runner_env(
        services,
        workspace,
        build="false",
        images=f"{worker}\n{missing}",
        manifests="app.yaml",
        namespace=namespace,
        timeout="60s",
    )
    env["INPUT_IMAGE"] = web
    env["INPUT_KUBECONFIG"] = Path(settings["KUBECONFIG"]).read_text()
    code, log, outputs, _summary = go(env)
    assert code == 1 and outputs["status"] == "failed"
    error = next(line for line in log.splitlines() if line.startswith("::error"))
    assert missing in error and f"The registry holds {worker} (input 'images')" in log
    assert deployments(admin, namespace) == []  # nothing applied
    env["INPUT_IMAGES"] = worker  # and with every image there, both roll out
    code, log, outputs, _summary = go(env)
    assert code == 0, log
    images = {w["name"]: w["images"] for w in json.loads(outputs["workloads"])}
    assert images["web"] == {"web": web}
    assert images["worker"] == {"worker": worker}


# -- pull secrets ------------------------------------------------------------------------------


def test_the_pull_secret_is_checked_and_added_to_the_changed_workloads_and_undone(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    from tests.helpers import create_deployment

    before = create_deployment(admin, namespace, "web", ref("web", "v1"), replicas=1)
    run = run_with(
        tmp_path,
        settings,
        tools,
        namespace=namespace,
        deployments="web",
        image_pull_secret="ghcr-pull",
    )
    with pytest.raises(ConfigError) as caught:
        run(ref("web", "v2"))
    assert caught.value.problems[0].input == "image-pull-secret"
    assert f"no Secret 'ghcr-pull' in namespace {namespace}" in caught.value.message
    assert read(admin, namespace, "web")["spec"]["template"] == before["spec"]["template"]
    dockerconfig = base64.b64encode(b'{"auths": {}}').decode()
    k8s.CoreV1Api(admin).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "ghcr-pull"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": dockerconfig},
        },
    )
    result = run(ref("web", "v2"))
    assert result.status == "succeeded", run.log
    spec = read(admin, namespace, "web")["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    broken = run(ref("crash-loop-web", "v3"))
    assert broken.status == "rolled-back", run.log
    assert read(admin, namespace, "web")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] == ref("web", "v2")


# -- config changes roll ------------------------------------------------------------------------

SETTINGS = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{GREETING: {{greeting}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {REGISTRY}/web
        envFrom: [{{configMapRef: {{name: settings}}}}]
"""


def revision(admin: k8s.ApiClient, namespace: str) -> str:
    return str(
        read(admin, namespace, "web")["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
    )


def test_a_config_map_only_change_rolls_the_deployment_that_reads_it_and_is_verified(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
) -> None:
    image = ref("web", "v1")
    (tmp_path / "app.yaml").write_text(SETTINGS.replace("{greeting}", "hello"))
    run = run_with(tmp_path, settings, tools, namespace=namespace, manifests="app.yaml")
    assert run(image).status == "succeeded", run.log
    assert revision(admin, namespace) == "1"
    (tmp_path / "app.yaml").write_text(SETTINGS.replace("{greeting}", "bonjour"))
    result = run(image)  # the same image: only the ConfigMap changed
    assert result.status == "succeeded", run.log
    [web] = result.deployments
    assert web.result == "succeeded" and not web.reason.startswith("already running"), web
    assert revision(admin, namespace) == "2"  # new pods, which read the new value
    assert "deployment/web: ConfigMap settings changed; its pods restart" in run.log
    annotation = read(admin, namespace, "web")["spec"]["template"]["metadata"]["annotations"]
    assert "bonjour" not in json.dumps(annotation)
    again = run(image)  # nothing changed: no new revision, the annotation kept
    assert again.status == "succeeded" and revision(admin, namespace) == "2", run.log
    (tmp_path / "app.yaml").write_text(SETTINGS.replace("{greeting}", "hola"))
    off = run_with(
        tmp_path,
        settings,
        tools,
        namespace=namespace,
        manifests="app.yaml",
        restart_on_config_change="false",
    )
    assert off(image).status == "succeeded", off.log
    assert revision(admin, namespace) == "2"  # what happens without it: the pods keep the old value


# -- the environment's URL ------------------------------------------------------------------

HTTPROUTE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": "httproutes.gateway.networking.k8s.io",
        # gateway.networking.k8s.io is a protected group; the upstream CRDs carry this too
        "annotations": {
            "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"
        },
    },
    "spec": {
        "group": "gateway.networking.k8s.io",
        "names": {
            "kind": "HTTPRoute",
            "plural": "httproutes",
            "singular": "httproute",
            "listKind": "HTTPRouteList",
        },
        "scope": "Namespaced",
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


def gateway_api(admin: k8s.ApiClient) -> None:
    """A stand-in HTTPRoute CRD (only its kind matters here), once per cluster."""
    api = k8s.ApiextensionsV1Api(admin)
    try:
        api.create_custom_resource_definition(HTTPROUTE_CRD)
    except k8s.ApiException as e:
        if e.status != 409:
            raise
    for _ in range(100):
        crd = api.read_custom_resource_definition("httproutes.gateway.networking.k8s.io")
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        __import__("time").sleep(0.1)


@pytest.mark.parametrize("source", ["ingress", "httproute", "loadbalancer"])
def test_the_url_output_comes_from_an_ingress_a_route_or_a_load_balancer(
    admin: k8s.ApiClient,
    namespace: str,
    settings: dict[str, str],
    tools: dict[str, str],
    tmp_path: Path,
    source: str,
) -> None:
    objects = {
        "ingress": (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n"
            "  tls: [{hosts: [web.example.com], secretName: web-tls}]\n"
            "  rules: [{host: web.example.com}]\n"
        ),
        "httproute": (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n"
            "spec: {hostnames: [route.example.com]}\n"
        ),
        "loadbalancer": (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
            "spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 8080}]}\n"
        ),
    }
    expected = {
        "ingress": "https://web.example.com",
        "httproute": "https://route.example.com",
        "loadbalancer": "http://203.0.113.7:8080",
    }
    if source == "httproute":
        gateway_api(admin)
    if source == "loadbalancer":  # no cloud controller here: give the address as one would
        core = k8s.CoreV1Api(admin)
        core.create_namespaced_service(
            namespace,
            {
                "metadata": {"name": "web"},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "web"},
                    "ports": [{"port": 8080}],
                },
            },
        )
        core.patch_namespaced_service_status(
            "web", namespace, {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}
        )
    (tmp_path / "app.yaml").write_text(objects[source] + "---\n" + TWO.split("---")[0])
    run = run_with(tmp_path, settings, tools, namespace=namespace, manifests="app.yaml")
    result = run(ref("web", "u1"))
    assert result.status == "succeeded", run.log
    assert result.url == expected[source]
    assert f"Environment URL: {expected[source]}" in run.log
