"""The render sources on untrusted trees: kustomization graph checks, chart checks,
helm-set secrets, hooks, the boxed runner, and the split of a renderer's output.

The binaries themselves run in tests/integration/test_render.py.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from deployer.errors import Cancelled, ConfigError
from deployer.images import ImageSet
from deployer.manifests import rendered_manifests
from deployer.render.helm import (
    HOOK,
    check_chart,
    looks_secret,
    order_hooks,
    set_arguments,
)
from deployer.render.kustomize import check_kustomization, is_remote
from deployer.render.runner import ToolFailed, private_dirs, run_tool
from deployer.render.sources import helm_sources, kustomize_sources

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: ghcr.io/acme/web:latest}]
"""


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def problems(workspace: Path, directory: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check_kustomization(workspace, directory)
    assert {p.input for p in caught.value.problems} == {"kustomize"}
    return caught.value.message


# -- the kustomization graph -------------------------------------------------------------


def test_an_overlay_on_a_base_with_generators_and_patches_passes(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [deployment.yaml]\n",
            "base/deployment.yaml": DEPLOYMENT,
            "overlay/kustomization.yaml": (
                "resources: [../base]\n"
                "patches: [{path: replicas.yaml}]\n"
                "configMapGenerator:\n- name: cfg\n  files: [greeting=greeting.txt]\n"
                "  envs: [app.env]\n"
                "images: [{name: ghcr.io/acme/web, newTag: v2}]\n"
            ),
            "overlay/replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\n",
            "overlay/greeting.txt": "hello",
            "overlay/app.env": "A=1",
        },
    )
    assert check_kustomization(tmp_path, "overlay") == (tmp_path / "overlay").resolve()


@pytest.mark.parametrize(
    "entry",
    [
        "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0",
        "http://example.com/app.yaml",
        "ssh://git@github.com/acme/k8s.git",
        "git@github.com:acme/k8s.git//base",
        "github.com/acme/k8s/base?ref=main",
        "git::https://example.com/repo",
        "file:///etc/kubernetes",
    ],
)
def test_a_remote_base_is_refused_naming_the_file_and_the_entry(tmp_path: Path, entry: str) -> None:
    tree(tmp_path, {"overlay/kustomization.yaml": f"resources:\n- {entry}\n"})
    message = problems(tmp_path, "overlay")
    assert "overlay/kustomization.yaml" in message
    assert entry[:60] in message
    assert "remote" in message


def test_remote_forms_are_recognised() -> None:
    assert is_remote("https://x/y")
    assert is_remote("git@github.com:a/b")
    assert is_remote("github.com/a/b")
    assert not is_remote("../base")
    assert not is_remote("deployment.yaml")


def test_a_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    tree(tmp_path, {"overlay/kustomization.yaml": "resources: [missing-base]\n"})
    assert "does not exist in the workspace" in problems(tmp_path, "overlay")


def test_a_base_above_the_workspace_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    tree(outside, {"kustomization.yaml": "resources: [secret.yaml]\n", "secret.yaml": DEPLOYMENT})
    workspace = tmp_path / "ws"
    tree(workspace, {"overlay/kustomization.yaml": "resources: [../../outside]\n"})
    message = problems(workspace, "overlay")
    assert "resources entry '../../outside' leads outside the workspace" in message


def test_a_link_out_of_the_workspace_is_refused_wherever_it_is(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.env"
    secret.write_text("TOKEN=x")
    workspace = tree(
        tmp_path / "ws",
        {
            "base/kustomization.yaml": "resources: [deployment.yaml]\n",
            "overlay/kustomization.yaml": (
                "resources: [../base]\nconfigMapGenerator:\n- name: c\n  envs: [creds.env]\n"
            ),
        },
    )
    (workspace / "base" / "deployment.yaml").symlink_to(secret)
    (workspace / "overlay" / "creds.env").symlink_to(secret)
    message = problems(workspace, "overlay")
    assert "base/kustomization.yaml: resources entry 'deployment.yaml' leads outside" in message
    assert "configMapGenerator file 'creds.env' leads outside" in message


def test_a_linked_base_directory_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", {"kustomization.yaml": "resources: []\n"})
    workspace = tree(tmp_path / "ws", {"overlay/kustomization.yaml": "resources: [base]\n"})
    (workspace / "overlay" / "base").symlink_to(outside)
    assert "resources entry 'base' leads outside the workspace" in problems(workspace, "overlay")


@pytest.mark.parametrize(
    "function",
    [
        "exec: {path: ./fn.sh}",
        "container: {image: example.com/fn:1, network: true}",
    ],
)
def test_a_krm_function_is_refused(tmp_path: Path, function: str) -> None:
    tree(
        tmp_path,
        {
            "overlay/kustomization.yaml": "transformers: [fn.yaml]\n",
            "overlay/fn.yaml": (
                "apiVersion: example.com/v1\nkind: Evil\nmetadata:\n  name: x\n  annotations:\n"
                f"    config.kubernetes.io/function: |\n      {function}\n"
            ),
        },
    )
    message = problems(tmp_path, "overlay")
    assert "overlay/fn.yaml: transformers has a KRM function (Evil" in message
    assert "never runs programs from the repository" in message


def test_an_inline_krm_function_and_helm_charts_are_refused(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "overlay/kustomization.yaml": (
                "generators:\n- |\n  apiVersion: v1\n  kind: Gen\n  metadata:\n    name: g\n"
                "    annotations:\n      config.kubernetes.io/function: 'exec: {path: x}'\n"
                "helmCharts: [{name: web, repo: https://charts.example.com}]\n"
            )
        },
    )
    message = problems(tmp_path, "overlay")
    assert "generators has a KRM function" in message
    assert "'helmCharts' runs helm inside kustomize" in message


