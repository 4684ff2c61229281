"""connect(), the namespace, and the one place API errors are translated."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import urllib3

from deployer.cluster import (
    DEPLOYMENTS,
    PODS,
    ApiTransport,
    Kube,
    Response,
    connect,
    label_selector,
)
from deployer.config import Config, load_config
from deployer.errors import AccessDenied, ClusterError

TOKEN = "s3cr3t-token-value-1234567890"

KUBECONFIG = f"""
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: {TOKEN}}}
contexts:
- name: ctx
  context: {{cluster: c, user: u, namespace: from-context}}
current-context: ctx
"""


def make_config(tmp_path: Path, **inputs: str) -> Config:
    env = {
        "INPUT_IMAGE": "ghcr.io/acme/web",
        "INPUT_BUILD": "false",
        "GITHUB_WORKSPACE": str(tmp_path),
    }
    for name, value in inputs.items():
        if name == "KUBECONFIG":
            env["KUBECONFIG"] = value
        else:
            env["INPUT_" + name.upper().replace("_", "-")] = value
    return load_config(env)


def test_connect_from_yaml_input_uses_context_namespace(tmp_path: Path) -> None:
    api, namespace = connect(make_config(tmp_path, kubeconfig=KUBECONFIG))
    assert namespace == "from-context"
    assert api.configuration.host == "https://127.0.0.1:6443"


def test_connect_from_base64_input_and_namespace_input_wins(tmp_path: Path) -> None:
    encoded = base64.b64encode(KUBECONFIG.encode()).decode()
    _, namespace = connect(make_config(tmp_path, kubeconfig=encoded, namespace="prod"))
    assert namespace == "prod"


def test_connect_from_kubeconfig_path(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG.replace("namespace: from-context", "namespace: file-ns"))
    _, namespace = connect(make_config(tmp_path, KUBECONFIG=str(path)))
    assert namespace == "file-ns"


def test_connect_without_anything_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match="set the 'kubeconfig' input"):
        connect(make_config(tmp_path))


def test_a_broken_kubeconfig_never_shows_its_credentials(tmp_path: Path) -> None:
    broken = KUBECONFIG.replace("cluster: c, user: u", "cluster: missing, user: u")
    with pytest.raises(ClusterError) as caught:
        connect(make_config(tmp_path, kubeconfig=broken))
    assert TOKEN not in caught.value.message
    assert "could not be loaded" in caught.value.message


def test_label_selector_renders_match_labels_and_expressions() -> None:
    selector = {
        "matchLabels": {"app": "web", "tier": "fe"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["a", "b"]},
            {"key": "x", "operator": "NotIn", "values": ["c"]},
            {"key": "y", "operator": "Exists"},
            {"key": "z", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector(selector) == "app=web,tier=fe,env in (a,b),x notin (c),y,!z"


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self._data = json.dumps(body).encode() if not isinstance(body, bytes) else body

    def read(self) -> bytes:
        return self._data


class FakeApi:
    """An ApiClient seam: answers (method, url) from a list of canned responses."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str]] = []
        self.configuration = type("C", (), {"host": "https://k8s.example"})()

    def param_serialize(self, method: str, resource_path: str, **kwargs: Any) -> tuple[Any, ...]:
        query = "&".join(f"{k}={v}" for k, v in kwargs.get("query_params") or [])
        return (method, resource_path + ("?" + query if query else ""), {}, None, None)

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, url))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def kube(api: FakeApi) -> Kube:
    return Kube(ApiTransport(api), cancel=threading.Event(), backoff=0.001)  # type: ignore[arg-type]


def test_forbidden_names_verb_resource_and_namespace() -> None:
    api = FakeApi(FakeResponse(403, {"message": 'deployments.apps "web" is forbidden'}))
    with pytest.raises(AccessDenied) as caught:
        kube(api).request("PATCH", DEPLOYMENTS, verb="patch", namespace="prod", name="web")
    assert caught.value.message == (
        "The credentials may not patch deployments.apps web in namespace prod (403 Forbidden)"
    )


def test_unauthorized_is_access_denied() -> None:
    with pytest.raises(AccessDenied, match="did not accept the credentials"):
        kube(FakeApi(FakeResponse(401, {}))).request("GET", PODS, verb="list", namespace="x")


def test_5xx_and_dropped_connections_are_retried_then_succeed() -> None:
    api = FakeApi(
        FakeResponse(503, {"message": "etcd leader changed"}),
        urllib3.exceptions.ProtocolError("connection reset"),
        FakeResponse(200, {"ok": True}),
    )
    assert kube(api).request("GET", PODS, verb="list", namespace="x") == {"ok": True}
    assert len(api.calls) == 3


def test_retries_are_capped() -> None:
    api = FakeApi(*[FakeResponse(500, {"message": "boom"}) for _ in range(10)])
    with pytest.raises(ClusterError, match="gave up after 6 tries"):
        kube(api).request("GET", PODS, verb="list", namespace="x")
    assert len(api.calls) == 6


def test_expected_statuses_come_back_as_responses() -> None:
    answer = kube(FakeApi(FakeResponse(404, {"reason": "NotFound"}))).request(
        "GET", DEPLOYMENTS, verb="get", namespace="x", name="y", expect=frozenset({404})
    )
    assert answer == Response(404, {"reason": "NotFound"})


def test_other_errors_say_what_failed_with_the_server_message() -> None:
    api = FakeApi(FakeResponse(422, {"message": "spec.template: Invalid value"}))
    with pytest.raises(ClusterError) as caught:
        kube(api).request("PATCH", DEPLOYMENTS, verb="patch", namespace="x", name="web")
    assert not isinstance(caught.value, AccessDenied)
    assert caught.value.message == (
        "Cannot patch deployments.apps web in namespace x (422 Unprocessable Entity): "
        "spec.template: Invalid value"
    )
