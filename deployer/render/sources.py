"""Where a run's manifests come from: ``manifests``, ``kustomize`` or ``helm-chart``.

Each source ends in the same ``list[Manifest]`` (images substituted), and from
there everything goes one way: the safe YAML limits of :mod:`deployer.manifests`,
cluster-scoped consent, the dry-run plan, apply, watch and the all-or-nothing
restore of :mod:`deployer.rollout`. The renderers run the trusted binaries on the
untrusted tree under :mod:`deployer.render.runner`'s box, after the checks of
:mod:`.kustomize` and :mod:`.helm`.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable

from deployer.cluster import Kube
from deployer.config import Config
from deployer.images import ImageSet
from deployer.manifests import Manifest, load_manifests, rendered_manifests
from deployer.render import helm, kustomize
from deployer.render.capabilities import discover_capabilities

__all__ = [
    "RENDER_SECONDS",
    "document_sources",
    "helm_sources",
    "kustomize_sources",
    "render_manifests",
]

RENDER_SECONDS = 60.0  # at most, for one kustomize build or helm pull + template
_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?$")
_HELM_SOURCE = re.compile(r"^# Source: (.+)$")


def document_sources(text: str, name: Callable[[int, list[str]], str]) -> Callable[[int], str]:
    """``line → source`` for a renderer's output: ``name(number, lines)`` gets the
    document's number (from 1) and its lines up to the given one.

    Both renderers write a ``---`` line in column 0 between documents (where YAML
    itself ends a document), so the lines between two of them are one document.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _SEPARATOR.match(line)]
    leading = 1 if starts and not "".join(lines[: starts[0]]).strip() else 0

    def source(line: int) -> str:
        before = bisect.bisect_right(starts, line)
        first = starts[before - 1] + 1 if before else 0
        return name(before + 1 - leading, lines[first : line + 1])

    return source


def kustomize_sources(text: str, shown: str) -> Callable[[int], str]:
    return document_sources(text, lambda n, _lines: f"{shown} (kustomize output, document {n})")


def helm_sources(text: str, shown: str) -> Callable[[int], str]:
    """Named by helm's ``# Source:`` comment: the chart's template file."""

    def name(number: int, lines: list[str]) -> str:
        found = next((m for m in map(_HELM_SOURCE.match, lines) if m), None)
        return f"{shown}: {found.group(1).strip()[:200] if found else f'document {number}'}"

    return document_sources(text, name)


def render_manifests(
    config: Config,
    images: ImageSet,
    kube: Kube,
    namespace: str,
    cancel: threading.Event | None = None,
) -> list[Manifest]:
    """The run's objects from whichever source the inputs name (none: an empty list).

    Raises :class:`~deployer.errors.ConfigError` naming the input for anything wrong
    with the tree, the chart or the renderer's output.
    """
    seconds = max(1.0, min(RENDER_SECONDS, kube.deadline - kube.clock.monotonic()))
    if config.kustomize:
        root = kustomize.check_kustomization(config.workspace, config.kustomize)
        text = kustomize.build(config.kustomize_binary, root, seconds=seconds, cancel=cancel)
        source = kustomize_sources(text, config.kustomize)
        return rendered_manifests(
            text, images, origin="kustomize", example="k8s/overlay", source=source
        )
    if config.helm_chart:
        request = helm.ChartRequest(
            chart=config.helm_chart,
            workspace=config.workspace,
            release=config.helm_release,
            namespace=namespace,
            values=config.helm_values,
            sets=config.helm_set,
            registry=config.registry,
            username=config.registry_username,
            password=(
                config.registry_password.get_secret_value() if config.registry_password else None
            ),
        )
        capabilities = discover_capabilities(kube)
        text = helm.template(
            config.helm_binary,
            request,
            capabilities,
            seconds=seconds,
            cancel=cancel,
            proxy_env=config.proxy_env,
        )
        source = helm_sources(text, config.helm_chart[:100])
        found = rendered_manifests(
            text, images, origin="helm-chart", example="charts/web", source=source
        )
        return helm.order_hooks(found)
    if config.manifests:
        return load_manifests(
            config.workspace,
            config.manifests,
            images.main_repository,
            images.main_image,
            images=images,
        )
    return []
