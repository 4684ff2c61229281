"""The roll-out stage: check, change, watch, judge, and undo on failure.

Order of work, so that a mistake changes nothing:

1. Check: read every named Deployment (and validate the manifests with a
   server-side dry-run apply), resolve the containers to update, and ask the API
   server whether the credentials may patch and watch what the rollout needs.
   Problems raise :class:`ConfigError` / :class:`AccessDenied` here.
2. Change: apply the manifests (server-side apply), then patch each Deployment's
   container images to the digest reference, with the change annotations.
3. Watch: one watch per Deployment and one per new ReplicaSet's pods, judged in
   the calling thread exactly like ``kubectl rollout status``, plus pod problems
   (see :func:`deployer.rollout_status.pod_problem`) to fail before the deadline.
4. Undo: if any Deployment failed and ``rollback-on-failure`` is on, every
   Deployment this run changed is undone like ``kubectl rollout undo`` and that
   rollout is watched too, within what is left of the one deadline.

Rollout outcomes are returned as a :class:`RolloutResult`; only problems found
before anything changed are raised.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client import ApiClient

from deployer.actions import ActionsIO
from deployer.cluster import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    SSAR,
    Kube,
    Resource,
    Response,
    default_namespace,
    discover,
    label_selector,
)
from deployer.config import INPUTS, Config
from deployer.diagnose import Diagnosis, diagnose_pod
from deployer.errors import AccessDenied, Cancelled, ClusterError, ConfigError, InputProblem
from deployer.manifests import (
    Manifest,
    cluster_scoped_note,
    load_manifests,
    refuse_cluster_scoped,
    same_repository,
)
from deployer.rollout_status import (
    PodProblem,
    condition,
    deployment_problem,
    pod_problem,
    progress_line,
    rollout_status,
    template_without_hash,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "DeploymentResult",
    "RolloutResult",
    "check_cluster",
    "roll_out",
]

ANNOTATION_PREFIX = "deployer.dev/"
CHANGE_CAUSE = "kubernetes.io/change-cause"
REVISION = "deployment.kubernetes.io/revision"
FIELD_MANAGER = "deployer"
# Annotations `kubectl rollout undo` keeps from the Deployment instead of the ReplicaSet.
_UNDO_KEEP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
_TICK = 0.25  # how often the judge wakes without events: cancel and grace checks
_WATCH_SECONDS = 300
_WATCH_FAILURES = 8
_CONFLICT_TRIES = 4
_ROLLBACK_SHARE = 1 / 3  # of the timeout kept for the undo when rollback is on
_CANCEL_JOIN = 2.0
# Reading a failed pod's events and log may run this long past the deadline.
_DIAGNOSIS_SECONDS = 10.0


@dataclass(frozen=True)
class DeploymentResult:
    """What happened to one Deployment."""

    namespace: str
    name: str
    containers: tuple[str, ...]
    previous_image: str
    new_image: str
    revision: int | None
    result: str  # succeeded | failed | rolled-back | planned | cancelled
    reason: str
    diagnosis: str = ""

    def as_output(self) -> dict[str, object]:
        """The JSON shape of the ``deployments`` output."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "containers": list(self.containers),
            "previous-image": self.previous_image,
            "new-image": self.new_image,
            "revision": self.revision,
            "result": self.result,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RolloutResult:
    """The outcome of the stage and of each Deployment."""

    status: str  # succeeded | failed | rolled-back | cancelled | planned
    deployments: tuple[DeploymentResult, ...]

    @property
    def revisions(self) -> dict[str, int | None]:
        """Deployment name → its revision at the end (``namespace/name`` if a name repeats)."""
        names = [d.name for d in self.deployments]
        return {
            d.name if names.count(d.name) == 1 else f"{d.namespace}/{d.name}": d.revision
            for d in self.deployments
        }


def check_cluster(config: Config, api: ApiClient, io: ActionsIO, cancel: threading.Event) -> None:
    """Run the stage's checks before the build, so a typo costs no build and no push.

    Deployments, containers, paused state, permissions and the manifests (with a
    placeholder digest) are checked; :func:`roll_out` checks again with the real one.
    """
    deadline = time.monotonic() + config.timeout
    kube = Kube(api, cancel=cancel, deadline=deadline)
    placeholder = config.image.with_digest("sha256:" + "0" * 64)
    Stage(config, placeholder, kube, io, cancel, deadline).preflight()


def roll_out(
    config: Config,
    image: str,
    api: ApiClient,
    io: ActionsIO,
    cancel: threading.Event,
    *,
    checked: bool = False,
) -> RolloutResult:
    """Roll ``image`` out to the configured Deployments; see the module docstring."""
    deadline = time.monotonic() + config.timeout
    kube = Kube(api, cancel=cancel, deadline=deadline)
    stage = Stage(config, image, kube, io, cancel, deadline)
    stage.checked = checked
    return stage.run()


# -- helpers on Deployment dicts -------------------------------------------------------


def _revision(obj: Mapping[str, Any] | None) -> int | None:
    value = ((obj or {}).get("metadata") or {}).get("annotations", {}).get(REVISION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("containers") or [])


