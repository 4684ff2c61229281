"""Where a run's manifests come from: ``manifests``, ``kustomize`` or ``helm-chart``.

Each source ends in the same ``list[Manifest]`` (images substituted), and from
there everything goes one way: the safe YAML limits of :mod:`deployer.manifests`,
cluster-scoped consent, the dry-run plan, apply, watch and the all-or-nothing
restore of :mod:`deployer.rollout`. The renderers run the trusted binaries on the
untrusted tree under :mod:`deployer.render.runner`'s box, after the checks of
:mod:`.kustomize` and :mod:`.helm`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from deployer.cluster import Kube
from deployer.config import Config
from deployer.images import ImageSet
from deployer.manifests import Manifest, load_manifests, rendered_manifests
from deployer.render import helm, kustomize
from deployer.render.capabilities import discover_capabilities

__all__ = ["RENDER_SECONDS", "render_manifests", "split_documents"]

RENDER_SECONDS = 60.0  # at most, for one kustomize build or helm pull + template
_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)
_HELM_SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)


def split_documents(text: str) -> Iterator[str]:
    """The YAML documents of a renderer's output (both write ``---`` lines between them).

    A ``---`` line in column 0 ends a document in YAML whatever came before it, so
    this split is YAML's own; each piece is then parsed with the manifest limits.
    """
    for piece in _SEPARATOR.split(text):
        if piece.strip():
            yield piece


def _kustomize_pieces(text: str, shown: str) -> Iterator[tuple[str, str]]:
    for number, piece in enumerate(split_documents(text), start=1):
        yield f"{shown} (kustomize output, document {number})", piece


def _helm_pieces(text: str, shown: str) -> Iterator[tuple[str, str]]:
    for number, piece in enumerate(split_documents(text), start=1):
        source = _HELM_SOURCE.search(piece)
        where = source.group(1).strip()[:200] if source else f"document {number}"
        yield f"{shown}: {where}", piece


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
        pieces = _kustomize_pieces(text, config.kustomize)
        return rendered_manifests(pieces, images, origin="kustomize", example="k8s/overlay")
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
        pieces = _helm_pieces(text, config.helm_chart[:100])
        found = rendered_manifests(pieces, images, origin="helm-chart", example="charts/web")
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
