"""What a rollout sets in pod templates besides the image, and the environment's URL.

The glue between the stage and three small modules, so the stage calls one
function per concern:

- :func:`prepare_templates`: the config-hash annotation of :mod:`deployer.confighash`
  and the pull secret of :mod:`deployer.pullsecret`, written into the manifests'
  documents (so the apply carries them) or, for a workload named by
  ``deployments``/``workloads``, into :attr:`Workload.template_patch` (so the image
  patch carries them). Either way they are part of the change the rollback undoes.
- :func:`needs_patch`: whether a named workload's live template lacks any of it.
- :func:`find_url`: the ``url`` output (:mod:`deployer.envurl`) from the applied
  objects and the workloads, read again for a LoadBalancer's address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from deployer.actions import ActionsIO
from deployer.cluster import Kube, Resource, Response
from deployer.config import Config
from deployer.confighash import ANNOTATION, CONFIG_KINDS, ConfigHasher, config_changed, consumed
from deployer.envurl import environment_url
from deployer.errors import ClusterError
from deployer.images import ImageSet
from deployer.manifests import Manifest
from deployer.pullsecret import add_pull_secret, check_pull_secret, has_pull_secret
from deployer.rollout.apply import Applied, ManifestSet
from deployer.rollout.kinds import containers_of, images, template_of
from deployer.rollout.state import Workload

__all__ = [
    "find_url",
    "needs_patch",
    "prepare_templates",
    "report_url",
    "target_images",
    "template_patch",
    "warn_unused_images",
]

_SERVICES = Resource("", "v1", "services")


def target_images(
    template: Mapping[str, Any], containers: Iterable[str], run_images: ImageSet
) -> dict[str, str]:
    """Container → the image it gets: its repository's (``images`` input), else ``image``."""
    now = images(template)
    return {c: run_images.for_container(now.get(c, "")) for c in containers}