def _images(deployment: Mapping[str, Any] | None, names: Iterable[str]) -> str:
    if deployment is None:
        return ""
    by_name = {c.get("name"): c.get("image", "") for c in _containers(deployment)}
    return ", ".join(str(by_name.get(n, "")) for n in names)


def _template(deployment: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(((deployment or {}).get("spec") or {}).get("template") or {})


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") == uid:
            return True
    return False


def undo_target(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The ReplicaSet ``kubectl rollout undo`` goes back to: the second-highest revision.

    Taken as the highest revision whose template is not the Deployment's current
    one, which is kubectl's choice whenever the controller has caught up, and
    stays right when it has not: when the new ReplicaSet could not be created
    (e.g. a quota), or when an old ReplicaSet with our template is reused but
    not yet renumbered, kubectl's "second-highest" would pick the wrong one.
    """
    uid = _uid(deployment)
    owned = []
    for rs in replicasets:
        revision = _revision(rs)
        if revision is not None and _controlled_by(rs, uid):
            owned.append((revision, rs))
    owned.sort(key=lambda pair: pair[0], reverse=True)
    current = template_without_hash(_template(deployment))
    earlier = [rs for _, rs in owned if template_without_hash(_template(rs)) != current]
    return earlier[0] if earlier else None


def undo_patch(deployment: Mapping[str, Any], rs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch ``kubectl rollout undo`` sends to restore ``rs``'s template."""
    template = template_without_hash(_template(rs))
    own = (deployment.get("metadata") or {}).get("annotations") or {}
    annotations = {k: v for k, v in own.items() if k in _UNDO_KEEP}
    for key, value in ((rs.get("metadata") or {}).get("annotations") or {}).items():
        if key not in _UNDO_KEEP:
            annotations[key] = value
    return [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]


def resolve_containers(
    deployment: Mapping[str, Any], wanted: str | None, repository: str
) -> tuple[str, ...] | InputProblem:
    """The containers to update, or the problem with the ``container`` input."""
    name = (deployment.get("metadata") or {}).get("name", "")
    containers = _containers(deployment)
    names = [str(c.get("name")) for c in containers]
    listed = ", ".join(names)
    if wanted:
        if wanted in names:
            return (wanted,)
        return InputProblem(
            "container",
            f"Deployment '{name}' has no container '{wanted}' (it has: {listed})",
            names[0] if names else INPUTS["container"][1],
        )
    matching = tuple(
        str(c.get("name"))
        for c in containers
        if same_repository(str(c.get("image", "")), repository)
    )
    if matching:
        return matching
    if len(names) == 1:
        return (names[0],)
    return InputProblem(
        "container",
        f"Deployment '{name}' has containers {listed} and none runs {repository}; "
        "say which one to update",
        names[0] if names else INPUTS["container"][1],
    )


# -- watching ---------------------------------------------------------------------------

_Item = tuple[str, str, str, Any]  # (target key, stream, event type, payload)


class _Watcher(threading.Thread):
    """List-then-watch one stream into the judge's queue until stopped.

    Resumes from the last resourceVersion, lists again on 410 Gone, and retries
    dropped connections and 5xx with a capped backoff.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespace: str,
        query: list[tuple[str, Any]],
        key: str,
        stream: str,
        out: queue.Queue[_Item],
        resource_version: str | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"watch-{stream}-{key}")
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.query = query
        self.key = key
        self.stream = stream
        self.out = out
        self.resource_version = resource_version
        self.stopped = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None

    def stop(self) -> None:
        self.stopped.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # the read may already be over
                response.shutdown()

    def _keep(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        if self.stopped.is_set():
            self.stop()

    def _done(self) -> bool:
        return self.stopped.is_set() or self.kube.cancel.is_set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # never die silently: the judge would wait for the deadline
            if not self._done():
                self.out.put(
                    (
                        self.key,
                        self.stream,
                        "FAILED",
                        ClusterError(f"Watching {self.resource.display} failed: {e}"),
                    )
                )

    def _run(self) -> None:
        failures = 0
        relists = 0
        rv = self.resource_version
        while not self._done():
            try:
                if rv is None:
                    listing = self.kube.request(
                        "GET",
                        self.resource,
                        verb="list",
                        namespace=self.namespace,
                        query=self.query,
                    )
                    rv = str((listing.get("metadata") or {}).get("resourceVersion", ""))
                    self.out.put((self.key, self.stream, "SYNC", listing.get("items") or []))
                remaining = self.kube.deadline - time.monotonic()
                if remaining <= 0:
                    return
                seconds = max(1, min(_WATCH_SECONDS, int(remaining) + 1))
                began = time.monotonic()
                for event in self.kube.watch(
                    self.resource,
                    self.namespace,
                    resource_version=rv,
                    query=self.query,
                    timeout_seconds=seconds,
                    on_response=self._keep,
                ):
                    if self._done():
                        return
                    kind = str(event.get("type", ""))
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            rv = None
                            relists += 1
                            self.stopped.wait(min(4.0, 0.1 * 2**relists) if relists > 1 else 0)
                            break
                        if obj.get("code") in (429, 500, 503, 504):  # e.g. a lagging cache
                            raise urllib3.exceptions.ProtocolError(
                                f"watch error {obj.get('code')}: {obj.get('message', '')}"
                            )
                        raise ClusterError(
                            f"Watching {self.resource.display} in namespace {self.namespace} "
                            f"failed: {obj.get('message', obj)}"
                        )
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    relists = 0
                    if kind != "BOOKMARK":
                        self.out.put((self.key, self.stream, kind, obj))
                else:
                    # A server that ends watches at once must not make us spin.
                    if time.monotonic() - began < 1.0:
                        self.stopped.wait(1.0)
                failures = 0
            except Cancelled:
                return
            except ClusterError as e:
                if not self._done():
                    self.out.put((self.key, self.stream, "FAILED", e))
                return
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if self._done():
                    return
                failures += 1
                if failures >= _WATCH_FAILURES:
                    self.out.put(
                        (
                            self.key,
                            self.stream,
                            "FAILED",
                            ClusterError(
                                f"Lost the watch on {self.resource.display} in namespace "
                                f"{self.namespace} {failures} times ({type(e).__name__})"
                            ),
                        )
                    )
                    return
                self.stopped.wait(min(4.0, 0.25 * 2**failures))


# -- the stage ----------------------------------------------------------------------------


@dataclass
class _Target:
    """One Deployment this run deploys to, and what we know about it so far."""

    namespace: str
    name: str
    containers: tuple[str, ...]
    before: dict[str, Any] | None  # as checked; None when a manifest creates it
    live: dict[str, Any] | None
    manifest: Manifest | None = None
    changed: bool = False
    outcome: str = ""  # "" while undecided, then succeeded | failed | rolled-back | cancelled
    reason: str = ""
    diagnosis: Diagnosis | None = None
    stage: str = "checked"  # checked | changing | waiting | rolling back | done
    # state of the current wait
    new_hash: str | None = None
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    progress: str = ""
    undo_reason: str = ""
    superseded: bool = False  # someone else changed our containers' images after us

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def previous_image(self) -> str:
        return _images(self.before, self.containers)


class Stage:
    """One run of the stage; :func:`roll_out` is the public way in.

    ``clock`` is injectable so unit tests can move time.
    """

    def __init__(
        self,
        config: Config,
        image: str,
        kube: Kube,
        io: ActionsIO,
        cancel: threading.Event,
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.image = image
        self.kube = kube
        self.io = io
        self.cancel = cancel
        self.deadline = deadline
        self.clock = clock
        self.targets: list[_Target] = []
        self.manifests: list[Manifest] = []
        self.watchers: list[_Watcher] = []
        self.started = clock()
        self.anything_changed = False
        self.checked = False  # check_cluster ran before the build and warned already

    # -- entry -------------------------------------------------------------------

    def run(self) -> RolloutResult:
        """The whole stage; returns a result, or raises for a problem before any change."""
        try:
            return self._run()
        except Cancelled:
            self.cancel.set()
            self._stop_watchers()
            return self._cancelled()
        except ClusterError as e:
            if not self.anything_changed:
                raise
            # Once something changed, an error is an outcome: report it and undo.
            self._stop_watchers()
            for t in self.targets:
                if not t.outcome:
                    t.outcome, t.reason, t.stage = "failed", f"not verified: {e.message}", "done"
            failed = [t for t in self.targets if t.outcome == "failed"]
            self._report_failures(failed)
            if self.config.rollback_on_failure:
                with contextlib.suppress(ClusterError):
                    self._roll_back(failed)
            return self._result()
        finally:
            self._stop_watchers()

    def preflight(self) -> None:
        """Only the checks: raise for anything that would stop the rollout."""
        self._load_manifests()
        with self.io.group("Checking the cluster before the build"):
            self._check(default_namespace(self.config), announce=False)

    def _load_manifests(self, *, warn: bool = True) -> None:
        if not self.config.manifests:
            return
        self.manifests = load_manifests(
            self.config.workspace,
            self.config.manifests,
            self.config.image.repository,
            self.image,
        )
        for m in self.manifests if warn else ():
            if m.substituted and not (m.kind == "Deployment" and m.api_version == "apps/v1"):
                self.io.warning(
                    f"{m.kind} {m.name} ({m.source}) gets the new image but is not watched or "
                    "rolled back: only Deployments are",
                    title="Not verified",
                )
        if warn and not any(m.substituted for m in self.manifests):
            self.io.warning(
                f"No image reference to {self.config.image.repository} in the manifests; "
                "they are applied unchanged",
                title="Image not substituted",
            )

    def _run(self) -> RolloutResult:
        namespace = default_namespace(self.config)
        self._load_manifests(warn=not self.checked)
        with self.io.group("Checking the cluster"):
            self._check(namespace)
        if self.config.dry_run:
            return self._plan()
        if self.cancel.is_set():
            raise Cancelled("cancelled")
        self._change()
        failed = [t for t in self.targets if t.outcome == "failed"]
        if not failed:
            rollback = self.config.rollback_on_failure
            forward = self.deadline - (self.config.timeout * _ROLLBACK_SHARE if rollback else 0.0)
            self._wait([t for t in self.targets if not t.outcome], forward, undoing=False)
        failed = [t for t in self.targets if t.outcome == "failed"]
        if failed:
            self._report_failures(failed)
            if self.config.rollback_on_failure:
                self._roll_back(failed)
            else:
                for t in self.targets:
                    if t.outcome == "failed" and t.changed:
                        t.reason += (
                            f"; left as is (rollback-on-failure is off): undo with "
                            f"kubectl rollout undo deployment/{t.name} -n {t.namespace}"
                        )
        return self._result()

    # -- 1. check -------------------------------------------------------------------

    def _check(self, namespace: str, *, announce: bool = True) -> None:
        discovered: dict[str, list[Any]] = {}
        refuse_cluster_scoped(
            self.manifests,
            lambda version, kind: discover(self.kube, version, kind, discovered).namespaced,
            allowed=self.config.allow_cluster_scoped,
            namespace=namespace,
        )
        problems: list[InputProblem] = []
        for manifest in self.manifests:
            own = manifest.doc["metadata"].get("namespace")
            if self.config.namespace and own and own != self.config.namespace:
                # As kubectl apply -n refuses it: a manifest never silently goes elsewhere.
                problems.append(
                    InputProblem(
                        "manifests",
                        f"{manifest.source} ({manifest.kind} {manifest.name}) is in namespace "
                        f"{own}, but the namespace input is {self.config.namespace}; remove "
                        "its metadata.namespace or make the two agree",
                        INPUTS["manifests"][1],
                    )
                )
        if problems:
            raise ConfigError(problems)
        applied: dict[tuple[str, str], Manifest] = {}
        for manifest in self.manifests:
            if manifest.kind == "Deployment" and manifest.api_version == "apps/v1":
                self._annotate(manifest.doc.setdefault("metadata", {}))
                applied[(manifest.namespace(namespace), manifest.name)] = manifest
            self._apply(manifest, namespace, discovered, dry_run=True)
        wanted: list[tuple[str, str]] = [(namespace, name) for name in self.config.deployments]
        wanted += [key for key, m in applied.items() if m.substituted and key not in wanted]
        for ns, name in wanted:
            found_manifest = applied.get((ns, name))
            live = self._get(ns, name)
            if live is None and found_manifest is None:
                problems.append(self._not_found(ns, name))
                continue
            source = found_manifest.doc if found_manifest is not None else live
            assert source is not None
            if (source.get("spec") or {}).get("paused") or ((live or {}).get("spec") or {}).get(
                "paused"
            ):
                problems.append(
                    InputProblem(
                        "deployments",
                        f"Deployment '{name}' in namespace {ns} is paused; resume it first "
                        f"(kubectl rollout resume deployment/{name} -n {ns})",
                        INPUTS["deployments"][1],
                    )
                )
                continue
            found = resolve_containers(source, self.config.container, self.config.image.repository)
            if isinstance(found, InputProblem):
                problems.append(found)
                continue
            self.targets.append(_Target(ns, name, found, live, live, found_manifest))
        if problems:
            raise ConfigError(problems)
        self._check_access()
        for t in self.targets if announce else ():
            self.io.info(
                f"{t.key}: {', '.join(t.containers)}: {t.previous_image or '(new)'} -> {self.image}"
            )

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        answer = self.kube.request(
            "GET", DEPLOYMENTS, verb="get", namespace=namespace, name=name, expect=frozenset({404})
        )
        return None if isinstance(answer, Response) else dict(answer)

    def _not_found(self, namespace: str, name: str) -> InputProblem:
        hint = ""
        try:
            listing = self.kube.request("GET", DEPLOYMENTS, verb="list", namespace=namespace)
            names = sorted(d["metadata"]["name"] for d in listing.get("items") or [])
            hint = f" (it has: {', '.join(names[:20])})" if names else " (it has none)"
        except ClusterError:
            pass
        return InputProblem(
            "deployments",
            f"no Deployment '{name}' in namespace {namespace}{hint}",
            INPUTS["deployments"][1],
        )

    def _may(self, verb: str, resource: Resource, namespace: str, name: str = "") -> bool | None:
        """Ask the API server (SelfSubjectAccessReview); None when it cannot say."""
        attributes = {"namespace": namespace, "verb": verb, "group": resource.group}
        attributes["resource"] = resource.plural
        if name:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = self.kube.request(
            "POST", SSAR, verb="create", body=body, expect=frozenset({403, 404})
        )
        if isinstance(answer, Response):
            return None
        return bool((answer.get("status") or {}).get("allowed"))

    def _check_access(self) -> None:
        needed: list[tuple[str, Resource, str, str]] = []
        for ns in dict.fromkeys(t.namespace for t in self.targets):
            needed += [
                ("watch", DEPLOYMENTS, ns, ""),
                ("list", DEPLOYMENTS, ns, ""),  # a watch that expired is resumed by a list
                ("list", REPLICASETS, ns, ""),
                ("watch", PODS, ns, ""),
                ("list", PODS, ns, ""),
            ]
        needed += [
            ("patch", DEPLOYMENTS, t.namespace, t.name) for t in self.targets if t.manifest is None
        ]
        for verb, resource, ns, name in needed:
            if self._may(verb, resource, ns, name) is False:
                what = f"{verb} {resource.display}" + (f" {name}" if name else "")
                raise AccessDenied(
                    f"The credentials may not {what} in namespace {ns} "
                    "(denied by the API server's access review); the deploy needs it"
                )

    def _apply(
        self,
        manifest: Manifest,
        namespace: str,
        discovered: dict[str, list[Any]],
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        resource = discover(self.kube, manifest.api_version, manifest.kind, discovered)
        ns = manifest.namespace(namespace) if resource.namespaced else None
        if ns is not None:
            manifest.doc["metadata"]["namespace"] = ns
        query: list[tuple[str, Any]] = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        try:
            answer = self.kube.request(
                "PATCH",
                resource,
                verb="patch",
                namespace=ns,
                name=manifest.name,
                query=query,
                body=manifest.doc,
                content_type="application/apply-patch+yaml",
                expect=frozenset({400, 422}),
            )
        except AccessDenied:
            raise
        if isinstance(answer, Response) and not dry_run:
            raise ClusterError(
                f"Applying {manifest.source} ({manifest.kind} {manifest.name}) was refused by "
                f"the API server: {answer.body.get('message', answer.status)}"
            )
        if isinstance(answer, Response):
            raise ConfigError(
                [
                    InputProblem(
                        "manifests",
                        f"{manifest.source} ({manifest.kind} {manifest.name}) was refused by the "
                        f"API server: {answer.body.get('message', answer.status)}",
                        INPUTS["manifests"][1],
                    )
                ]
            )
        return dict(answer)

    # -- 2. plan or change -------------------------------------------------------------

    def _plan(self) -> RolloutResult:
        lines = ["| Deployment | Container | Current image | New image |", "|---|---|---|---|"]
        self.io.info("Dry run: nothing is changed. The plan:")
        for t in self.targets:
            for container in t.containers:
                current = _images(t.before, [container]) or "(created by the manifests)"
                self.io.info(f"  {t.key}: container {container}: {current} -> {self.image}")
                lines.append(f"| {t.key} | {container} | `{current}` | `{self.image}` |")
        for m in self.manifests:
            scope = " (cluster-scoped)" if m.cluster_scoped else ""
            self.io.info(f"  apply {m.kind} {m.name}{scope} from {m.source}")
        self.io.append_summary(
            "### Rollout plan (dry run)\n\n"
            + "\n".join(lines)
            + cluster_scoped_note(self.manifests)
        )
        for t in self.targets:
            t.outcome, t.reason = "planned", ""
        return self._result(status="planned")

    def _annotate(self, metadata: dict[str, Any]) -> None:
        annotations = metadata.setdefault("annotations", {})
        annotations.update(self._annotations())

    def _annotations(self) -> dict[str, str]:
        github = self.config.github
        cause = f"deployer: {self.image}"
        extra = []
        if github.sha:
            extra.append(f"commit {github.sha[:7]}")
        if github.run_url:
            extra.append(f"run {github.run_url}")
        if extra:
            cause += f" ({', '.join(extra)})"
        found = {CHANGE_CAUSE: cause, ANNOTATION_PREFIX + "image": self.image}
        if github.commit_url:
            found[ANNOTATION_PREFIX + "commit"] = github.commit_url
        if github.run_url:
            found[ANNOTATION_PREFIX + "run-url"] = github.run_url
        return found

    def _change(self) -> None:
        current: _Target | None = None
        discovered: dict[str, list[Any]] = {}
        namespace = default_namespace(self.config)
        try:
            for manifest in self.manifests:
                obj = self._apply(manifest, namespace, discovered, dry_run=False)
                self.anything_changed = True
                for t in self.targets:
                    if t.manifest is manifest:
                        t.live = obj
                        # Known now, so a later failure still undoes what the apply changed.
                        t.changed = t.before is None or template_without_hash(
                            _template(t.before)
                        ) != template_without_hash(_template(obj))
                self.io.info(f"Applied {manifest.kind} {manifest.name} ({manifest.source})")
            for t in self.targets:
                current = t
                t.stage = "changing"
                self._patch(t)
                t.stage = "waiting"
        except ClusterError as e:
            if not self.anything_changed:
                raise
            for t in self.targets:
                if not t.outcome and (t is current or t.stage == "checked"):
                    t.outcome, t.reason = "failed", e.message
                    t.stage = "done"
            for t in self.targets:  # the ones already changed were not judged: undo them too
                if not t.outcome:
                    t.outcome, t.reason = "failed", f"not verified: {e.message}"

    def _patch(self, t: _Target) -> None:
        for _ in range(_CONFLICT_TRIES):
            live = t.live
            assert live is not None
            images = {c.get("name"): c.get("image") for c in _containers(live)}
            if all(images.get(c) == self.image for c in t.containers):
                break
            body = {
                "metadata": {
                    "resourceVersion": live["metadata"]["resourceVersion"],
                    "annotations": self._annotations(),
                },
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": c, "image": self.image} for c in t.containers]
                        }
                    }
                },
            }
            answer = self.kube.request(
                "PATCH",
                DEPLOYMENTS,
                verb="patch",
                namespace=t.namespace,
                name=t.name,
                body=body,
                content_type="application/strategic-merge-patch+json",
                expect=frozenset({409}),
            )
            if isinstance(answer, Response):  # changed since we read it: patch the fresh one
                t.live = self._get(t.namespace, t.name)
                if t.live is None:
                    raise ClusterError(f"Deployment {t.key} was deleted during the deploy")
                continue
            t.live = dict(answer)
            self.anything_changed = True
            break
        else:
            raise ClusterError(
                f"Deployment {t.key} kept changing; gave up after {_CONFLICT_TRIES} tries"
            )
        t.changed = t.before is None or template_without_hash(_template(t.before)) != (
            template_without_hash(_template(t.live))
        )
        if t.changed:
            generation = (t.live or {}).get("metadata", {}).get("generation")
            self.io.info(f"{t.key}: updated, generation {generation}")
        else:
            self.io.info(f"{t.key}: already running {self.image}")

    # -- 3. wait ---------------------------------------------------------------------------

    def _wait(self, targets: list[_Target], deadline: float, *, undoing: bool) -> None:
        events: queue.Queue[_Item] = queue.Queue()
        by_key = {t.key: t for t in targets}
        for t in targets:
            t.new_hash, t.pods, t.first_seen, t.progress = None, {}, {}, ""
            assert t.live is not None
            self._start(
                _Watcher(
                    self.kube,
                    DEPLOYMENTS,
                    t.namespace,
                    [("fieldSelector", f"metadata.name={t.name}")],
                    t.key,
                    "deployment",
                    events,
                    str(t.live["metadata"]["resourceVersion"]),
                )
            )
            self._judge(t, events, undoing)
        while any(not t.outcome for t in targets):
            if self.cancel.is_set():
                raise Cancelled("cancelled")
            remaining = deadline - self.clock()
            if remaining <= 0:
                for t in targets:
                    if not t.outcome:
                        self._timed_out(t, undoing)
                break
            try:
                key, stream, kind, payload = events.get(timeout=min(_TICK, remaining))
            except queue.Empty:
                for t in targets:
                    if not t.outcome:
                        self._judge(t, events, undoing, tick=True)
                if self._stop_early(targets, undoing):
                    break
                continue
            t = by_key[key]
            if t.outcome:
                continue
            if kind == "FAILED":
                self._fail(
                    t, payload.message if isinstance(payload, ClusterError) else str(payload)
                )
            elif stream == "deployment":
                if kind == "DELETED":
                    self._fail(t, f"Deployment {t.key} was deleted during the rollout")
                    continue
                if kind == "SYNC" and (not payload or _uid(payload[0]) != _uid(t.live or {})):
                    self._fail(t, f"Deployment {t.key} was deleted during the rollout")
                    continue
                t.live = payload[0] if kind == "SYNC" else payload
            elif kind == "SYNC":
                t.pods = {p["metadata"]["name"]: p for p in payload}
            elif kind == "DELETED":
                t.pods.pop(payload["metadata"]["name"], None)
            else:
                t.pods[payload["metadata"]["name"]] = payload
            if not t.outcome:
                self._judge(t, events, undoing)
            if self._stop_early(targets, undoing):
                break
        self._stop_watchers()

    def _stop_early(self, targets: list[_Target], undoing: bool) -> bool:
        """With rollback on, one failure rolls every Deployment back: stop waiting."""
        if undoing or not self.config.rollback_on_failure:
            return False
        if not any(x.outcome == "failed" for x in targets):
            return False
        for other in targets:
            if not other.outcome:
                other.outcome = "failed"
                other.reason = "stopped waiting: another Deployment failed"
        return True

    def _start(self, watcher: _Watcher) -> None:
        self.watchers.append(watcher)
        watcher.start()

    def _stop_watchers(self) -> None:
        watchers, self.watchers = self.watchers, []
        for w in watchers:
            w.stop()
        until = time.monotonic() + _CANCEL_JOIN
        for w in watchers:
            w.join(max(0.0, until - time.monotonic()))

    def _judge(
        self, t: _Target, events: queue.Queue[_Item], undoing: bool, *, tick: bool = False
    ) -> None:
        live = t.live
        assert live is not None
        if not undoing and self._superseded(t, live):
            return
        status = rollout_status(live)
        line = progress_line(live)
        observed = status.message != "Waiting for deployment spec update to be observed"
        if observed and line != t.progress:  # counts before that are the old generation's
            t.progress = line
            self.io.info(f"{t.name}: {line}")
        if status.state == "complete":
            t.outcome = "succeeded"
            t.stage = "done"
            self.io.info(
                f"{t.name}: {'rolled back' if undoing else 'rolled out'} "
                f"(revision {_revision(live)}) in {self.clock() - self.started:.1f} s"
            )
            return
        if status.state == "failed":
            self._fail(t, status.message, pod=self._first_unready(t))
            return
        # Conditions from before the controller observed our generation are the old one's.
        problem = deployment_problem(live) if observed else None
        if problem:
            self._fail(t, problem)
            return
        if not tick and t.new_hash is None and observed:
            self._find_new_replicaset(t, events)
        now = self.clock()
        current = {}
        for pod in t.pods.values():
            found = pod_problem(pod)
            if found is not None:
                current[found.key] = found
        # A problem that went away and came back starts its grace again.
        t.first_seen = {k: v for k, v in t.first_seen.items() if k in current}
        for key, found in current.items():
            first = t.first_seen.setdefault(key, now)
            if now - first >= found.grace:
                self._fail(t, found.line(), problem=found)
                return

    def _superseded(self, t: _Target, live: Mapping[str, Any]) -> bool:
        """Fail ``t`` when another client replaced our image since our patch.

        A newer rollout supersedes ours: judging it would report their rollout as
        ours, and undoing it would roll back over their change. Both are wrong.
        """
        now = {c.get("name"): c.get("image") for c in _containers(live)}
        others = {name: now.get(name) for name in t.containers if now.get(name) != self.image}
        if not others:
            return False
        running = ", ".join(f"container {name}: {image}" for name, image in others.items())
        generation = (live.get("metadata") or {}).get("generation")
        t.superseded = True
        self._fail(
            t,
            f"superseded by another change to the Deployment during the rollout: it now runs "
            f"{running} (generation {generation}); not rolled back, the newer change stands",
        )
        return True

    def _find_new_replicaset(self, t: _Target, events: queue.Queue[_Item]) -> None:
        live = t.live
        assert live is not None
        selector = label_selector((live.get("spec") or {}).get("selector") or {})
        try:
            listing = self.kube.request(
                "GET",
                REPLICASETS,
                verb="list",
                namespace=t.namespace,
                query=[("labelSelector", selector)],
            )
        except ClusterError:
            return  # tried again on the Deployment's next event
        current = template_without_hash(_template(live))
        for rs in listing.get("items") or []:
            if _controlled_by(rs, _uid(live)) and template_without_hash(_template(rs)) == current:
                labels = (_template(rs).get("metadata") or {}).get("labels") or {}
                t.new_hash = str(labels.get("pod-template-hash", ""))
                query = [("labelSelector", f"{selector},pod-template-hash={t.new_hash}")]
                self._start(_Watcher(self.kube, PODS, t.namespace, query, t.key, "pods", events))
                return

    def _first_unready(self, t: _Target) -> dict[str, Any] | None:
        for pod in t.pods.values():
            ready = condition(pod, "Ready")
            if ready is None or ready.get("status") != "True":
                return pod
        return None

    def _timed_out(self, t: _Target, undoing: bool) -> None:
        spent = self.clock() - self.started
        status = rollout_status(t.live or {})
        pod = self._first_unready(t)
        reason = f"not complete after {spent:.0f} s: {status.message}"
        if pod is not None:
            ready = condition(pod, "Ready") or {}
            why = ready.get("message") or ready.get("reason") or "not ready"
            reason += f"; pod {pod['metadata']['name']} never became ready ({why})"
        elif not t.pods and t.new_hash is None:
            progressing = condition(t.live or {}, "Progressing") or {}
            if progressing.get("message"):
                reason += f"; {progressing['message']}"
        self._fail(t, reason, pod=pod)
        del undoing

    def _fail(
        self,
        t: _Target,
        reason: str,
        *,
        problem: PodProblem | None = None,
        pod: Mapping[str, Any] | None = None,
    ) -> None:
        t.outcome, t.reason, t.stage = "failed", reason, "done"
        # Its own short budget: a failure found at the deadline still gets its diagnosis.
        kube = Kube(
            self.kube.api, cancel=self.cancel, deadline=time.monotonic() + _DIAGNOSIS_SECONDS
        )
        if problem is not None:
            t.diagnosis = diagnose_pod(
                kube, t.namespace, problem.line(), problem.pod, problem.container
            )
        elif pod is not None:
            name = pod["metadata"]["name"]
            ready = condition(pod, "Ready") or {}
            summary = f"pod {name}: not ready: {ready.get('message') or ready.get('reason') or ''}"
            container = t.containers[0] if t.containers else ""
            t.diagnosis = diagnose_pod(kube, t.namespace, summary.rstrip(": "), name, container)

    def _report_failures(self, failed: list[_Target]) -> None:
        for t in failed:
            self.io.error(f"{t.key}: {t.reason}", title=f"Rollout of {t.name} failed")
            if t.diagnosis is None:
                continue
            with self.io.group(f"Why {t.name} failed"):
                self.io.info(t.diagnosis.summary)
                if t.diagnosis.events or t.diagnosis.log:
                    with self.io.untrusted() as log:
                        if t.diagnosis.events:
                            log.write("Warning events of the pod:")
                            log.write_lines(f"  {e}" for e in t.diagnosis.events)
                        if t.diagnosis.log:
                            log.write("Last log lines:")
                            log.write_lines(f"  {line}" for line in t.diagnosis.log)
                for note in t.diagnosis.notes:
                    self.io.info(note)

    # -- 4. undo -------------------------------------------------------------------------

    def _roll_back(self, failed: list[_Target]) -> None:
        culprits = ", ".join(t.name for t in failed if not t.reason.startswith("stopped waiting"))
        undo: list[_Target] = []
        with self.io.group("Rolling back"):
            for t in self.targets:
                if not t.changed or t.superseded:
                    if t.outcome == "failed" and t.before is None and not t.superseded:
                        t.reason += "; no previous revision to roll back to"
                    continue
                why = (
                    t.reason if t.outcome == "failed" else f"rolled back because {culprits} failed"
                )
                t.undo_reason = why
                try:
                    done = self._undo(t)
                except ClusterError as e:
                    t.outcome, t.reason = "failed", f"{why}; rollback failed: {e.message}"
                    continue
                if done:
                    t.outcome = ""
                    t.stage = "rolling back"
                    undo.append(t)
            if undo:
                self._wait(undo, self.deadline, undoing=True)
            for t in undo:
                if t.outcome == "succeeded":
                    t.outcome = "rolled-back"
                    t.reason = f"{t.undo_reason}; rolled back to the previous revision"
                else:
                    revision = _revision(t.live)
                    t.reason = (
                        f"{t.undo_reason}; rollback failed: {t.reason}; the Deployment now runs "
                        f"{_images(t.live, t.containers)}"
                        + (f" (revision {revision})" if revision is not None else "")
                    )
                    t.outcome = "failed"
                    self.io.error(f"{t.key}: {t.reason}", title=f"Rollback of {t.name} failed")

    def _undo(self, t: _Target) -> bool:
        """Patch ``t`` back like ``kubectl rollout undo``; False when there is nothing to undo."""
        live = self._get(t.namespace, t.name)
        if live is None:
            raise ClusterError(f"Deployment {t.key} no longer exists")
        if self._superseded(t, live):  # changed by someone else after ours failed
            t.reason = f"{t.undo_reason}; {t.reason}"
            return False
        selector = label_selector((live.get("spec") or {}).get("selector") or {})
        listing = self.kube.request(
            "GET",
            REPLICASETS,
            verb="list",
            namespace=t.namespace,
            query=[("labelSelector", selector)],
        )
        rs = undo_target(live, listing.get("items") or [])
        if rs is None:
            t.outcome = "failed"
            t.reason = f"{t.undo_reason}; no rollout history found: nothing to roll back to"
            return False
        self.io.info(f"{t.name}: rolling back to revision {_revision(rs)}")
        answer = self.kube.request(
            "PATCH",
            DEPLOYMENTS,
            verb="patch",
            namespace=t.namespace,
            name=t.name,
            body=undo_patch(live, rs),
            content_type="application/json-patch+json",
        )
        t.live = dict(answer)
        return True

    # -- results ---------------------------------------------------------------------------

    def _cancelled(self) -> RolloutResult:
        for t in self.targets:
            if t.outcome in ("succeeded", "rolled-back"):
                continue
            undo = f"; undo with kubectl rollout undo deployment/{t.name} -n {t.namespace}"
            if t.stage == "checked" and not t.changed:
                t.reason = "cancelled before it was changed"
            elif t.stage == "rolling back":
                t.reason = f"cancelled while rolling back ({t.progress or 'started'}){undo}"
            else:
                t.reason = (
                    f"cancelled while waiting ({t.progress or 'just changed'}); "
                    f"the rollout continues in the cluster{undo}"
                )
            t.outcome = "cancelled"
        self.io.warning("Cancelled; " + "; ".join(f"{t.key}: {t.reason}" for t in self.targets))
        return self._result(status="cancelled")

    def _result(self, status: str | None = None) -> RolloutResult:
        results = []
        for t in self.targets:
            outcome = t.outcome or "failed"
            reason = t.reason
            if outcome == "succeeded" and not t.changed:
                reason = f"already running {self.image}"
            results.append(
                DeploymentResult(
                    namespace=t.namespace,
                    name=t.name,
                    containers=t.containers,
                    previous_image=t.previous_image,
                    new_image=self.image,
                    revision=_revision(t.live),
                    result=outcome,
                    reason=reason,
                    diagnosis=t.diagnosis.text() if t.diagnosis else "",
                )
            )
        if status is None:
            outcomes = {r.result for r in results}
            if outcomes <= {"succeeded"}:
                status = "succeeded"
            elif "failed" in outcomes:
                status = "failed"
            else:
                status = "rolled-back"
        return RolloutResult(status, tuple(results))