def test_a_builtin_transformer_file_is_checked_for_its_paths(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "overlay/kustomization.yaml": "transformers: [patch.yaml]\n",
            "overlay/patch.yaml": (
                "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\n"
                "path: https://example.com/patch.yaml\n"
            ),
        },
    )
    assert "PatchTransformer) path 'https://example.com/patch.yaml' is remote" in problems(
        tmp_path, "overlay"
    )


def test_a_cycle_and_a_shared_base_are_walked_once(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "a/kustomization.yaml": "resources: [../b, ../common]\n",
            "b/kustomization.yaml": "resources: [../a, ../common]\n",
            "common/kustomization.yaml": "resources: []\n",
        },
    )
    check_kustomization(tmp_path, "a")  # kustomize itself says a cycle is a cycle


def test_hostile_yaml_in_a_kustomization_is_bounded(tmp_path: Path) -> None:
    laughs = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n'
    tree(tmp_path, {"overlay/kustomization.yaml": laughs})
    assert "uses YAML aliases" in problems(tmp_path, "overlay")


# -- charts ----------------------------------------------------------------------------


def test_a_chart_link_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("key")
    chart = tree(tmp_path / "ws" / "chart", {"Chart.yaml": "name: web\n", "templates/a.yaml": ""})
    (chart / "files").mkdir()
    (chart / "files" / "key").symlink_to(secret)
    with pytest.raises(ConfigError) as caught:
        check_chart(chart, tmp_path / "ws", "chart")
    assert "chart/files/key links outside the workspace" in caught.value.message