def _changed_configs(items: list[Applied]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """``(namespace, kind, name)`` → the new content of each ConfigMap/Secret the run changes."""
    found: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for item in items:
        if item.manifest.kind in CONFIG_KINDS and item.manifest.api_version == "v1":
            planned = item.planned or item.manifest.doc
            if config_changed(item.prior, planned):
                key = (item.namespace or "", item.manifest.kind, item.manifest.name)
                found[key] = planned
    return found


def _template_annotations(template: dict[str, Any]) -> dict[str, Any]:
    metadata = template.setdefault("metadata", {})
    found: dict[str, Any] = metadata.setdefault("annotations", {})
    return found


def _config_hash(
    w: Workload,
    template: Mapping[str, Any],
    changed: Mapping[tuple[str, str, str], Mapping[str, Any]],
    hasher: ConfigHasher | None,
    io: ActionsIO | None,
) -> str | None:
    """The annotation's new value when ``w`` reads a config object the run changes."""
    reads = consumed(template)
    used = [
        (k, n, changed[(w.namespace, k, n)]) for k, n in reads if (w.namespace, k, n) in changed
    ]
    if not used or hasher is None:
        return None
    if io is not None:
        names = ", ".join(sorted(f"{k} {n}" for k, n, _ in used))
        io.info(f"{w.display}: {names} changed; its pods restart to read it ({ANNOTATION})")
    return hasher.digest(used)


def _on_document(item: Applied, value: str | None, pull_secret: str | None) -> None:
    """Into a manifest workload's document: the apply carries it."""
    template = template_of(item.manifest.doc)
    own = (template.get("metadata") or {}).get("annotations") or {}
    live = template_of(item.prior) if item.prior else {}
    kept = ((live.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not value and kept and ANNOTATION not in own:
        value = kept  # an apply without it would remove it: a rollout for nothing
    if value:
        _template_annotations(template)[ANNOTATION] = value
    if pull_secret:
        add_pull_secret(template, pull_secret)


def _on_patch(w: Workload, value: str | None, pull_secret: str | None) -> None:
    """Into a named workload's patch: the image patch carries it."""
    if value:
        metadata = w.template_patch.setdefault("metadata", {})
        metadata.setdefault("annotations", {})[ANNOTATION] = value
    if pull_secret:
        w.template_patch.setdefault("spec", {})["imagePullSecrets"] = [{"name": pull_secret}]


def prepare_templates(
    kube: Kube,
    config: Config,
    workloads: list[Workload],
    applied: ManifestSet | None,
    io: ActionsIO,
    announce: bool,
) -> None:
    """Check the pull secret, then set it and the config hash on every workload the run
    changes; see the module docstring. ``announce``: log which config change restarts
    which workload (the check before the build is quiet)."""
    pull_secret = config.image_pull_secret
    items = applied.items if applied else []
    if pull_secret:
        manifests = [i.manifest for i in items]
        namespaces = {w.namespace for w in workloads}
        for warning in check_pull_secret(kube, pull_secret, namespaces, manifests):
            io.warning(warning, title="Pull secret not checked")
    hasher = ConfigHasher() if config.restart_on_config_change else None
    _set_templates(workloads, items, hasher, pull_secret, io if announce else None)
    if announce:
        warn_unused_images(io, config.images, workloads, [i.manifest for i in items])


def _set_templates(
    workloads: list[Workload],
    items: list[Applied],
    hasher: ConfigHasher | None,
    pull_secret: str | None,
    io: ActionsIO | None,
) -> None:
    docs = {(i.manifest.kind, i.namespace, i.manifest.name): i for i in items}
    changed = _changed_configs(items) if hasher is not None else {}
    for w in workloads:
        item = docs.get((w.kind.name, w.namespace, w.name))
        template = template_of(item.manifest.doc if item is not None else w.live or {})
        value = _config_hash(w, template, changed, hasher, io)
        if item is not None:
            _on_document(item, value, pull_secret)
        else:
            _on_patch(w, value, pull_secret)
    for item in items:
        if pull_secret and item.is_job and item.manifest.substituted:
            # a migration pulls our image too
            add_pull_secret(template_of(item.manifest.doc), pull_secret)


def template_patch(w: Workload, live: Mapping[str, Any], image: str) -> dict[str, Any] | None:
    """The ``spec.template`` of a named workload's strategic-merge patch: each container's
    image and the ``template_patch`` extras; None when the live template has them all."""
    template = template_of(live)
    now = images(template)
    if all(now.get(c) == w.image_for(c, image) for c in w.containers) and not needs_patch(
        template, w.template_patch
    ):
        return None
    init = {str(c.get("name")) for c in containers_of(template, init=False)}
    spec: dict[str, Any] = dict(w.template_patch.get("spec") or {})
    regular = [{"name": c, "image": w.image_for(c, image)} for c in w.containers if c in init]
    first = [{"name": c, "image": w.image_for(c, image)} for c in w.containers if c not in init]
    if regular:
        spec["containers"] = regular
    if first:
        spec["initContainers"] = first
    found: dict[str, Any] = {"spec": spec}
    if w.template_patch.get("metadata"):
        found["metadata"] = w.template_patch["metadata"]
    return found


def needs_patch(live_template: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether the live template lacks part of a named workload's ``template_patch``."""
    wanted = (patch.get("metadata") or {}).get("annotations") or {}
    have = (live_template.get("metadata") or {}).get("annotations") or {}
    if any(have.get(k) != v for k, v in wanted.items()):
        return True
    secrets = (patch.get("spec") or {}).get("imagePullSecrets") or []
    return any(not has_pull_secret(live_template, s["name"]) for s in secrets)


def find_url(
    kube: Kube, items: list[Applied], workloads: list[Workload]
) -> tuple[str, str, list[str]]:
    """The ``url`` output: see :func:`deployer.envurl.environment_url`. A LoadBalancer
    Service is read again: its address is assigned after the apply."""
    objects: list[Mapping[str, Any]] = []
    for item in items:
        obj = item.after
        if obj is None:
            continue
        if obj.get("kind") == "Service" and (obj.get("spec") or {}).get("type") == "LoadBalancer":
            fresh = kube.request(
                "GET",
                _SERVICES,
                verb="get",
                namespace=item.namespace,
                name=item.manifest.name,
                expect=frozenset({403, 404}),
            )
            obj = obj if isinstance(fresh, Response) else fresh
        objects.append(obj)
    objects += [w.live for w in workloads if w.live is not None and not w.from_manifest]
    return environment_url(objects)


def report_url(kube: Kube, io: ActionsIO, items: list[Applied], workloads: list[Workload]) -> str:
    """The ``url`` output, logged with where it came from; never fails the run."""
    try:
        url, where, refused = find_url(kube, items, workloads)
    except ClusterError as e:
        io.warning(f"No url output: {e.message}", title="No environment URL")
        return ""
    for name in refused:
        io.warning(
            f"{name} names an environment URL that is not an http(s) URL with a host (or has "
            "a user or password in it); it is not used",
            title="Environment URL ignored",
        )
    if url:
        io.info(f"Environment URL: {url} (from {where})")
    return url


def warn_unused_images(
    io: ActionsIO, extra: tuple[str, ...], workloads: list[Workload], manifests: list[Manifest]
) -> None:
    """A warning per ``images`` entry that no manifest and no container gets (it would do
    nothing: a typo in the repository, or a workload missing from the inputs)."""
    used = {image for w in workloads for image in w.images.values()}
    used |= {image for m in manifests for image, n in (m.images or {}).items() if n}
    for unused in (r for r in extra if r not in used):
        io.warning(
            f"No manifest or container refers to {unused.split('@')[0]} (input 'images'); "
            "it is not deployed",
            title="Image not substituted",
        )
