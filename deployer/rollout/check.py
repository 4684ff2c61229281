"""Step 1, check: what the run will change, read and checked before anything changes.

:func:`check` loads the manifests, refuses what may not be applied (cluster-scoped
objects unless allowed, a document in another namespace), dry-runs every document
(:class:`~deployer.rollout.apply.ManifestSet`), reads every workload the inputs or
the manifests name, resolves the containers to update, refuses paused workloads and
asks for the rights the rollout needs. It returns a :class:`Plan`; any problem
raises ``ConfigError``/``AccessDenied``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.cluster import Kube, Resource, Response, discover
from deployer.config import INPUTS
from deployer.errors import ClusterError, ConfigError, InputProblem
from deployer.images import ImageSet
from deployer.manifests import (
    Manifest,
    refuse_cluster_scoped,
    refuse_other_namespaces,
    same_repository,
)
from deployer.render.sources import render_manifests
from deployer.rollout.access import check_access
from deployer.rollout.apply import Applied, ManifestSet
from deployer.rollout.argo import judged_by_rollouts, resolve_ref
from deployer.rollout.context import ANNOTATION_PREFIX, Context
from deployer.rollout.extras import prepare_templates, target_images
from deployer.rollout.flagger import attach_canaries
from deployer.rollout.kinds import (
    DEPLOYMENT,
    KINDS,
    ROLLOUT,
    Kind,
    containers_of,
    kind_named,
    template_of,
)
from deployer.rollout.state import Workload
from deployer.secretvalues import secret_values

__all__ = [
    "CHANGE_CAUSE",
    "Plan",
    "change_annotations",
    "check",
    "read_object",
    "resolve_containers",
]

CHANGE_CAUSE = "kubernetes.io/change-cause"
_Target = tuple[str, Kind, str, str]  # (input, kind, namespace, name)


@dataclass
class Plan:
    """What the run will change, as the cluster has it now."""

    workloads: list[Workload] = field(default_factory=list)
    manifests: list[Manifest] = field(default_factory=list)
    applied: ManifestSet | None = None  # every manifest document with what it replaces


def read_object(kube: Kube, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as the API server has it now; None when there is none."""
    answer = kube.request(
        "GET", resource, verb="get", namespace=namespace, name=name, expect=frozenset({404})
    )
    return None if isinstance(answer, Response) else dict(answer)


def resolve_containers(
    obj: Mapping[str, Any],
    wanted: str | None,
    repository: str | ImageSet,
    kind: str = "Deployment",
) -> tuple[str, ...] | InputProblem:
    """The (init) containers to update, or the problem with the ``container`` input.

    Without ``container``: those running ``repository`` (an ImageSet: any of the run's
    repositories, ``image``'s and the ``images`` input's), else the only container.
    """
    repositories = (repository,) if isinstance(repository, str) else repository.repositories
    repository = repositories[0]
    name = (obj.get("metadata") or {}).get("name", "")
    template = template_of(obj)
    names = [str(c.get("name")) for c in containers_of(template, init=False)]
    every = [str(c.get("name")) for c in containers_of(template)]
    listed = ", ".join(names)
    if wanted:
        if wanted in every:
            return (wanted,)
        return InputProblem(
            "container",
            f"{kind} '{name}' has no container '{wanted}' (it has: {listed})",
            names[0] if names else INPUTS["container"][1],
        )
    matching = tuple(
        str(c.get("name"))
        for c in containers_of(template)
        if any(same_repository(str(c.get("image", "")), r) for r in repositories)
    )
    if matching:
        return matching
    if len(names) == 1:
        return (names[0],)
    return InputProblem(
        "container",
        f"{kind} '{name}' has containers {listed} and none runs {repository}; "
        "say which one to update",
        names[0] if names else INPUTS["container"][1],
    )


def change_annotations(ctx: Context) -> dict[str, str]:
    """The change annotations every changed workload (and migration Job) gets."""
    github = ctx.config.github
    cause = f"deployer: {ctx.image}"
    extra = []
    if github.sha:
        extra.append(f"commit {github.sha[:7]}")
    if github.run_url:
        extra.append(f"run {github.run_url}")
    if extra:
        cause += f" ({', '.join(extra)})"
    found = {CHANGE_CAUSE: cause, ANNOTATION_PREFIX + "image": ctx.image}
    if github.commit_url:
        found[ANNOTATION_PREFIX + "commit"] = github.commit_url
    if github.run_url:
        found[ANNOTATION_PREFIX + "run-url"] = github.run_url
    return found


def load(ctx: Context, *, warn: bool) -> list[Manifest]:
    """The run's objects from ``manifests``, ``kustomize`` or ``helm-chart``
    (:func:`deployer.render.sources.render_manifests`), images substituted (warnings once)."""
    config = ctx.config
    found = render_manifests(config, ctx.images, ctx.kube, ctx.namespace, ctx.cancel)
    if not found:
        return []
    for m in found:  # every run, before anything can quote one (a pod's log, the API server)
        for value in secret_values(m.doc):
            ctx.io.mask(value)
    for m in found if warn else ():
        verified = kind_named(m.api_version, m.kind) is not None or (
            m.kind == "Job" and m.api_version == "batch/v1"
        )
        if m.substituted and not verified:
            ctx.io.warning(
                f"{m.kind} {m.name} ({m.source}) gets the new image but is not watched or "
                "rolled back: only Deployments, StatefulSets, DaemonSets, Argo Rollouts and "
                "Jobs are",
                title="Not verified",
            )
    if warn and not any(m.substituted for m in found):
        ctx.io.warning(
            f"No image reference to {config.image.repository} in the manifests; "
            "they are applied unchanged",
            title="Image not substituted",
        )
    return found


