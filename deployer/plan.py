"""The dry-run plan: what a run would change, object by object, as a reviewer reads it.

Every object the run would apply is compared with the live one: the "after" side is
the API server's own dry run of the run's server-side apply, so both sides are as
the server stores them (defaults filled in, admission applied) and a defaulted field
never shows as a change. A workload named by ``deployments``/``workloads`` is only
patched (its images), so its "after" is the live object with the new images.

Pure parts: :func:`compare` (normalise, hide Secret values, diff, images) and
:class:`Plan` (the header, the Markdown of ``plan``, the JSON of ``changes``).
One function asks the cluster: :func:`ask_cluster`.

Left out of every comparison, as server-set noise: ``status``, ``metadata.``
``managedFields``/``resourceVersion``/``generation``/``uid``/``creationTimestamp``/
``selfLink``/``deletionTimestamp``/``deletionGracePeriodSeconds``, the controllers'
``deployment.kubernetes.io/*`` annotations, the Job controller's uid labels, and
deployer's own annotations
(``kubernetes.io/change-cause``, ``deployer.dev/*``: they change on every run).
A Secret's ``data``/``stringData`` values and any object's
``kubectl.kubernetes.io/last-applied-configuration`` (which holds them too) are
replaced by ``(hidden)``/``(hidden, changed)`` before anything is diffed, so no
value reaches a diff, in any encoding.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from deployer.actions import ActionsIO, cut_markdown
from deployer.cluster import Kube, Resource, Response
from deployer.errors import ClusterError
from deployer.markdown import (
    LINE_CHARS,
    WRAP_COLUMNS,
    clip,
    clip_middle,
    code,
    fenced,
    short_image,
    wrapped,
)
from deployer.secretvalues import SECRET_FIELDS, is_secret, secret_values

__all__ = [
    "HIDDEN",
    "HIDDEN_CHANGED",
    "PLAN_BYTES",
    "ImageChange",
    "ObjectChange",
    "Plan",
    "ask_cluster",
    "compare",
    "normalised",
    "write_log",
]

PLAN_BYTES = 64 * 1024  # the ``plan`` output and the PR comment's plan
CHANGES_BYTES = 512 * 1024  # the ``changes`` output (a job's outputs may total 1 MB)
DIFF_LINES = 80  # lines of one object's diff shown
DIFF_INPUT_LINES = 20_000  # larger objects are not diffed line by line (difflib is quadratic)
NAMES_SHOWN = 30  # names listed in one line (unchanged, cluster-scoped)
IMAGE_ROWS = 50
LOG_BYTES = 256 * 1024  # diffs printed to the log

HIDDEN = "(hidden)"
HIDDEN_CHANGED = "(hidden, changed)"
SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
SERVER_ANNOTATION_PREFIXES = ("deployment.kubernetes.io/",)
OWN_ANNOTATIONS = ("kubernetes.io/change-cause",)
OWN_ANNOTATION_PREFIXES = ("deployer.dev/",)
HIDDEN_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
GENERATED_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")

ACTIONS = ("create", "change", "replace", "unchanged", "unknown")
_VERBS = {
    "create": "to create",
    "change": "to change",
    "replace": "to replace",
    "unchanged": "unchanged",
    "unknown": "not readable",
}


@dataclass(frozen=True)
class ImageChange:
    """One container whose image the run would set."""

    container: str
    before: str  # "" when the object or the container is new
    after: str


@dataclass(frozen=True)
class ObjectChange:
    """What the run would do to one object, and the diff that shows it."""

    kind: str
    namespace: str  # "" for a cluster-scoped object
    name: str
    action: str  # one of ACTIONS
    source: str  # "k8s/app.yaml (document 2)", or the input that names the workload
    diff: tuple[str, ...] = ()
    images: tuple[ImageChange, ...] = ()
    cluster_scoped: bool = False
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def as_output(self) -> dict[str, str]:
        """One entry of the ``changes`` output."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "action": self.action,
        }


# -- normalise -----------------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _annotation_kept(key: str) -> bool:
    return not (
        key in OWN_ANNOTATIONS
        or key.startswith(OWN_ANNOTATION_PREFIXES)
        or key.startswith(SERVER_ANNOTATION_PREFIXES)
    )


