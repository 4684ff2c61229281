"""What issue 18 adds around the rollout, on plain data and fakes: several images, the
config-hash annotation, the pull secret, the environment's URL, the new inputs."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from deployer.actions import ActionsIO
from deployer.cluster import Response
from deployer.config import INPUTS, input_env_name, load_config
from deployer.confighash import ANNOTATION, ConfigHasher, config_changed, consumed
from deployer.envurl import URL_ANNOTATION, environment_url, valid_url
from deployer.errors import ConfigError, PushError
from deployer.images import ImageSet
from deployer.manifests import Manifest
from deployer.pipeline import mask_secrets
from deployer.pullsecret import add_pull_secret, check_pull_secret
from deployer.push import verify_images
from deployer.rollout.apply import Applied
from deployer.rollout.extras import _set_templates, template_patch, warn_unused_images
from deployer.rollout.kinds import DEPLOYMENT
from deployer.rollout.state import Workload
from tests.fakecluster import FakeCluster, configmap
from tests.fakecluster import deployment as fake_deployment
from tests.helpers import ScriptedApi
from tests.unit.fake_rollout import REPO, FakeRun, ref
from tests.unit.test_rollout_orchestration import seeded

ROOT = Path(__file__).resolve().parents[2]
WEB = "ghcr.io/acme/web@sha256:" + "1" * 64
WORKER = "ghcr.io/acme/worker@sha256:" + "2" * 64
OTHER = "quay.io/acme/cron@sha256:" + "3" * 64


def deployment(name: str, *containers: tuple[str, str], **template: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": n, "image": i} for n, i in containers]}
    spec.update(template.pop("spec", {}))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {"template": {"metadata": template.pop("metadata", {}), "spec": spec}},
    }


# -- several images ---------------------------------------------------------------------


def test_each_repository_gets_its_own_image_wherever_it_appears() -> None:
    images = ImageSet("ghcr.io/acme/web", WEB, (WORKER,))
    doc = deployment(
        "app", ("web", "ghcr.io/acme/web:v1"), ("worker", "ghcr.io/acme/worker"), ("proxy", "envoy")
    )
    counts = images.substitute(doc)
    got = [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    assert got == [WEB, WORKER, "envoy"]
    assert counts == {WEB: 1, WORKER: 1}
    assert images.for_container("envoy") == WEB  # a named workload's only container


def test_a_named_workload_patch_sets_each_container_its_image() -> None:
    live = deployment("app", ("web", "ghcr.io/acme/web:old"), ("worker", "ghcr.io/acme/worker:old"))
    w = Workload(DEPLOYMENT, "prod", "app", ("web", "worker"), live, live)
    w.images = {"web": WEB, "worker": WORKER}
    patch = template_patch(w, live, WEB)
    assert patch == {
        "spec": {"containers": [{"name": "web", "image": WEB}, {"name": "worker", "image": WORKER}]}
    }
    done = deployment("app", ("web", WEB), ("worker", WORKER))
    assert template_patch(w, done, WEB) is None


def test_an_extra_image_nothing_refers_to_is_a_warning() -> None:
    live = deployment("app", ("web", "ghcr.io/acme/web:old"))
    w = Workload(DEPLOYMENT, "prod", "app", ("web",), live, live)
    w.images = {"web": WEB}
    out = io.StringIO()
    warn_unused_images(ActionsIO(out), (WORKER,), [w], [])
    assert "No manifest or container refers to ghcr.io/acme/worker (input 'images')" in (
        out.getvalue()
    )
    quiet = io.StringIO()
    w.images = {"web": WEB, "worker": WORKER}
    warn_unused_images(ActionsIO(quiet), (WORKER,), [w], [])
    assert quiet.getvalue() == ""


class Registry:
    """Stands in for the engine's distribution endpoint; records who got credentials."""

    def __init__(self, holds: Mapping[str, str]) -> None:
        self.holds = holds
        self.auth: dict[str, Any] = {}

    def inspect_distribution(self, image: str, **kwargs: Any) -> Mapping[str, Any]:
        self.auth[image] = kwargs.get("auth_config")
        if image not in self.holds:
            raise RuntimeError("manifest unknown: manifest unknown")
        mime = "application/vnd.oci.image.manifest.v1+json"
        return {"Descriptor": {"digest": self.holds[image], "mediaType": mime}}


