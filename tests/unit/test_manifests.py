"""The ``manifests`` input offline: which files are read, and which objects are refused.

Issue 11: a directory's entries are resolved like a match (a link to a file outside
the workspace is never read), only regular files of bounded size are read, and
cluster-scoped kinds need ``allow-cluster-scoped: true``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from deployer.errors import ConfigError
from deployer.manifests import (
    MAX_FILE_BYTES,
    MAX_TOTAL_BYTES,
    Manifest,
    load_manifests,
    refuse_cluster_scoped,
)

REPO = "ghcr.io/acme/web"
IMAGE = "ghcr.io/acme/web@sha256:" + "ab" * 32
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {a: b}\n"
SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: runner-secret}\nstringData: {k: hush}\n"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace and, beside it, the runner's temp directory with a secret in it."""
    workspace, runner_temp = tmp_path / "workspace", tmp_path / "runner_temp"
    (workspace / "k8s").mkdir(parents=True)
    runner_temp.mkdir()
    (runner_temp / "secret.yaml").write_text(SECRET)
    return workspace, runner_temp


def load(workspace: Path, *patterns: str) -> list[Manifest]:
    return load_manifests(workspace, patterns, REPO, IMAGE)


def problems(workspace: Path, *patterns: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(workspace, *patterns)
    assert {p.input for p in caught.value.problems} == {"manifests"}
    return [p.problem for p in caught.value.problems]


def test_a_link_in_a_matched_directory_to_a_file_outside_is_never_read(
    layout: tuple[Path, Path],
) -> None:
    workspace, runner_temp = layout
    (workspace / "k8s" / "ok.yaml").write_text(CONFIGMAP)
    (workspace / "k8s" / "app.yaml").symlink_to(Path("../../runner_temp/secret.yaml"))
    assert (workspace / "k8s" / "app.yaml").read_text() == (runner_temp / "secret.yaml").read_text()
    found = problems(workspace, "k8s")
    assert found == ["'k8s/app.yaml' leads outside the workspace; only files inside it are read"]


@pytest.mark.parametrize("pattern", ["k8s/*.yaml", "k8s/app.yaml", "**/*.yaml", "k8s"])
def test_a_link_to_outside_is_refused_however_it_is_named(
    layout: tuple[Path, Path], pattern: str
) -> None:
    workspace, runner_temp = layout
    (workspace / "k8s" / "app.yaml").symlink_to(runner_temp / "secret.yaml")
    assert "'k8s/app.yaml' leads outside the workspace" in problems(workspace, pattern)[0]


def test_a_linked_directory_outside_is_refused(layout: tuple[Path, Path]) -> None:
    workspace, runner_temp = layout
    (workspace / "deploy").symlink_to(runner_temp)
    assert problems(workspace, "deploy") == [
        "'deploy' leads outside the workspace; only files inside it are read"
    ]


def test_links_inside_the_workspace_are_followed(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "base").mkdir()
    (workspace / "base" / "app.yaml").write_text(CONFIGMAP)
    (workspace / "k8s" / "app.yaml").symlink_to(Path("../base/app.yaml"))
    [manifest] = load(workspace, "k8s", "base/app.yaml")  # the same file once
    assert manifest.source == "k8s/app.yaml (document 1)"


def test_a_dangling_link_is_named(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "k8s" / "gone.yaml").symlink_to(workspace / "nowhere.yaml")
    assert problems(workspace, "k8s") == [
        "'k8s/gone.yaml' cannot be resolved (a dangling or looping link?)"
    ]


@pytest.mark.parametrize("pattern", ["k8s/pipe.yaml", "k8s"])
def test_only_regular_files_are_read(layout: tuple[Path, Path], pattern: str) -> None:
    workspace, _ = layout
    os.mkfifo(workspace / "k8s" / "pipe.yaml")  # reading it would block for ever
    assert problems(workspace, pattern) == ["'k8s/pipe.yaml' is not a regular file"]


def test_a_link_to_a_device_is_not_read(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "k8s" / "zero.yaml").symlink_to("/dev/zero")
    assert "'k8s/zero.yaml' leads outside the workspace" in problems(workspace, "k8s")[0]


def test_a_file_over_the_size_cap_is_refused_before_parsing(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "k8s" / "big.yaml").write_text(CONFIGMAP + "#" * MAX_FILE_BYTES + "\n")
    assert problems(workspace, "k8s/big.yaml") == [
        f"'k8s/big.yaml' is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB"
    ]


def test_all_files_together_are_capped(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    count = MAX_TOTAL_BYTES // (MAX_FILE_BYTES - 1024) + 1
    for number in range(count):
        (workspace / "k8s" / f"f{number:02}.yaml").write_text(
            CONFIGMAP + "#" * (MAX_FILE_BYTES - 1024) + "\n"
        )
    [problem] = problems(workspace, "k8s")
    assert problem == f"'k8s/f{count - 1:02}.yaml' goes over 16 MiB of manifests in all"


def test_a_file_that_is_not_utf8_is_named(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "k8s" / "latin1.yaml").write_bytes(b"kind: \xff\n")
    assert problems(workspace, "k8s") == ["'k8s/latin1.yaml' is not UTF-8 text"]


# -- cluster-scoped kinds -----------------------------------------------------------------


def docs(workspace: Path, text: str) -> list[Manifest]:
    (workspace / "k8s" / "all.yaml").write_text(text)
    return load(workspace, "k8s/all.yaml")


CLUSTER_ADMIN = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ci-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: production}]
"""


def never_asked(api_version: str, kind: str) -> bool:
    raise AssertionError(f"discovery asked about built-in {kind}")


def test_a_built_in_cluster_scoped_kind_is_refused_without_asking_the_cluster(
    layout: tuple[Path, Path],
) -> None:
    workspace, _ = layout
    manifests = docs(workspace, CLUSTER_ADMIN)
    assert manifests[0].cluster_scoped is True
    with pytest.raises(ConfigError) as caught:
        refuse_cluster_scoped(manifests, never_asked, allowed=False, namespace="production")
    [problem] = caught.value.problems
    assert problem.input == "manifests"
    assert problem.problem.startswith(
        "k8s/all.yaml (document 1) (ClusterRoleBinding ci-admin) is cluster-scoped: it would "
        "change the whole cluster, not only namespace production"
    )
    assert "allow-cluster-scoped: true" in problem.problem


def test_discovery_decides_for_custom_kinds_and_allowing_lists_them(
    layout: tuple[Path, Path],
) -> None:
    workspace, _ = layout
    manifests = docs(
        workspace,
        CONFIGMAP
        + "---\napiVersion: example.com/v1\nkind: Tenant\nmetadata: {name: t}\n"
        + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    )
    asked: list[str] = []

    def namespaced(api_version: str, kind: str) -> bool:
        asked.append(kind)
        return kind != "Tenant"

    with pytest.raises(ConfigError) as caught:
        refuse_cluster_scoped(manifests, namespaced, allowed=False, namespace="prod")
    assert [p.problem.split(" is ")[0] for p in caught.value.problems] == [
        "k8s/all.yaml (document 2) (Tenant t)"
    ]
    assert asked == ["ConfigMap", "Tenant", "Widget"]
    scoped = refuse_cluster_scoped(manifests, namespaced, allowed=True, namespace="prod")
    assert [m.name for m in scoped] == ["t"]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("v1", "Namespace"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        ("storage.k8s.io/v1", "StorageClass"),
    ],
)
def test_built_in_cluster_scoped_kinds_are_known(
    layout: tuple[Path, Path], api_version: str, kind: str
) -> None:
    workspace, _ = layout
    [manifest] = docs(
        workspace, f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n"
    )
    assert manifest.cluster_scoped is True


def test_a_same_named_kind_in_another_group_is_asked_about(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    [manifest] = docs(
        workspace, "apiVersion: example.com/v1\nkind: Namespace\nmetadata: {name: x}\n"
    )
    assert manifest.cluster_scoped is None
    assert refuse_cluster_scoped([manifest], lambda v, k: True, allowed=False, namespace="p") == []


# -- values: what is sent is JSON, as kubectl sends it ---------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("!!set {a}", "has a !!set value, which a Kubernetes object cannot hold; quote it"),
        ("!!binary aGVsbG8=", "has a !!binary value"),
        ("!!timestamp x", "has a value YAML cannot read (a bad date, number or tag); quote it"),
        ("2001-13-45", "has a value YAML cannot read"),
        ("!!int hush-secret", "has a value YAML cannot read"),
        ("1" * 5000, "has a value YAML cannot read"),
    ],
)
def test_a_value_with_no_json_form_is_named_never_quoted(
    layout: tuple[Path, Path], value: str, says: str
) -> None:
    workspace, _ = layout
    (workspace / "k8s" / "app.yaml").write_text(CONFIGMAP.replace("{a: b}", f"{{a: {value}}}"))
    [problem] = problems(workspace, "k8s")
    assert problem.startswith(f"'k8s/app.yaml' {says}")
    assert "hush" not in problem


def test_dates_are_sent_as_the_strings_kubectl_sends(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    [manifest] = docs(workspace, CONFIGMAP.replace("{a: b}", "{day: 2024-01-31, 2024-02-01: b}"))
    assert manifest.doc["data"] == {"day": "2024-01-31", "2024-02-01": "b"}


# -- ** patterns: bounded, and never walking out of the workspace ------------------------------


def test_recursive_patterns_do_not_follow_looping_links(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "k8s" / "app.yaml").write_text(CONFIGMAP)
    (workspace / "k8s" / "deep" / "er").mkdir(parents=True)
    (workspace / "k8s" / "deep" / "er" / "more.yaml").write_text(CONFIGMAP.replace("app", "more"))
    # Two links that loop: Python 3.11's glob walked them exponentially (a hung job).
    (workspace / "k8s" / "up").symlink_to("..")
    (workspace / "k8s" / "here").symlink_to(".")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "hidden.yaml").write_text(CONFIGMAP)
    started = time.monotonic()
    found = load(workspace, "**/*.yaml")
    assert time.monotonic() - started < 2
    assert [m.source for m in found] == [
        "k8s/app.yaml (document 1)",
        "k8s/deep/er/more.yaml (document 1)",
    ]


def test_a_recursive_pattern_below_a_link_to_outside_is_refused(
    layout: tuple[Path, Path],
) -> None:
    workspace, runner_temp = layout
    (workspace / "ext").symlink_to(runner_temp)
    assert problems(workspace, "ext/**/*.yaml") == [
        "'ext' leads outside the workspace; only files inside it are read"
    ]


def test_a_recursive_pattern_below_a_link_inside_is_walked(layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "infra" / "prod").mkdir(parents=True)
    (workspace / "infra" / "prod" / "app.yaml").write_text(CONFIGMAP)
    (workspace / "deploy").symlink_to("infra")
    [manifest] = load(workspace, "deploy/**/*.yaml")
    assert manifest.source == "deploy/prod/app.yaml (document 1)"


def test_a_realistic_file_just_under_the_cap_loads(layout: tuple[Path, Path]) -> None:
    """The caps leave room for real bundles: ~9,000 ConfigMaps of 20 keys in 4 MiB."""
    workspace, _ = layout
    doc = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{n}\n"
        "  labels: {{app: web, tier: backend}}\ndata:\n"
        + "".join(f"  key{i}: value-{i}\n" for i in range(20))
    )
    number = (MAX_FILE_BYTES - 2048) // (len(doc) + 8)  # "c{n}" grows to 4 digits, "---"
    text = "".join(doc.format(n=n) + "---\n" for n in range(number))
    assert MAX_FILE_BYTES - 64 * 1024 < len(text) < MAX_FILE_BYTES
    (workspace / "k8s" / "bundle.yaml").write_text(text)
    assert len(load(workspace, "k8s")) == number


def test_a_kind_defined_by_a_crd_among_the_manifests_takes_its_scope_from_it(
    layout: tuple[Path, Path],
) -> None:
    """Not served yet, so discovery cannot tell: the CRD in the same run says."""
    workspace, _ = layout
    crd = (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata: {name: tenants.example.com}\n"
        "spec: {group: example.com, scope: SCOPE, names: {kind: Tenant, plural: tenants}}\n"
    )
    tenant = "---\napiVersion: example.com/v1\nkind: Tenant\nmetadata: {name: t}\n"
    # The CRD itself is always cluster-scoped.
    for scope, expected in (
        ("Cluster", ["tenants.example.com", "t"]),
        ("Namespaced", ["tenants.example.com"]),
    ):
        manifests = docs(workspace, crd.replace("SCOPE", scope) + tenant)
        scoped = refuse_cluster_scoped(manifests, never_asked, allowed=True, namespace="p")
        assert [m.name for m in scoped] == expected
        assert manifests[1].cluster_scoped is (scope == "Cluster")


# -- issue 17.11: the namespace in effect, not only the input -----------------------------------


def _doc(name: str, namespace: str | None = None, kind: str = "ConfigMap") -> Manifest:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return Manifest(f"k8s/{name}.yaml (document 1)", {"apiVersion": "v1", "kind": kind,
                                                      "metadata": metadata}, 0)  # fmt: skip


def test_a_document_in_another_namespace_than_the_contexts_is_refused() -> None:
    """No namespace input: the run deploys to the kubeconfig context's namespace, and a
    manifest's own metadata.namespace may not send a document elsewhere."""
    from deployer.manifests import refuse_other_namespaces

    manifests = [_doc("same", "team-a"), _doc("unset"), _doc("away", "kube-system")]
    with pytest.raises(ConfigError) as caught:
        refuse_other_namespaces(manifests, "team-a", from_input=False)
    (problem,) = caught.value.problems
    assert problem.problem == (
        "k8s/away.yaml (document 1) (ConfigMap away) is in namespace kube-system, but this run "
        "deploys to namespace team-a (the kubeconfig context's, else default); remove its "
        "metadata.namespace or make the two agree"
    )
    with pytest.raises(ConfigError, match="but the namespace input is team-a"):
        refuse_other_namespaces(manifests, "team-a", from_input=True)


def test_documents_in_the_namespace_in_effect_and_cluster_scoped_ones_pass() -> None:
    from deployer.manifests import refuse_other_namespaces

    scoped = _doc("ns", "ignored-by-the-api", kind="Namespace")
    scoped.cluster_scoped = True
    refuse_other_namespaces([_doc("a", "default"), _doc("b"), scoped], "default", from_input=False)


def test_documents_in_a_namespace_the_manifests_create_pass() -> None:
    """A Namespace document (consented with allow-cluster-scoped) and objects in it: the
    run makes that namespace, so its objects are the run's, not elsewhere."""
    from deployer.manifests import refuse_other_namespaces

    made = _doc("made", kind="Namespace")
    made.cluster_scoped = True
    manifests = [_doc("cfg", "made"), made, _doc("away", "kube-system")]
    with pytest.raises(ConfigError) as caught:
        refuse_other_namespaces(manifests, "default", from_input=False)
    assert ["(ConfigMap away)" in p.problem for p in caught.value.problems] == [True]