def _without_generated(node: Any) -> Any:
    """Without ``creationTimestamp: null`` (some clients' pod templates) and the Job
    controller's uid labels (a new uid on every dry run of a new Job): noise."""
    if isinstance(node, dict):
        return {
            k: _without_generated(v)
            for k, v in node.items()
            if not (k == "creationTimestamp" and v is None) and k not in GENERATED_LABELS
        }
    if isinstance(node, list):
        return [_without_generated(v) for v in node]
    return node


def normalised(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``obj`` without server-set noise and deployer's own annotations (a deep copy)."""
    if obj is None:
        return None
    found = _without_generated(copy.deepcopy(dict(obj)))
    found.pop("status", None)
    meta = _mapping(found.get("metadata"))
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = _mapping(meta.get("annotations"))
    kept = {k: v for k, v in annotations.items() if _annotation_kept(str(k))}
    if kept:
        meta["annotations"] = kept
    else:
        meta.pop("annotations", None)
    return dict(found)


def _hide(before: dict[str, Any] | None, after: dict[str, Any] | None, path: Sequence[str]) -> None:
    """Replace the values of the mapping at ``path`` on both sides by markers, in place.

    A marker on the "after" side says whether the value differs from the "before"
    one, so a changed value still shows as a changed line, never as its value.
    """

    def holder(obj: dict[str, Any] | None) -> dict[str, Any] | None:
        node: Any = obj
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else None

    last = path[-1]
    old_holder, new_holder = holder(before), holder(after)
    old = old_holder.get(last) if old_holder is not None else None
    new = new_holder.get(last) if new_holder is not None else None
    if old_holder is not None and last in old_holder:
        old_holder[last] = _markers(old, None)
    if new_holder is not None and last in new_holder:
        new_holder[last] = _markers(new, old if old_holder is not None else None)


def _markers(value: Any, before: Any) -> Any:
    if isinstance(value, dict):
        earlier = before if isinstance(before, dict) else {}
        return {
            k: HIDDEN if before is None or (k in earlier and earlier[k] == v) else HIDDEN_CHANGED
            for k, v in value.items()
        }
    return HIDDEN if before is None or before == value else HIDDEN_CHANGED


def _hidden(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Both sides with every Secret value replaced by a marker."""
    paths: list[tuple[str, ...]] = [("metadata", "annotations", a) for a in HIDDEN_ANNOTATIONS]
    if any(obj is not None and is_secret(obj) for obj in (before, after)):
        paths += [(field,) for field in SECRET_FIELDS]
    for path in paths:
        _hide(before, after, path)
    return before, after


# -- compare -------------------------------------------------------------------------------------


def _pod_spec(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    spec = _mapping(obj.get("spec"))
    if obj.get("kind") == "Pod":
        return spec
    if "jobTemplate" in spec:  # CronJob
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    return _mapping(_mapping(spec.get("template")).get("spec"))


def _images(obj: Mapping[str, Any] | None) -> dict[str, str]:
    pod = _pod_spec(obj)
    found: dict[str, str] = {}
    for field in ("initContainers", "containers"):
        containers = pod.get(field)
        for c in containers if isinstance(containers, list) else []:
            if isinstance(c, dict) and isinstance(c.get("image"), str):
                found[str(c.get("name", ""))] = c["image"]
    return found


def _image_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[ImageChange, ...]:
    old, new = _images(before), _images(after)
    return tuple(
        ImageChange(name, old.get(name, ""), image)
        for name, image in new.items()
        if old.get(name) != image
    )


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a ConfigMap's file) as ``|`` blocks: one diff line per line."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def _yaml_lines(obj: Mapping[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    text = yaml.dump(
        dict(obj),
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,
    )
    return text.splitlines()


def _diff(label: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    old, new = _yaml_lines(before), _yaml_lines(after)
    if len(old) + len(new) > DIFF_INPUT_LINES:
        return [f"({len(old)} lines live, {len(new)} planned: too large to show line by line)"]
    lines = list(
        difflib.unified_diff(
            old,
            new,
            fromfile=f"{label} (live)" if before is not None else "(absent)",
            tofile=f"{label} (planned)",
            lineterm="",
            n=3,
        )
    )
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"… ({len(lines) - DIFF_LINES} more lines of this diff)"]
    return lines


def compare(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    source: str,
    namespace: str = "",
    replace: bool = False,
    cluster_scoped: bool = False,
    note: str = "",
) -> ObjectChange:
    """What applying ``after`` over ``before`` (``None``: absent) would change."""
    kind = str(after.get("kind", ""))
    name = str(_mapping(after.get("metadata")).get("name", ""))
    old, new = _hidden(normalised(before), normalised(after))
    if before is None:
        action = "create"
    elif replace:
        action = "replace"
    else:
        action = "unchanged" if old == new else "change"
    diff = () if action == "unchanged" else tuple(_diff(f"{kind}/{name}", old, new))
    return ObjectChange(
        kind=kind,
        namespace=namespace,
        name=name,
        action=action,
        source=source,
        diff=diff,
        images=_image_changes(before, after),
        cluster_scoped=cluster_scoped,
        note=note,
    )


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Every object a run would apply or patch, in the order it would."""

    image: str
    objects: tuple[ObjectChange, ...]

    def count(self, action: str) -> int:
        return sum(1 for o in self.objects if o.action == action)

    def headline(self) -> str:
        """``2 to create, 1 to change, 3 unchanged``."""
        parts = [
            f"{self.count(a)} {_VERBS[a]}"
            for a in ACTIONS
            if self.count(a) or a in ("create", "change", "unchanged")
        ]
        return ", ".join(parts)

    def changes(self) -> list[dict[str, str]]:
        return [o.as_output() for o in self.objects]

    def changes_json(self, limit: int = CHANGES_BYTES) -> str:
        """The ``changes`` output: a JSON list, cut at whole entries to ``limit`` bytes."""
        entries: list[str] = []
        used = 2
        for entry in self.changes():
            text = json.dumps(entry)
            used += len(text.encode()) + 2
            if used > limit:
                break
            entries.append(text)
        return "[" + ", ".join(entries) + "]"

    def markdown(self, budget: int = PLAN_BYTES) -> str:
        """The plan for a summary or a PR comment: at most ``budget`` bytes."""
        return _render(self, budget)


def _names(objects: Sequence[ObjectChange]) -> str:
    shown = ", ".join(f"{code(o.kind, limit=63)} {code(o.name, limit=120)}" for o in objects)
    more = len(objects) - NAMES_SHOWN
    return shown if more <= 0 else f"{shown} and {more} more"


def _head(plan: Plan) -> list[str]:
    lines = [f"**Plan:** {plan.headline()}."]
    scoped = [o for o in plan.objects if o.cluster_scoped]
    if scoped:
        lines += [
            "",
            "Cluster-scoped objects (allowed by `allow-cluster-scoped`): "
            f"{_names(scoped[:NAMES_SHOWN])}.",
        ]
    pinned = "@sha256:" in plan.image
    how = (
        "pinned by digest"
        if pinned
        else "a tag: a real run pushes it and deploys it by the digest the registry answers with"
    )
    lines += ["", f"Image: {code(plan.image)} ({how})."]
    rows = [(o, i) for o in plan.objects for i in o.images]
    if rows:
        lines += ["", "| Workload | Container | Now | Planned |", "|---|---|---|---|"]
        for o, change in rows[:IMAGE_ROWS]:
            before = code(short_image(change.before), limit=80, cell=True) or "new"
            lines.append(
                f"| {code(clip_middle(o.kind.lower() + '/' + o.name, 40), cell=True)} "
                f"| {code(clip_middle(change.container, 40), cell=True)} | {before} "
                f"| {code(short_image(change.after), limit=80, cell=True)} |"
            )
        if len(rows) > IMAGE_ROWS:
            lines += ["", f"… and {len(rows) - IMAGE_ROWS} more images in the `changes` output."]
    return [*lines, ""]


def _section(o: ObjectChange) -> list[str]:
    where = f" in {code(o.namespace, limit=63)}" if o.namespace else " (cluster-scoped)"
    lines = [
        f"#### {o.action}: {code(o.kind, limit=63)} {code(o.name, limit=253)}{where}",
        "",
        f"From {code(o.source, limit=300)}." + (f" {o.note}" if o.note else ""),
        "",
    ]
    if o.diff:
        shown = [piece for line in o.diff for piece in _diff_line(line)]
        lines += [fenced("\n".join(shown), max_lines=3 * DIFF_LINES, language="diff"), ""]
    return lines


def _diff_line(line: str) -> list[str]:
    """A long diff line in pieces that keep its ``+``/``-`` (GitHub colours by it)."""
    line = clip(line, LINE_CHARS)
    if len(line) <= WRAP_COLUMNS // 2 or line.startswith(("---", "+++", "@@")):
        return [line]
    sign, rest = line[:1], line[1:]
    return [sign + piece for piece in wrapped(rest, WRAP_COLUMNS - 1)]


_FOOTER = (
    "<sub>Each object compared with the API server's dry run of this run's apply; "
    "left out: status, managedFields, resourceVersion, generation, uid, creationTimestamp "
    "and deployer's own annotations. Secret values are never shown.</sub>"
)


def _render(plan: Plan, budget: int) -> str:
    text = "\n".join(_head(plan))
    unchanged = [o for o in plan.objects if o.action == "unchanged"]
    tail = [f"Unchanged: {_names(unchanged[:NAMES_SHOWN])}.", ""] if unchanged else []
    tail.append(_FOOTER)
    reserve = len("\n".join(tail).encode()) + 400
    left_out = 0
    for o in plan.objects:
        if o.action == "unchanged":
            continue
        block = "\n" + "\n".join(_section(o))
        if left_out or len(text.encode()) + len(block.encode()) + reserve > budget:
            left_out += 1
            continue
        text += block
    if left_out:
        text += (
            f"\n{left_out} more changed objects are not shown, to keep the plan under "
            f"{budget // 1024} KiB: the `changes` output lists every object.\n"
        )
    text += "\n" + "\n".join(tail) + "\n"
    if len(text.encode()) > budget:  # the parts are capped; this is the last guard
        text = cut_markdown(text, budget)
    return text


# -- the cluster ---------------------------------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Manifest(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def doc(self) -> dict[str, Any]: ...
    @property
    def cluster_scoped(self) -> bool | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...


class AppliedObject(Protocol):
    """One manifest document as the rollout checked it (``deployer.rollout.apply.Applied``)."""

    @property
    def manifest(self) -> _Manifest: ...
    @property
    def resource(self) -> Resource | None: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def prior(self) -> dict[str, Any] | None: ...
    @property
    def readable(self) -> bool: ...
    @property
    def replace(self) -> bool: ...


class NamedWorkload(Protocol):
    """A workload the rollout patches (``deployer.rollout.state.Workload``)."""

    @property
    def kind(self) -> _Named: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def containers(self) -> tuple[str, ...]: ...
    @property
    def before(self) -> dict[str, Any] | None: ...
    @property
    def from_manifest(self) -> bool: ...

    def target_images(self, default: str) -> dict[str, str]: ...


def ask_cluster(
    kube: Kube,
    applied: Sequence[AppliedObject],
    workloads: Sequence[NamedWorkload],
    image: str,
    field_manager: str,
    mask: Callable[[str], None],
) -> Plan:
    """The plan: a server-side dry run of each document's apply, compared with the live one.

    ``applied`` are the manifests as the check left them (live object read, Jobs whose
    template changed marked ``replace``); ``workloads`` named by the inputs get the
    new image in the containers they run it in. ``mask`` receives every Secret value
    met on the way, before anything can print.
    """
    objects = [_manifest_change(kube, item, field_manager, mask) for item in applied]
    for w in workloads:
        if not w.from_manifest and w.before is not None:
            after = _with_images(w.before, w.target_images(image))
            source = f"{w.kind.name} named in the inputs: only its images are set"
            objects.append(compare(w.before, after, source=source, namespace=w.namespace))
    return Plan(image=image, objects=tuple(objects))


def _manifest_change(
    kube: Kube, item: AppliedObject, field_manager: str, mask: Callable[[str], None]
) -> ObjectChange:
    m = item.manifest
    for value in [*secret_values(m.doc), *secret_values(item.prior)]:
        mask(value)

    def change(
        before: Mapping[str, Any] | None, after: Mapping[str, Any], note: str = ""
    ) -> ObjectChange:
        return compare(
            before,
            after,
            source=m.source,
            namespace=item.namespace or "",
            replace=item.replace,
            cluster_scoped=bool(m.cluster_scoped),
            note=note,
        )

    if not item.readable:
        return _replace_action(
            change(None, m.doc), "unknown", "The credentials may not read it: no diff."
        )
    if item.replace:
        note = (
            "A Job's pod template cannot change: the Job is deleted and created again "
            "(this diff is computed here, not by the API server)."
        )
        return change(item.prior, _merged(item.prior or {}, m.doc), note)
    planned = _dry_run(kube, item, field_manager) if item.resource is not None else None
    if planned is None:
        return change(
            None,
            m.doc,
            "Shown as written: its Namespace or CustomResourceDefinition is created first.",
        )
    for value in secret_values(planned):
        mask(value)
    return change(item.prior, planned)


def _replace_action(change: ObjectChange, action: str, note: str) -> ObjectChange:
    return ObjectChange(
        change.kind,
        change.namespace,
        change.name,
        action,
        change.source,
        (),
        change.images,
        change.cluster_scoped,
        note,
    )


def _dry_run(kube: Kube, item: AppliedObject, field_manager: str) -> dict[str, Any] | None:
    """The object as the API server would store it after the apply; None if its
    namespace does not exist yet (created by the same run)."""
    assert item.resource is not None
    answer = kube.request(
        "PATCH",
        item.resource,
        verb="patch",
        namespace=item.namespace,
        name=item.manifest.name,
        query=[("fieldManager", field_manager), ("force", "true"), ("dryRun", "All")],
        body=item.manifest.doc,
        content_type="application/apply-patch+yaml",
        expect=frozenset({400, 404, 409, 422}),
    )
    if isinstance(answer, Response):
        if answer.status == 404:
            return None
        message = str(answer.body.get("message", answer.status))
        raise ClusterError(
            f"The API server refused the dry run of {item.manifest.source} "
            f"({item.manifest.kind} {item.manifest.name}): {message}"
        )
    return dict(answer)


def _with_images(live: Mapping[str, Any], images: Mapping[str, str]) -> dict[str, Any]:
    """``live`` with each container named in ``images`` set to its image."""
    after = copy.deepcopy(dict(live))
    pod = _pod_spec(after)
    for field in ("initContainers", "containers"):
        for c in pod.get(field) or []:
            if isinstance(c, dict) and c.get("name") in images:
                c["image"] = images[c["name"]]
    return after


def _merged(live: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` laid over ``live`` as an apply would: maps merged, named list items by name."""
    found = copy.deepcopy(dict(live))
    for key, value in doc.items():
        found[key] = _merged_value(found.get(key), value)
    return found


def _merged_value(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return _merged(old, new)
    named = isinstance(new, list) and all(isinstance(i, dict) and "name" in i for i in new)
    if named and isinstance(old, list):
        by_name = {i.get("name"): i for i in old if isinstance(i, dict)}
        return [_merged_value(by_name.get(i["name"]), i) for i in new]
    return copy.deepcopy(new)


def write_log(io: ActionsIO, plan: Plan) -> None:
    """The plan in the log: the headline, one line per object, the diffs (inert)."""
    io.info(f"Plan: {plan.headline()}")
    for o in plan.objects:
        where = f" in {o.namespace}" if o.namespace else " (cluster-scoped)"
        io.info(f"  {o.action} {o.label}{where} ({o.source})")
        for i in o.images:
            io.info(f"    container {i.container}: {i.before or '(new)'} -> {i.after}")
    shown = [o for o in plan.objects if o.diff]
    if not shown:
        return
    with io.group("The plan's diffs"), io.untrusted() as log:
        used = 0
        for o in shown:
            used += sum(len(line) + 1 for line in o.diff)
            if used > LOG_BYTES:
                log.write("… more diffs in the job summary and the plan output")
                break
            log.write_lines(_log_lines(o))


def _log_lines(o: ObjectChange) -> Iterator[str]:
    yield f"{o.action} {o.label}:"
    yield from o.diff