def config_with(tmp_path: Path, **inputs: str) -> Any:
    env = {"GITHUB_WORKSPACE": str(tmp_path), "INPUT_IMAGE": "ghcr.io/acme/web"}
    env.update({input_env_name(k.replace("_", "-")): v for k, v in inputs.items()})
    return load_config(env)


def test_extra_images_are_read_back_and_credentials_stay_with_their_registry(
    tmp_path: Path,
) -> None:
    config = config_with(
        tmp_path,
        build="false",
        images=f"{WORKER}\n{OTHER}",
        registry_username="bob",
        registry_password="s3cret-pw",
    )
    registry = Registry({WORKER: WORKER.split("@")[1], OTHER: OTHER.split("@")[1]})
    verify_images(config, registry, ActionsIO(io.StringIO()), sleep=lambda _s: None)
    assert registry.auth[WORKER]["username"] == "bob"
    assert registry.auth[OTHER] is None  # quay.io never sees the ghcr.io password


def test_a_missing_extra_image_is_refused_naming_it(tmp_path: Path) -> None:
    config = config_with(tmp_path, build="false", images=WORKER)
    with pytest.raises(PushError) as caught:
        verify_images(config, Registry({}), ActionsIO(io.StringIO()), sleep=lambda _s: None)
    assert WORKER in caught.value.message and "manifest unknown" in caught.value.message


# -- inputs ------------------------------------------------------------------------------


def input_problems(tmp_path: Path, **inputs: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        config_with(tmp_path, **inputs)
    return {p.input: p.message() for p in caught.value.problems}


def test_one_source_of_manifests(tmp_path: Path) -> None:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "kustomization.yaml").write_text("resources: []\n")
    (tmp_path / "chart").mkdir()
    (tmp_path / "chart" / "Chart.yaml").write_text("name: web\n")
    found = input_problems(tmp_path, manifests="k8s/*.yaml", kustomize="k8s", helm_chart="chart")
    assert "cannot be used with 'manifests'" in found["kustomize"]
    assert "cannot be used with 'manifests'" in found["helm-chart"]


@pytest.mark.parametrize(
    ("inputs", "name", "problem"),
    [
        ({"kustomize": "nowhere"}, "kustomize", "does not exist in the workspace"),
        ({"kustomize": "../.."}, "kustomize", "leads outside the workspace"),
        ({"kustomize": "https://github.com/acme/k8s"}, "kustomize", "is a URL"),
        ({"helm_chart": "oci://ghcr.io/acme/charts/web"}, "helm-chart", "has no version"),
        ({"helm_chart": "https://charts.example.com/web"}, "helm-chart", "repository URL"),
        ({"helm_set": "a=1"}, "helm-set", "no effect without helm-chart"),
        ({"images": "ghcr.io/acme/worker:v1"}, "images", "has no digest"),
        ({"images": WEB}, "images", "is the repository of input 'image'"),
        ({"image_pull_secret": "Not_A_Name"}, "image-pull-secret", "not a valid Secret name"),
        ({"restart_on_config_change": "maybe"}, "restart-on-config-change", "not a boolean"),
    ],
)
def test_bad_new_inputs_are_named(
    tmp_path: Path, inputs: dict[str, str], name: str, problem: str
) -> None:
    assert problem in input_problems(tmp_path, **inputs)[name]


def test_chart_inputs_and_the_default_release(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        build="false",
        helm_chart="oci://127.0.0.1:5000/charts/web:0.1.0",
        helm_set="image.tag=v2\ndb.password=hunter2hunter2",
    )
    assert config.helm_release == "web"
    assert config.helm_set == (("image.tag", "v2"), ("db.password", "hunter2hunter2"))
    assert config.deploys and config.manifest_input == "helm-chart"


def test_secret_looking_helm_set_values_are_masked_first(tmp_path: Path) -> None:
    out = io.StringIO()
    env = {input_env_name("helm-set"): "replicaCount=3\ndb.password=hunter2hunter2"}
    mask_secrets(ActionsIO(out), env)
    masks = [line for line in out.getvalue().splitlines() if line.startswith("::add-mask::")]
    assert masks == ["::add-mask::hunter2hunter2"]


def test_readme_inputs_table_is_action_yml_is_the_code() -> None:
    import yaml

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Inputs", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.MULTILINE)
    assert rows == list(INPUTS)
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert list(action["inputs"]) == list(INPUTS)


# -- config changes roll -----------------------------------------------------------------


