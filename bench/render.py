"""Rendering benchmarks: deployer's render of a kustomize overlay and of a Helm chart
against the binary alone (issue 18: ratio <= 1.2).

"Ours" is everything between the inputs and the objects the rollout applies: the
kustomization-graph check (or the chart's link and schema check), the private
directories and scrubbed environment, the run of the same binary, the split of its
output, the parse with the manifest limits and the image substitution. The peer is
``kustomize build DIR`` / ``helm template …`` with the same flags, run straight.
Measured interleaved, median CPU time (this process and the binary) of
:data:`REPEAT` runs each, after one warm-up of each; the wall times are in the note.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Figure
from deployer.images import ImageSet
from deployer.manifests import rendered_manifests
from deployer.render import helm, kustomize
from deployer.render.helm import Capabilities, ChartRequest
from deployer.render.sources import helm_sources, kustomize_sources
from tests.conftest import read_testenv

REPEAT = 25
TARGET = 1.2
REGISTRY = "127.0.0.1:5000"
IMAGES = ImageSet(f"{REGISTRY}/web", f"{REGISTRY}/web@sha256:" + "a" * 64)
APPS = 10  # each: a Deployment, a Service, a generated ConfigMap and a generated Secret


def _overlay(root: Path) -> Path:
    """A base of APPS apps (40 objects) and an overlay with replicas, images and a patch."""
    base = root / "base"
    base.mkdir(parents=True)
    resources, generators = [], []
    for n in range(APPS):
        (base / f"app{n}.yaml").write_text(
            f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: app{n}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app{n}}}}}
  template:
    metadata: {{labels: {{app: app{n}}}}}
    spec:
      containers:
      - name: app
        image: {REGISTRY}/web:placeholder
        envFrom: [{{configMapRef: {{name: app{n}-config}}}}, {{secretRef: {{name: app{n}-secret}}}}]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app{n}}}
spec:
  selector: {{app: app{n}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""
        )
        resources.append(f"app{n}.yaml")
        generators.append(f"- name: app{n}-config\n  literals: [GREETING=hello-{n}, LEVEL=info]\n")
    secrets = "".join(f"- name: app{n}-secret\n  literals: [TOKEN=t{n}]\n" for n in range(APPS))
    (base / "kustomization.yaml").write_text(
        f"resources: [{', '.join(resources)}]\nconfigMapGenerator:\n{''.join(generators)}"
        f"secretGenerator:\n{secrets}"
    )
    overlay = root / "production"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\nnamespace: production\n"
        + "replicas:\n"
        + "".join(f"- {{name: app{n}, count: 3}}\n" for n in range(APPS))
        + f"images: [{{name: {REGISTRY}/web, newTag: v2}}]\n"
        + "patches:\n- target: {kind: Deployment}\n  patch: |\n"
        + "    - {op: add, path: /metadata/labels, value: {tier: web}}\n"
    )
    return overlay


_TEMPLATES = {
    "templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-{{ $.Values.name }}
  labels: {{- include "labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: '{{ .Release.Name }}'}}
  template:
    metadata:
      labels: {app: '{{ .Release.Name }}'}
    spec:
      containers:
      - name: web
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        envFrom: [{configMapRef: {name: '{{ .Release.Name }}-config'}}]
""",
    "templates/configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  labels: {{- include "labels" . | nindent 4 }}
data:
{{- range $k, $v := .Values.settings }}
  {{ $k }}: {{ $v | quote }}
{{- end }}
""",
    "templates/service.yaml": """apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  labels: {{- include "labels" . | nindent 4 }}
spec:
  selector: {app: '{{ .Release.Name }}'}
  ports: [{port: 80, targetPort: 8080}]