def test_a_linked_directory_inside_the_workspace_is_entered(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    secret = tmp_path / "secret"
    secret.write_text("s")
    shared = tree(workspace / "shared", {"x.tpl": ""})
    (shared / "leak").symlink_to(secret)
    chart = tree(workspace / "chart", {"Chart.yaml": "name: web\n"})
    (chart / "templates").symlink_to(shared)
    with pytest.raises(ConfigError) as caught:
        check_chart(chart, workspace, "chart")
    assert "chart/templates/leak links outside" in caught.value.message


def test_a_schema_ref_to_a_file_or_url_is_refused(tmp_path: Path) -> None:
    chart = tree(
        tmp_path / "chart",
        {
            "Chart.yaml": "name: web\n",
            "values.schema.json": (
                '{"properties": {"a": {"$ref": "file:///etc/passwd"}, '
                '"b": {"$ref": "https://example.com/s.json"}, "c": {"$ref": "#/$defs/c"}}}'
            ),
        },
    )
    with pytest.raises(ConfigError) as caught:
        check_chart(chart, tmp_path, "chart")
    message = caught.value.message
    assert "refers to 'file:///etc/passwd'" in message
    assert "refers to 'https://example.com/s.json'" in message
    assert "#/$defs/c" not in message


@pytest.mark.parametrize(
    ("key", "value", "secret"),
    [
        ("db.password", "hunter2hunter2", True),
        ("auth.existingSecret", "my-secret-name", True),
        ("apiKey", "abcd", True),
        ("global.imagePullSecrets[0].name", "ghcr", False),  # the last segment counts
        ("authEnabled", "true", False),
        ("tokenTTL", "300", False),
        ("replicaCount", "3", False),
        ("image.tag", "ghp_" + "a" * 36, True),
        ("webhook", "https://user:pass@hooks.example.com/x", True),
        ("greeting", "hello", False),
        ("password", "", False),
    ],
)
def test_which_helm_set_values_look_secret(key: str, value: str, secret: bool) -> None:
    assert looks_secret(key, value) is secret


def test_a_secret_helm_set_value_goes_to_helm_in_a_private_file(tmp_path: Path) -> None:
    with private_dirs("test") as dirs:
        argv = set_arguments([("replicaCount", "3"), ("db.password", "hunter2hunter2")], dirs)
        assert argv[:2] == ["--set", "replicaCount=3"]
        assert argv[2] == "--set-file"
        key, _, path = argv[3].partition("=")
        assert key == "db.password"
        assert Path(path).read_text() == "hunter2hunter2"
        assert Path(path).stat().st_mode & 0o077 == 0
        assert "hunter2" not in " ".join(argv)


def manifests(text: str, origin: str = "helm-chart") -> list:  # type: ignore[type-arg]
    source = helm_sources(text, "chart") if origin == "helm-chart" else kustomize_sources(text, "k")
    return rendered_manifests(
        text,
        ImageSet("ghcr.io/acme/web", "ghcr.io/acme/web@sha256:1"),
        origin=origin,
        example="",
        source=source,
    )


def job(name: str, hook: str, weight: str = "0") -> str:
    return (
        f"apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations:\n"
        f"    {HOOK}: {hook}\n    helm.sh/hook-weight: '{weight}'\n"
    )


def test_pre_install_and_pre_upgrade_hooks_come_last_by_weight() -> None:
    text = "---\n".join(
        [
            job("seed", "pre-install,pre-upgrade", "5"),
            DEPLOYMENT,
            job("migrate", "pre-upgrade", "-1"),
        ]
    )
    ordered = order_hooks(manifests(text))
    assert [m.name for m in ordered] == ["web", "migrate", "seed"]


def test_other_hooks_are_an_input_error_naming_them() -> None:
    text = "---\n".join([DEPLOYMENT, job("notify", "post-install,post-upgrade")])
    with pytest.raises(ConfigError) as caught:
        order_hooks(manifests(text))
    assert caught.value.problems[0].input == "helm-chart"
    assert "Job notify) is a helm hook 'post-install, post-upgrade'" in caught.value.message


def test_rendered_documents_are_named_by_their_source() -> None:
    text = "---\n# Source: web/templates/a.yaml\n" + DEPLOYMENT + "\n---\n\n--- # x\n" + DEPLOYMENT
    found = manifests(text)
    assert [m.source for m in found] == ["chart: web/templates/a.yaml", "chart: document 3"]
    assert found[0].doc["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/acme/web@sha256:1"
    )
    plain = manifests(DEPLOYMENT + "---\n" + DEPLOYMENT.replace("web}", "api}"), origin="kustomize")
    assert [m.source for m in plain] == [
        "k (kustomize output, document 1)",
        "k (kustomize output, document 2)",
    ]


def test_aliases_in_rendered_output_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: &n x}\ndata: {a: *n}\n")
    assert "the helm-chart output" in caught.value.message and "aliases" in caught.value.message


def test_a_rendered_object_without_a_name_names_the_input() -> None:
    with pytest.raises(ConfigError) as caught:
        manifests("apiVersion: v1\nkind: ConfigMap\n", origin="kustomize")
    assert caught.value.problems[0].input == "kustomize"


# -- the runner ------------------------------------------------------------------------


def test_the_tool_gets_a_scrubbed_environment_and_no_network(tmp_path: Path) -> None:
    os.environ["AWS_SECRET_ACCESS_KEY"] = "job-secret"
    with private_dirs("test") as dirs:
        out = run_tool(
            [sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
            env={**dirs.base_env(), "HTTPS_PROXY": "http://127.0.0.1:9"},
            cwd=dirs.tmp,
            seconds=30,
            max_output=1 << 20,
        )
    env = __import__("json").loads(out)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"].startswith(str(dirs.root)) and env["PATH"] == str(dirs.nothing)


def test_a_tool_past_its_deadline_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-lived"
    script = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3); open(\"{marker}\", \"w\")']); "
        "time.sleep(60)"
    )
    started = time.monotonic()
    with pytest.raises(ToolFailed, match="did not finish in 1 s"):
        run_tool([sys.executable, "-c", script], env={}, cwd=tmp_path, seconds=1, max_output=100)
    assert time.monotonic() - started < 5
    time.sleep(3.5)
    assert not marker.exists()


def test_output_over_the_cap_kills_the_tool(tmp_path: Path) -> None:
    script = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    with pytest.raises(ToolFailed, match="output is larger than 1 MiB"):
        run_tool(
            [sys.executable, "-c", script], env={}, cwd=tmp_path, seconds=30, max_output=1 << 20
        )


def test_a_cancel_stops_the_tool_at_once(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_tool(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={},
            cwd=tmp_path,
            seconds=60,
            max_output=100,
            cancel=cancel,
        )
    assert time.monotonic() - started < 3


def test_a_failing_tool_reports_its_last_stderr_lines(tmp_path: Path) -> None:
    script = "import sys; sys.stderr.write('first\\nError: accumulating resources\\n'); sys.exit(1)"
    with pytest.raises(ToolFailed) as caught:
        run_tool([sys.executable, "-c", script], env={}, cwd=tmp_path, seconds=30, max_output=100)
    assert "exit code 1" in caught.value.message
    assert caught.value.stderr.endswith("Error: accumulating resources")