def _refuse_misplaced(ctx: Context, manifests: list[Manifest]) -> None:
    discovered: dict[str, list[Any]] = {}
    refuse_cluster_scoped(
        manifests,
        lambda version, kind: discover(ctx.kube, version, kind, discovered).namespaced,
        allowed=ctx.config.allow_cluster_scoped,
        namespace=ctx.namespace,
    )
    # The namespace in effect (input, else the context's, else default), not the input only.
    refuse_other_namespaces(manifests, ctx.namespace, from_input=bool(ctx.config.namespace))


def _manifest_set(
    ctx: Context, manifests: list[Manifest]
) -> tuple[ManifestSet | None, dict[tuple[str, str, str], Applied]]:
    """The checked manifests, and the workload documents among them by (kind, ns, name)."""
    if not manifests:
        return None, {}
    applied = ManifestSet(ctx.kube, ctx.io, ctx.namespace, manifests)
    workloads: dict[tuple[str, str, str], Applied] = {}
    for item in applied.items:
        kind = kind_named(item.manifest.api_version, item.manifest.kind)
        if kind is not None or item.is_job:
            metadata = item.manifest.doc.setdefault("metadata", {})
            metadata.setdefault("annotations", {}).update(change_annotations(ctx))
        if kind is not None:
            workloads[(kind.lower, item.namespace or ctx.namespace, item.manifest.name)] = item
    applied.check()
    return applied, workloads


def _targets(ctx: Context, documents: dict[tuple[str, str, str], Applied]) -> list[_Target]:
    """Every workload the inputs name, then those the manifests put the image in."""
    found: list[_Target] = [
        ("deployments", DEPLOYMENT, ctx.namespace, name) for name in ctx.config.deployments
    ]
    for entry in ctx.config.workloads:
        kind, _, name = entry.rpartition("/")
        if (KINDS[kind or "deployment"], name) not in [(k, n) for _, k, _, n in found]:
            found.append(("workloads", KINDS[kind or "deployment"], ctx.namespace, name))
    for (lower, ns, name), item in documents.items():
        if item.manifest.substituted and (KINDS[lower], ns, name) not in [
            (k, n, m) for _, k, n, m in found
        ]:
            found.append((item.manifest.origin, KINDS[lower], ns, name))
    return found


def _not_found(kube: Kube, source: str, kind: Kind, namespace: str, name: str) -> InputProblem:
    hint = ""
    try:
        listing = kube.request("GET", kind.resource, verb="list", namespace=namespace)
        names = sorted(d["metadata"]["name"] for d in listing.get("items") or [])
        hint = f" (it has: {', '.join(names[:20])})" if names else " (it has none)"
    except ClusterError:
        pass
    return InputProblem(
        source,
        f"no {kind.name} '{name}' in namespace {namespace}{hint}",
        INPUTS[source][1] if source in INPUTS else "",
    )


def _workload(ctx: Context, target: _Target, item: Applied | None) -> Workload | InputProblem:
    source, kind, ns, name = target
    live = read_object(ctx.kube, kind.resource, ns, name)
    if live is None and item is None:
        return _not_found(ctx.kube, source, kind, ns, name)
    doc = item.manifest.doc if item is not None else live
    assert doc is not None
    paused = (doc.get("spec") or {}).get("paused") or ((live or {}).get("spec") or {}).get("paused")
    if paused:
        return InputProblem(
            source,
            f"{kind.name} '{name}' in namespace {ns} is paused; resume it first "
            f"({kind.command(kind.resume_command, ns, name)})",
            INPUTS[source][1],
        )
    holder = None
    if kind is ROLLOUT and live is not None and item is None:
        ref = resolve_ref(ctx.kube, ns, live)
        if isinstance(ref, str):
            return InputProblem(
                source, f"Rollout '{name}' in namespace {ns}: {ref}", INPUTS[source][1]
            )
        if ref is not None:
            holder, live = ref
            doc = live
    found = resolve_containers(doc, ctx.config.container, ctx.images, kind.name)
    if isinstance(found, InputProblem):
        return found
    w = Workload(kind, ns, name, found, live, live, from_manifest=item is not None)
    w.images = target_images(template_of(doc), found, ctx.images)
    w.holder = holder
    return w


def check(ctx: Context, manifests: list[Manifest], *, announce: bool = True) -> Plan:
    """Read and check everything the run will change; raise for any problem."""
    _refuse_misplaced(ctx, manifests)
    applied, documents = _manifest_set(ctx, manifests)
    plan = Plan(manifests=manifests, applied=applied)
    problems: list[InputProblem] = []
    for target in _targets(ctx, documents):
        _, kind, ns, name = target
        found = _workload(ctx, target, documents.get((kind.lower, ns, name)))
        if isinstance(found, InputProblem):
            problems.append(found)
        else:
            plan.workloads.append(found)
    if problems:
        raise ConfigError(problems)
    say = ctx.io.info if announce else None  # the check before the build is quiet
    plan.workloads = judged_by_rollouts(ctx.kube, say, plan.workloads, documents)
    attach_canaries(ctx, plan.workloads, manifests, say)
    prepare_templates(ctx.kube, ctx.config, plan.workloads, applied, ctx.io, announce)
    check_access(ctx.kube, ctx.io, plan.workloads, ctx.config.rollback_on_failure)
    for w in plan.workloads if announce else ():
        ctx.io.info(
            f"{w.display} ({w.namespace}): {', '.join(w.containers)}: "
            f"{w.previous_image or '(new)'} -> {w.new_images(ctx.image)}"
        )
    return plan