def test_every_way_a_pod_reads_config_is_found() -> None:
    template = {
        "spec": {
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [
                {
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-key"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-key"}}},
                        {"name": "C", "value": "plain"},
                    ],
                    "envFrom": [{"configMapRef": {"name": "cm-env"}}],
                }
            ],
            "volumes": [
                {"name": "v1", "configMap": {"name": "cm-vol"}},
                {"name": "v2", "secret": {"secretName": "s-vol"}},
                {
                    "name": "v3",
                    "projected": {
                        "sources": [
                            {"configMap": {"name": "cm-proj"}},
                            {"secret": {"name": "s-proj"}},
                        ]
                    },
                },
            ],
        }
    }
    assert consumed(template) == {
        ("Secret", "init-env"),
        ("ConfigMap", "cm-key"),
        ("Secret", "s-key"),
        ("ConfigMap", "cm-env"),
        ("ConfigMap", "cm-vol"),
        ("Secret", "s-vol"),
        ("ConfigMap", "cm-proj"),
        ("Secret", "s-proj"),
    }


def test_a_change_is_what_differs_from_the_live_object() -> None:
    live = {"kind": "ConfigMap", "metadata": {"resourceVersion": "7"}, "data": {"a": "1"}}
    same = {"kind": "ConfigMap", "metadata": {"resourceVersion": "8"}, "data": {"a": "1"}}
    assert not config_changed(live, same)
    assert config_changed(live, {**same, "data": {"a": "2"}})
    assert config_changed(None, same)


def test_the_hash_is_keyed_and_reveals_nothing() -> None:
    secret = [("Secret", "db", {"data": {"password": "MTIzNA=="}})]
    one, two = ConfigHasher(), ConfigHasher()
    assert one.digest(secret) == one.digest(list(reversed(secret)))
    assert one.digest(secret) != two.digest(secret)  # no table of known values can match it
    assert ConfigHasher(b"k").digest(secret) != ConfigHasher(b"k").digest(
        [("Secret", "db", {"data": {"password": "NTY3OA=="}})]
    )


def applied(doc: dict[str, Any], prior: dict[str, Any] | None) -> Applied:
    manifest = Manifest("app.yaml", doc, 0)
    return Applied(manifest, None, "prod", prior=prior, planned=doc)


def config_map(greeting: str) -> dict[str, Any]:
    meta = {"name": "settings", "namespace": "prod"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"g": greeting}}


def reads_settings(name: str, **extra: Any) -> dict[str, Any]:
    doc = deployment(name, ("app", WEB), **extra)
    doc["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "settings"}}
    ]
    return doc


def test_a_changed_config_map_annotates_its_readers_only() -> None:
    reader = applied(reads_settings("web"), None)
    other = applied(deployment("other", ("app", WEB)), None)
    items = [applied(config_map("bonjour"), config_map("hello")), reader, other]
    workloads = [
        Workload(DEPLOYMENT, "prod", "web", ("app",), None, None, True),
        Workload(DEPLOYMENT, "prod", "other", ("app",), None, None, True),
    ]
    out = io.StringIO()
    _set_templates(workloads, items, ConfigHasher(), None, ActionsIO(out))
    annotations = reader.manifest.doc["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{32}", annotations[ANNOTATION])
    assert "annotations" not in other.manifest.doc["spec"]["template"]["metadata"]
    assert "deployment/web: ConfigMap settings changed; its pods restart" in out.getvalue()


def test_an_unchanged_config_keeps_the_annotation_an_earlier_run_set() -> None:
    before = reads_settings("web", metadata={"annotations": {ANNOTATION: "abc"}})
    reader = applied(reads_settings("web"), before)
    items = [applied(config_map("hello"), config_map("hello")), reader]
    workloads = [Workload(DEPLOYMENT, "prod", "web", ("app",), before, before, True)]
    _set_templates(workloads, items, ConfigHasher(), None, None)
    annotations = reader.manifest.doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {ANNOTATION: "abc"}  # else the apply would drop it and roll