""",
    "templates/_helpers.tpl": """{{- define "labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
""",
}


def _chart(root: Path) -> Path:
    chart = root / "chart"
    for name, text in {
        "Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        "values.yaml": (
            f"name: web\nreplicas: 2\nimage: {{repository: {REGISTRY}/web, tag: v1}}\n"
            "settings: {A: '1', B: '2', C: '3'}\n"
        ),
        **_TEMPLATES,
    }.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    return chart


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the binaries)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _interleaved(
    ours: Callable[[], object], peer: Callable[[], object]
) -> tuple[float, float, str]:
    """Median CPU seconds of each (and a note with the wall-time medians).

    CPU time, not wall time: on a machine shared by several jobs the wall time of a
    50 ms run swings by half from one minute to the next; the CPU both sides use
    does not, and what deployer adds (checks, the box, the parse) is all CPU.
    """
    ours(), peer()  # warm the page cache and the binaries
    cpu: dict[str, list[float]] = {"ours": [], "peer": []}
    wall: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(REPEAT):
        for name, call in (("ours", ours), ("peer", peer)):
            started, spent = time.perf_counter(), _cpu()
            call()
            cpu[name].append(_cpu() - spent)
            wall[name].append(time.perf_counter() - started)
    note = (
        f"CPU s; wall medians {statistics.median(wall['ours']):.3f} vs "
        f"{statistics.median(wall['peer']):.3f} s"
    )
    return statistics.median(cpu["ours"]), statistics.median(cpu["peer"]), note


def _kustomize_figure(binary: str, root: Path) -> Figure:
    overlay = _overlay(root)

    def ours() -> int:
        checked = kustomize.check_kustomization(root, "production")
        text = kustomize.build(binary, checked, seconds=60)
        source = kustomize_sources(text, "production")
        return len(rendered_manifests(text, IMAGES, origin="kustomize", example="", source=source))

    def peer() -> bytes:
        return subprocess.run(
            [binary, "build", str(overlay)], check=True, capture_output=True
        ).stdout

    count = ours()
    mine, theirs, note = _interleaved(ours, peer)
    return Figure(
        f"render a {count}-object kustomize overlay (graph check, boxed build, parse, "
        "substitute) vs kustomize build",
        mine,
        theirs,
        TARGET,
        "s",
        note,
    )


def _helm_figure(binary: str, root: Path) -> Figure:
    chart = _chart(root)
    capabilities = Capabilities("v1.36.0", ("v1", "apps/v1", "apps/v1/Deployment"))
    request = ChartRequest(
        "chart", root, "shop", "production", sets=(("replicas", "3"), ("image.tag", "v2"))
    )
    flags = ["--namespace", "production", "--include-crds", "--skip-tests"]
    flags += ["--kube-version", capabilities.kube_version]
    flags += ["--api-versions", ",".join(capabilities.api_versions)]
    flags += ["--set", "replicas=3", "--set", "image.tag=v2"]

    def ours() -> int:
        text = helm.template(binary, request, capabilities, seconds=60)
        source = helm_sources(text, "chart")
        found = rendered_manifests(text, IMAGES, origin="helm-chart", example="", source=source)
        return len(helm.order_hooks(found))

    def peer() -> bytes:
        return subprocess.run(
            [binary, "template", "shop", str(chart), *flags], check=True, capture_output=True
        ).stdout

    count = ours()
    mine, theirs, note = _interleaved(ours, peer)
    return Figure(
        f"render a {count}-object Helm chart (link and schema check, boxed helm template, "
        "parse, substitute) vs helm template",
        mine,
        theirs,
        TARGET,
        "s",
        note,
    )


def run() -> list[Figure]:
    env = read_testenv()
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-render-") as folder:
        root = Path(folder).resolve()
        if env.get("DEPLOYER_KUSTOMIZE"):
            figures.append(_kustomize_figure(env["DEPLOYER_KUSTOMIZE"], root / "k"))
        if env.get("DEPLOYER_HELM"):
            (root / "h").mkdir()
            figures.append(_helm_figure(env["DEPLOYER_HELM"], root / "h"))
    return figures


if __name__ == "__main__":
    for figure in run():
        print(figure.row())