def test_a_named_workload_gets_the_hash_and_pull_secret_in_its_patch() -> None:
    live = reads_settings("web")
    w = Workload(DEPLOYMENT, "prod", "web", ("app",), live, live)
    items = [applied(config_map("bonjour"), config_map("hello"))]
    _set_templates([w], items, ConfigHasher(), "ghcr-pull", None)
    patch = template_patch(w, live, WEB)
    assert patch is not None
    assert patch["spec"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    assert ANNOTATION in patch["metadata"]["annotations"]
    assert patch["spec"]["containers"] == [{"name": "app", "image": WEB}]  # as it is


def test_restart_on_config_change_off_sets_nothing() -> None:
    reader = applied(reads_settings("web"), None)
    items = [applied(config_map("bonjour"), config_map("hello")), reader]
    w = Workload(DEPLOYMENT, "prod", "web", ("app",), None, None, True)
    _set_templates([w], items, None, None, None)
    assert "annotations" not in reader.manifest.doc["spec"]["template"]["metadata"]


# -- pull secrets ----------------------------------------------------------------------


def test_a_pull_secret_is_added_once() -> None:
    template: dict[str, Any] = {"spec": {"imagePullSecrets": [{"name": "other"}]}}
    assert add_pull_secret(template, "ghcr-pull")
    assert not add_pull_secret(template, "ghcr-pull")
    assert template["spec"]["imagePullSecrets"] == [{"name": "other"}, {"name": "ghcr-pull"}]


def secret_answer(kind: str) -> dict[str, Any]:
    return {"kind": "Secret", "type": kind, "data": {".dockerconfigjson": "e30="}}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Response(404, {}), "no Secret 'ghcr-pull' in namespace prod; create it: kubectl create"),
        (secret_answer("Opaque"), "has type 'Opaque', not kubernetes.io/dockerconfigjson"),
    ],
)
def test_a_missing_or_wrong_pull_secret_stops_the_run(answer: Any, problem: str) -> None:
    api = ScriptedApi(("GET", "secrets", answer))
    with pytest.raises(ConfigError) as caught:
        check_pull_secret(api, "ghcr-pull", ["prod"], [])  # type: ignore[arg-type]
    assert caught.value.problems[0].input == "image-pull-secret"
    assert problem in caught.value.message
    assert "e30=" not in caught.value.message


def test_a_pull_secret_that_may_not_be_read_is_a_warning() -> None:
    api = ScriptedApi(("GET", "secrets", Response(403, {})))
    warnings = check_pull_secret(api, "ghcr-pull", ["prod"], [])  # type: ignore[arg-type]
    assert "Cannot check that Secret ghcr-pull exists in namespace prod" in warnings[0]


# -- the environment's URL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://web.example.com", True),
        ("http://203.0.113.7:8080/health", True),
        ("https://[2001:db8::1]", True),
        ("https://user:token@web.example.com", False),
        ("https://user@web.example.com", False),
        ("javascript:alert(1)", False),
        ("ftp://web.example.com", False),
        ("https://", False),
        ("https://web.example.com/\n::error::x", False),
        ("https://exa mple.com", False),
        ("https://web.example.com:99999", False),
        ("https://" + "a" * 3000 + ".com", False),
    ],
)
def test_only_a_safe_http_url_becomes_the_output(url: str, ok: bool) -> None:
    assert (valid_url(url) == url) is ok


def ingress(host: str, tls: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"host": "*.wild.example.com"}, {"host": host}]}
    if tls:
        spec["tls"] = [{"hosts": [host], "secretName": "cert"}]
    return {"kind": "Ingress", "metadata": {"name": "web"}, "spec": spec}


ROUTE = {"kind": "HTTPRoute", "metadata": {"name": "web"}, "spec": {"hostnames": ["r.example.com"]}}
BALANCER = {
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"type": "LoadBalancer", "ports": [{"port": 8080}]},
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}},
}


@pytest.mark.parametrize(
    ("objects", "url"),
    [
        ([BALANCER, ROUTE, ingress("web.example.com", tls=True)], "https://web.example.com"),
        ([ingress("web.example.com", tls=False)], "http://web.example.com"),
        ([BALANCER, ROUTE], "https://r.example.com"),
        ([BALANCER], "http://203.0.113.7:8080"),
        ([{"kind": "Service", "metadata": {"name": "x"}, "spec": {"type": "ClusterIP"}}], ""),
    ],
)
def test_the_url_is_the_first_match_in_the_documented_order(
    objects: list[dict[str, Any]], url: str
) -> None:
    assert environment_url(objects)[0] == url


def test_the_annotation_wins_and_a_bad_one_is_skipped_and_named() -> None:
    good = {
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {URL_ANNOTATION: "https://app.example.com"}},
    }
    bad = {
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {URL_ANNOTATION: "https://u:p@evil"}},
    }
    url, where, refused = environment_url([bad, ingress("web.example.com", tls=True), good])
    assert url == "https://app.example.com"
    assert where == f"the {URL_ANNOTATION} annotation of Deployment web"
    assert refused == [f"the {URL_ANNOTATION} annotation of ConfigMap x"]


def test_the_url_output_is_written() -> None:
    from deployer.report import RunReport, outputs
    from deployer.rollout import RolloutResult

    report = RunReport(
        status="succeeded", rollout=RolloutResult("succeeded", (), (), "https://x.example.com")
    )
    assert outputs(report, redact=str)["url"] == "https://x.example.com"
    assert json.loads(outputs(RunReport(), redact=str)["workloads"]) == []


# -- rollback of what issue 18 adds, on the fake cluster ------------------------------------


def pull_secret(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": "default"},
        "data": {".dockerconfigjson": "e30="},
    }


def live_template(cluster: FakeCluster, name: str = "web") -> dict[str, Any]:
    found = cluster.get("Deployment", name)
    assert found is not None
    return dict(found["spec"]["template"])


def test_a_rollback_removes_the_pull_secret_the_run_added(tmp_path: Path) -> None:
    cluster = FakeCluster()
    seeded(cluster, pull_secret("ghcr-pull"), fake_deployment("web", ref("web", "v1")))
    before = live_template(cluster)
    run = FakeRun(cluster, tmp_path, deployments="web", image_pull_secret="ghcr-pull")
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    patches = [r for r in cluster.requests if r.method == "PATCH" and "/deployments/web" in r.path]
    assert any("ghcr-pull" in json.dumps(r.body) for r in patches), "the run never added it"
    after = live_template(cluster)
    assert "imagePullSecrets" not in after["spec"], after["spec"]
    assert after["spec"] == before["spec"]


def test_a_rollback_of_manifests_removes_the_added_pull_secret_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    cluster = FakeCluster()
    web = fake_deployment("web", ref("web", "v1"))
    web["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "theirs"}]
    seeded(cluster, pull_secret("ghcr-pull"), web)
    run = FakeRun(cluster, tmp_path, manifests="app.yaml", image_pull_secret="ghcr-pull")
    run.manifest("app.yaml", WEB_MANIFEST.format(repo=REPO, secrets="[{name: theirs}]"))
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    patches = [r for r in cluster.requests if r.method == "PATCH" and "/deployments/web" in r.path]
    assert any("ghcr-pull" in json.dumps(r.body) for r in patches), "the run never added it"
    after = live_template(cluster)
    assert after["spec"]["imagePullSecrets"] == [{"name": "theirs"}]
    assert after["spec"]["containers"][0]["image"] == ref("web", "v1")


WEB_MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      imagePullSecrets: {secrets}
      containers:
      - {{name: app, image: {repo}}}
"""

CONFIG_ONLY = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: {greeting}}}
---
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
      - name: app
        image: {image}
        envFrom: [{{configMapRef: {{name: settings}}}}]
"""


def reading_app(cluster: FakeCluster, annotations: dict[str, str] | None = None) -> None:
    web = fake_deployment("web", ref("web", "v1"))
    template = web["spec"]["template"]
    template["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    if annotations:
        template["metadata"]["annotations"] = annotations
    seeded(cluster, configmap("settings", {"greeting": "hello"}), web)


@pytest.mark.parametrize(
    "earlier", [{}, {ANNOTATION: "0123456789abcdef0123456789abcdef"}], ids=["first", "again"]
)
def test_a_rollback_puts_back_the_config_map_and_the_templates_config_hash(
    tmp_path: Path, earlier: dict[str, str]
) -> None:
    """A plain ConfigMap changed with a crash-looping image: both are put back."""
    cluster = FakeCluster()
    reading_app(cluster, earlier)
    before = live_template(cluster)
    run = FakeRun(cluster, tmp_path, manifests="app.yaml")
    run.manifest("app.yaml", CONFIG_ONLY.format(greeting="bonjour", image=REPO))
    result = run(ref("crash-loop-web", "v2"))
    assert result.status == "rolled-back", run.log
    assert "ConfigMap settings changed; its pods restart" in run.log  # the hash was set
    assert (cluster.get("ConfigMap", "settings") or {})["data"] == {"greeting": "hello"}
    after = live_template(cluster)
    assert after["metadata"].get("annotations", {}) == earlier
    assert after == before
