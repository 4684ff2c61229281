"""One run of the roll-out stage: check, change, watch and judge, undo.

The pieces it drives, each in its own module: :mod:`~deployer.rollout.apply`
(manifests, Jobs, restore), :mod:`~deployer.rollout.judge` (pure verdicts),
:mod:`~deployer.rollout.undo` (kubectl's undo per kind),
:mod:`~deployer.rollout.state` (a workload's phase and outcome) and
:class:`deployer.cluster.Watch` (list/watch/relist). The stage owns the one
clock (``clock``, :func:`time.monotonic` unless a test passes another).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deployer.actions import ActionsIO
from deployer.cluster import (
    PODS,
    SSAR,
    Kube,
    Resource,
    Response,
    Watch,
    WatchEvent,
    discover,
    label_selector,
)
from deployer.config import INPUTS, Config
from deployer.errors import AccessDenied, Cancelled, ClusterError, ConfigError, InputProblem
from deployer.manifests import (
    Manifest,
    cluster_scoped_note,
    load_manifests,
    refuse_cluster_scoped,
    refuse_other_namespaces,
    same_repository,
)
from deployer.rollout.apply import FIRST_KINDS, Applied, ManifestSet
from deployer.rollout.diagnose import create_failure, diagnose_pod, node_coming
from deployer.rollout.judge import Snapshot, baseline, judge, timed_out
from deployer.rollout.kinds import (
    DEPLOYMENT,
    JOB,
    KINDS,
    STATEFULSET,
    Kind,
    containers_of,
    controlled_by,
    kind_named,
    template_of,
    uid_of,
)
from deployer.rollout.state import Outcome, Phase, Workload
from deployer.rollout.status import Policy, condition, pod_problem, template_without_hash
from deployer.rollout.undo import revision_of, undo

__all__ = [
    "ANNOTATION_PREFIX",
    "DeploymentResult",
    "RolloutResult",
    "Stage",
    "resolve_containers",
    "rollback_reserve",
]

ANNOTATION_PREFIX = "deployer.dev/"
CHANGE_CAUSE = "kubernetes.io/change-cause"
_TICK = 0.25  # how often the judge wakes without events: cancel and grace checks
_PROBE_EVERY = 5.0  # seconds between event reads that explain a stuck workload
_CONFLICT_TRIES = 4
_RESERVE_SHARE = 0.25  # of the timeout kept for the undo when rollback is on ...
_RESERVE_CAP = 60.0  # ... but never more than this
_CANCEL_JOIN = 2.0
_FINISH_SECONDS = 1.0  # kept at the end of the timeout for the diagnosis and the report
# Reading a failed pod's events and log may run this long past the deadline.
_DIAGNOSIS_SECONDS = 10.0


def rollback_reserve(timeout: float) -> float:
    """Seconds of ``timeout`` kept for the rollback: a quarter, at most 60 s."""
    return min(_RESERVE_CAP, timeout * _RESERVE_SHARE)


@dataclass(frozen=True)
class DeploymentResult:
    """What happened to one workload (the name is the first generation's)."""

    namespace: str
    name: str
    containers: tuple[str, ...]
    previous_image: str
    new_image: str
    revision: int | None
    result: str  # succeeded | failed | rolled-back | planned | cancelled
    reason: str
    diagnosis: str = ""
    kind: str = "Deployment"

    def as_output(self) -> dict[str, object]:
        """The JSON shape of one entry of the ``deployments`` and ``workloads`` outputs."""
        return {
            "kind": self.kind,
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
    """The outcome of the stage and of each workload."""

    status: str  # succeeded | failed | rolled-back | cancelled | planned
    deployments: tuple[DeploymentResult, ...]  # every workload, whatever its kind
    restored: tuple[str, ...] = ()  # what the rollback did to the other applied objects

    @property
    def revisions(self) -> dict[str, int | None]:
        """Deployment name → its revision at the end (``namespace/name`` if a name repeats)."""
        found = [d for d in self.deployments if d.kind == "Deployment"]
        names = [d.name for d in found]
        return {
            d.name if names.count(d.name) == 1 else f"{d.namespace}/{d.name}": d.revision
            for d in found
        }


def resolve_containers(
    obj: Mapping[str, Any], wanted: str | None, repository: str, kind: str = "Deployment"
) -> tuple[str, ...] | InputProblem:
    """The (init) containers to update, or the problem with the ``container`` input."""
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
        if same_repository(str(c.get("image", "")), repository)
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


_Item = tuple[str, str, WatchEvent | ClusterError]  # (stream key, stream kind, what)


class _Pump(threading.Thread):
    """Feeds one :class:`Watch` into the judge's queue."""

    def __init__(self, watch: Watch, key: str, stream: str, out: queue.Queue[_Item]) -> None:
        super().__init__(daemon=True, name=f"watch-{stream}-{key}")
        self.watch, self.key, self.stream, self.out = watch, key, stream, out

    def run(self) -> None:
        try:
            for event in self.watch:
                self.out.put((self.key, self.stream, event))
        except ClusterError as e:
            if not self.watch.stopped.is_set():
                self.out.put((self.key, self.stream, e))
        except Exception as e:  # never die silently: the judge would wait for the deadline
            if not self.watch.stopped.is_set():
                self.out.put((self.key, self.stream, ClusterError(f"Watching failed: {e}")))


class Stage:
    """One run of the stage; :func:`deployer.rollout.roll_out` is the public way in."""

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
        self.policy = Policy(tolerate=config.tolerate_failures_until_deadline)
        self.workloads: list[Workload] = []
        self.manifests: list[Manifest] = []
        self.applied: ManifestSet | None = None
        self.jobs: list[Workload] = []
        self.restored: list[str] = []
        self.pumps: list[_Pump] = []
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
            self._stop_watches()
            for w in self.workloads:
                w.cancel()
            self.io.warning(
                "Cancelled; " + "; ".join(f"{w.display}: {w.reason}" for w in self.workloads)
            )
            return self._result(status="cancelled")
        except ClusterError as e:
            if not self.anything_changed:
                raise
            # Once something changed, an error is an outcome: report it and undo.
            self._stop_watches()
            for w in self.workloads:
                if w.open:
                    w.fail(f"not verified: {e.message}")
            failed = [w for w in self.workloads if w.outcome is Outcome.FAILED]
            self._report_failures(failed)
            if self.config.rollback_on_failure:
                try:
                    self._roll_back(failed)
                except ClusterError as again:
                    self.io.error(f"Rollback stopped: {again.message}", title="Rollback failed")
            return self._result()
        finally:
            self._stop_watches()

    def preflight(self) -> None:
        """Only the checks: raise for anything that would stop the rollout."""
        self._load_manifests()
        with self.io.group("Checking the cluster before the build"):
            self._check(self._namespace(), announce=False)

    def _namespace(self) -> str:
        from deployer.cluster import default_namespace

        return default_namespace(self.config)

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
            verified = kind_named(m.api_version, m.kind) is not None or (
                m.kind == "Job" and m.api_version == "batch/v1"
            )
            if m.substituted and not verified:
                self.io.warning(
                    f"{m.kind} {m.name} ({m.source}) gets the new image but is not watched or "
                    "rolled back: only Deployments, StatefulSets, DaemonSets and Jobs are",
                    title="Not verified",
                )
        if warn and not any(m.substituted for m in self.manifests):
            self.io.warning(
                f"No image reference to {self.config.image.repository} in the manifests; "
                "they are applied unchanged",
                title="Image not substituted",
            )

    def _run(self) -> RolloutResult:
        namespace = self._namespace()
        self._load_manifests(warn=not self.checked)
        with self.io.group("Checking the cluster"):
            self._check(namespace)
        if self.config.dry_run:
            return self._plan()
        if self.cancel.is_set():
            raise Cancelled("cancelled")
        if not self._change():
            return self._after_failure()
        rollback = self.config.rollback_on_failure
        forward = self.deadline - (rollback_reserve(self.config.timeout) if rollback else 0.0)
        self._wait([w for w in self.workloads if w.open], forward)
        return self._after_failure()

    def _after_failure(self) -> RolloutResult:
        failed = [w for w in [*self.jobs, *self.workloads] if w.outcome is Outcome.FAILED]
        if failed:
            self._report_failures(failed)
            if self.config.rollback_on_failure:
                self._roll_back(failed)
            else:
                for w in self.workloads:
                    if w.outcome is Outcome.FAILED and w.changed:
                        w.reason += (
                            f"; left as is (rollback-on-failure is off): undo with "
                            f"kubectl rollout undo {w.kind.lower}/{w.name} -n {w.namespace}"
                        )
        return self._result()

    # -- 1. check -------------------------------------------------------------------

    def _targets(self, namespace: str) -> list[tuple[str, Kind, str]]:
        """(input, kind, name) for every workload the inputs name."""
        found = [("deployments", DEPLOYMENT, name) for name in self.config.deployments]
        for entry in self.config.workloads:
            kind, _, name = entry.rpartition("/")
            item = ("workloads", KINDS[kind or "deployment"], name)
            if (item[1], name) not in [(k, n) for _, k, n in found]:
                found.append(item)
        del namespace
        return found

    def _check(self, namespace: str, *, announce: bool = True) -> None:
        discovered: dict[str, list[Any]] = {}
        refuse_cluster_scoped(
            self.manifests,
            lambda version, kind: discover(self.kube, version, kind, discovered).namespaced,
            allowed=self.config.allow_cluster_scoped,
            namespace=namespace,
        )
        refuse_other_namespaces(self.manifests, namespace, from_input=bool(self.config.namespace))
        problems: list[InputProblem] = []
        from_manifests: dict[tuple[str, str, str], Applied] = {}
        self.applied = None
        if self.manifests:
            self.applied = ManifestSet(self.kube, self.io, namespace, self.manifests)
            for item in self.applied.items:
                kind = kind_named(item.manifest.api_version, item.manifest.kind)
                if kind is not None or item.is_job:
                    self._annotate(item.manifest.doc.setdefault("metadata", {}))
                if kind is not None:
                    key = (kind.lower, item.namespace or namespace, item.manifest.name)
                    from_manifests[key] = item
            self.applied.check()
        wanted = [
            (source, kind, namespace, name) for source, kind, name in self._targets(namespace)
        ]
        for (lower, ns, name), applied in from_manifests.items():
            if applied.manifest.substituted and (KINDS[lower], ns, name) not in [
                (k, n, m) for _, k, n, m in wanted
            ]:
                wanted.append(("manifests", KINDS[lower], ns, name))
        for source, kind, ns, name in wanted:
            found_item = from_manifests.get((kind.lower, ns, name))
            live = self._get(kind, ns, name)
            if live is None and found_item is None:
                problems.append(self._not_found(source, kind, ns, name))
                continue
            doc = found_item.manifest.doc if found_item is not None else live
            assert doc is not None
            paused = (doc.get("spec") or {}).get("paused") or ((live or {}).get("spec") or {}).get(
                "paused"
            )
            if paused:
                problems.append(
                    InputProblem(
                        source,
                        f"{kind.name} '{name}' in namespace {ns} is paused; resume it first "
                        f"(kubectl rollout resume {kind.lower}/{name} -n {ns})",
                        INPUTS[source][1],
                    )
                )
                continue
            found = resolve_containers(
                doc, self.config.container, self.config.image.repository, kind.name
            )
            if isinstance(found, InputProblem):
                problems.append(found)
                continue
            self.workloads.append(
                Workload(kind, ns, name, found, live, live, from_manifest=found_item is not None)
            )
        if problems:
            raise ConfigError(problems)
        self._check_access()
        for w in self.workloads if announce else ():
            self.io.info(
                f"{w.display} ({w.namespace}): {', '.join(w.containers)}: "
                f"{w.previous_image or '(new)'} -> {self.image}"
            )

    def _get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        answer = self.kube.request(
            "GET",
            kind.resource,
            verb="get",
            namespace=namespace,
            name=name,
            expect=frozenset({404}),
        )
        return None if isinstance(answer, Response) else dict(answer)

    def _not_found(self, source: str, kind: Kind, namespace: str, name: str) -> InputProblem:
        hint = ""
        try:
            listing = self.kube.request("GET", kind.resource, verb="list", namespace=namespace)
            names = sorted(d["metadata"]["name"] for d in listing.get("items") or [])
            hint = f" (it has: {', '.join(names[:20])})" if names else " (it has none)"
        except ClusterError:
            pass
        return InputProblem(
            source,
            f"no {kind.name} '{name}' in namespace {namespace}{hint}",
            INPUTS[source][1] if source in INPUTS else "",
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
        for ns, kind in dict.fromkeys((w.namespace, w.kind) for w in self.workloads):
            needed += [
                ("watch", kind.resource, ns, ""),
                ("list", kind.resource, ns, ""),  # a watch that expired is resumed by a list
                ("list", kind.history, ns, ""),
            ]
        for ns in dict.fromkeys(w.namespace for w in self.workloads):
            needed += [("watch", PODS, ns, ""), ("list", PODS, ns, "")]

        needed += [
            ("patch", w.kind.resource, w.namespace, w.name)
            for w in self.workloads
            if not w.from_manifest
        ]
        for verb, resource, ns, name in dict.fromkeys(needed):
            if self._may(verb, resource, ns, name) is False:
                what = f"{verb} {resource.display}" + (f" {name}" if name else "")
                raise AccessDenied(
                    f"The credentials may not {what} in namespace {ns} "
                    "(denied by the API server's access review); the deploy needs it"
                )
        stateful = dict.fromkeys(w.namespace for w in self.workloads if w.kind is STATEFULSET)
        for ns in stateful if self.config.rollback_on_failure else ():
            if self._may("delete", PODS, ns) is False:  # not required: a warning
                self.io.warning(
                    f"The credentials may not delete pods in namespace {ns}: a StatefulSet "
                    "rollback that a pod stuck on the failed revision blocks cannot be forced "
                    "(kubernetes/kubernetes#67250) and waits until the timeout",
                    title="Rollback may stall",
                )

    # -- 2. plan or change -------------------------------------------------------------

    def _plan(self) -> RolloutResult:
        # The log only: the job summary shows the plan from the result (report.py), with
        # untrusted names in code spans.
        self.io.info("Dry run: nothing is changed. The plan:")
        for w in self.workloads:
            for container in w.containers:
                current = w.images_of(w.before) if w.before else ""
                current = current.split(", ")[w.containers.index(container)] if current else ""
                current = current or "(created by the manifests)"
                self.io.info(f"  {w.display}: container {container}: {current} -> {self.image}")
        for item in self.applied.items if self.applied else ():
            verb = "replace" if item.replace else "apply"
            scope = " (cluster-scoped)" if item.manifest.cluster_scoped else ""
            self.io.info(f"  {verb} {item.label}{scope} from {item.manifest.source}")
        note = cluster_scoped_note(self.manifests)
        if note:
            self.io.append_summary(note.lstrip("\n") + "\n")
        for w in self.workloads:
            w.plan()
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

    def _workload_of(self, item: Applied) -> Workload | None:
        kind = kind_named(item.manifest.api_version, item.manifest.kind)
        for w in self.workloads:
            if w.kind is kind and w.name == item.manifest.name and w.namespace == item.namespace:
                return w
        return None

    def _change(self) -> bool:
        """Apply the manifests (Jobs before workloads) and patch; False if a Job failed."""
        current: Workload | None = None
        items = self.applied.items if self.applied else []
        first = [i for i in items if not i.is_job and self._workload_of(i) is None]
        first.sort(key=lambda i: i.manifest.kind not in FIRST_KINDS)  # stable: file order
        jobs = [i for i in items if i.is_job]
        rest = [i for i in items if i not in first and i not in jobs]
        try:
            for item in first:
                assert self.applied is not None
                self.applied.apply(item)
                self.anything_changed = True
            for item in jobs:
                if not self._run_job(item):
                    return False
            for item in rest:
                assert self.applied is not None
                obj = self.applied.apply(item)
                self.anything_changed = True
                w = self._workload_of(item)
                if w is not None:
                    w.applied(obj)  # known now, so a later failure still undoes it
            for w in self.workloads:
                current = w
                self._patch(w)
                w.start_wait(undoing=False)
        except ClusterError as e:
            if not self.anything_changed:
                raise
            for w in self.workloads:
                if w.open and (w is current or w.phase is Phase.CHECKED):
                    w.fail(e.message)
            for w in self.workloads:  # the ones already changed were not judged: undo them too
                if w.open:
                    w.fail(f"not verified: {e.message}")
        return True

    def _run_job(self, item: Applied) -> bool:
        assert self.applied is not None
        name = item.manifest.name
        template = template_of(item.manifest.doc)
        containers = tuple(
            str(c.get("name"))
            for c in containers_of(template)
            if same_repository(str(c.get("image", "")), self.config.image.repository)
        )
        job = Workload(JOB, item.namespace or "", name, containers, item.prior, None, True)
        self.jobs.append(job)
        with self.io.group(f"Job {name}"):
            self.applied.apply(item)
            self.anything_changed = True
            why, diagnosis = self.applied.wait_job(item, self.policy, self.clock)
        if why == "cancelled":
            raise Cancelled("cancelled")
        if not why:
            job.succeed()
            return True
        job.fail(why + "; nothing else was changed", diagnosis)
        for w in self.workloads:
            w.fail(f"not changed: Job {name} failed")
        return False

    def _patch(self, w: Workload) -> None:
        for _ in range(_CONFLICT_TRIES):
            live = w.live
            assert live is not None
            now = {str(c.get("name")): c.get("image") for c in containers_of(template_of(live))}
            if all(now.get(c) == self.image for c in w.containers):
                break
            init = {str(c.get("name")) for c in containers_of(template_of(live), init=False)}
            spec: dict[str, Any] = {}
            regular = [{"name": c, "image": self.image} for c in w.containers if c in init]
            first = [{"name": c, "image": self.image} for c in w.containers if c not in init]
            if regular:
                spec["containers"] = regular
            if first:
                spec["initContainers"] = first
            body = {
                "metadata": {
                    "resourceVersion": live["metadata"]["resourceVersion"],
                    "annotations": self._annotations(),
                },
                "spec": {"template": {"spec": spec}},
            }
            answer = self.kube.request(
                "PATCH",
                w.kind.resource,
                verb="patch",
                namespace=w.namespace,
                name=w.name,
                body=body,
                content_type="application/strategic-merge-patch+json",
                expect=frozenset({409}),
            )
            if isinstance(answer, Response):  # changed since we read it: patch the fresh one
                w.live = self._get(w.kind, w.namespace, w.name)
                if w.live is None:
                    raise ClusterError(f"{w.kind.name} {w.namespace}/{w.name} was deleted")
                continue
            w.live = dict(answer)
            self.anything_changed = True
            break
        else:
            raise ClusterError(
                f"{w.kind.name} {w.namespace}/{w.name} kept changing; gave up after "
                f"{_CONFLICT_TRIES} tries"
            )
        assert w.live is not None
        w.applied(w.live)
        if w.changed:
            generation = (w.live or {}).get("metadata", {}).get("generation")
            self.io.info(f"{w.display}: updated, generation {generation}")
        else:
            self.io.info(f"{w.display}: already running {self.image}")

    # -- 3. wait ---------------------------------------------------------------------------

    def _wait(self, workloads: list[Workload], deadline: float, *, undoing: bool = False) -> None:
        events: queue.Queue[_Item] = queue.Queue()
        for w in workloads:
            w.start_wait(undoing=undoing)
            w.baseline = baseline(w.live)
        for ns, kind in dict.fromkeys((w.namespace, w.kind) for w in workloads):
            self._start(
                Watch(self.kube, kind.resource, ns), f"{kind.lower}/{ns}", "workload", events
            )
        by_key = {w.key: w for w in workloads}
        for w in workloads:
            selector = label_selector(((w.live or {}).get("spec") or {}).get("selector") or {})
            query = [("labelSelector", selector)]
            self._start(Watch(self.kube, PODS, w.namespace, query), w.key, "pods", events)
        while any(w.open for w in workloads):
            if self.cancel.is_set():
                raise Cancelled("cancelled")
            remaining = deadline - self.clock()
            if remaining <= 0:
                for w in workloads:
                    if w.open:
                        self._timed_out(w)
                break
            try:
                key, stream, what = events.get(timeout=min(_TICK, remaining))
            except queue.Empty:
                for w in workloads:
                    if w.open:
                        self._probe(w)
                        self._judge(w, undoing)
                if self._stop_early(workloads, undoing):
                    break
                continue
            changed = self._take(key, stream, what, workloads, by_key)
            for w in changed:
                if w.open:
                    self._judge(w, undoing)
            if self._stop_early(workloads, undoing):
                break
        self._stop_watches()

    def _take(
        self,
        key: str,
        stream: str,
        what: WatchEvent | ClusterError,
        workloads: list[Workload],
        by_key: dict[str, Workload],
    ) -> list[Workload]:
        """Fold one watch item into the workloads' state; returns those it touched."""
        if stream == "workload":
            lower, _, ns = key.partition("/")
            mine = [w for w in workloads if w.kind.lower == lower and w.namespace == ns and w.open]
            if isinstance(what, ClusterError):
                for w in mine:
                    w.fail(what.message)
                return []
            named = {str(o["metadata"]["name"]): o for o in what.objects}
            touched = []
            for w in mine:
                obj = named.get(w.name)
                uid = ((w.live or {}).get("metadata") or {}).get("uid")
                gone = obj is None or obj["metadata"].get("uid") != uid
                if (what.type == "SYNC" and gone) or (obj is not None and what.type == "DELETED"):
                    w.fail(f"{w.kind.name} {w.namespace}/{w.name} was deleted during the rollout")
                elif obj is not None:
                    w.live = dict(obj)
                    touched.append(w)
            return touched
        w = by_key[key]
        if isinstance(what, ClusterError):
            if w.open:
                w.fail(what.message)
            return []
        if what.type == "SYNC":
            w.pods = {p["metadata"]["name"]: p for p in what.objects}
        for pod in what.objects if what.type != "SYNC" else ():
            if what.type == "DELETED":
                w.pods.pop(pod["metadata"]["name"], None)
            else:
                w.pods[pod["metadata"]["name"]] = pod
        return [w]

    def _stop_early(self, workloads: list[Workload], undoing: bool) -> bool:
        """With rollback on, one failure rolls every workload back: stop waiting."""
        if undoing or not self.config.rollback_on_failure:
            return False
        if not any(x.outcome is Outcome.FAILED for x in workloads):
            return False
        for other in workloads:
            if other.open:
                other.fail("stopped waiting: another workload failed")
        return True

    def _start(self, watch: Watch, key: str, stream: str, out: queue.Queue[_Item]) -> None:
        pump = _Pump(watch, key, stream, out)
        self.pumps.append(pump)
        pump.start()

    def _stop_watches(self) -> None:
        pumps, self.pumps = self.pumps, []
        for p in pumps:
            p.watch.stop()
        until = time.monotonic() + _CANCEL_JOIN
        for p in pumps:
            p.join(max(0.0, until - time.monotonic()))

    def _snapshot(self, w: Workload) -> Snapshot:
        assert w.live is not None
        return Snapshot(
            w.kind,
            w.live,
            tuple(w.pods.values()),
            w.baseline,
            w.seen,
            w.scale_up,
            w.create_failure,
        )

    def _probe(self, w: Workload) -> None:
        """Read the events that explain a stuck workload, every few seconds at most."""
        now = self.clock()
        if self.policy.tolerate or now - w.checked_events_at < _PROBE_EVERY or w.live is None:
            return
        w.checked_events_at = now
        new = w.kind.new_pods(w.live, w.pods.values())
        stuck = [p for p in new if (pod_problem(p) or _NONE).reason == "Unschedulable"]
        if stuck:
            w.scale_up = node_coming(self.kube, w.namespace, stuck[0])
        if w.kind is not DEPLOYMENT and not new:
            w.create_failure = create_failure(
                self.kube, w.namespace, w.kind.name, w.name, self._changed_at(w)
            )

    @staticmethod
    def _changed_at(w: Workload) -> str:
        """The server's time of our last write to ``w`` (managedFields), for event filters."""
        times = [
            str(e.get("time", ""))
            for e in ((w.live or {}).get("metadata") or {}).get("managedFields") or []
            if e.get("manager") == "deployer" or e.get("operation") == "Update"
        ]
        return max(times) if times else ""

    def _force(self, w: Workload) -> None:
        """The StatefulSet "forced rollback" of the Kubernetes docs.

        With ``podManagementPolicy: OrderedReady`` the controller waits for a pod
        that is not Ready before it replaces anything, so a pod stuck on the broken
        revision blocks its own replacement (kubernetes/kubernetes#67250; measured on
        the test control plane: the undo stalls). After the undo, such pods are
        deleted once each so the controller recreates them from the restored template.
        """
        live = w.live or {}
        if (live.get("spec") or {}).get("podManagementPolicy", "OrderedReady") != "OrderedReady":
            return
        current = set(map(id, w.kind.new_pods(live, w.pods.values())))
        for name, pod in list(w.pods.items()):
            if name in w.deleted_pods or id(pod) in current or not w.kind.owns_pod(live, pod):
                continue
            ready = condition(pod, "Ready") or {}
            if ready.get("status") == "True" or (pod.get("metadata") or {}).get(
                "deletionTimestamp"
            ):
                continue
            w.deleted_pods.add(name)
            self.io.info(f"{w.display}: deleting pod {name}, stuck on the failed revision")
            self.kube.request(
                "DELETE",
                PODS,
                verb="delete",
                namespace=w.namespace,
                name=name,
                expect=frozenset({404}),
            )

    def _judge(self, w: Workload, undoing: bool) -> None:
        live = w.live
        assert live is not None
        if not undoing and self._superseded(w, live):
            return
        if undoing and w.kind is STATEFULSET:
            self._force(w)
        verdict = judge(self._snapshot(w), self.clock(), self.policy)
        w.seen = verdict.seen
        if verdict.progress and verdict.progress != w.progress:
            w.progress = verdict.progress
            self.io.info(f"{w.display}: {verdict.progress}")
        if verdict.state == "complete":
            w.succeed()
            revision = revision_of(live)
            at = f" (revision {revision})" if revision is not None else ""
            self.io.info(
                f"{w.display}: {'rolled back' if undoing else 'rolled out'}{at} in "
                f"{self.clock() - self.started:.1f} s"
                + ("" if verdict.message.endswith("rolled out") else f": {verdict.message}")
            )
        elif verdict.state == "failed":
            problem = verdict.problem
            if problem is not None:
                self._fail(w, verdict.message, problem.pod, problem.container)
            else:
                pod = verdict.pod
                self._fail(w, verdict.message, pod["metadata"]["name"] if pod else "", "")

    def _superseded(self, w: Workload, live: Mapping[str, Any]) -> bool:
        """Fail ``w`` when another client replaced our image since our patch.

        A newer rollout supersedes ours: judging it would report their rollout as
        ours, and undoing it would roll back over their change. Both are wrong.
        """
        now = {str(c.get("name")): c.get("image") for c in containers_of(template_of(live))}
        others = {name: now.get(name) for name in w.containers if now.get(name) != self.image}
        if not others:
            return False
        running = ", ".join(f"container {name}: {image}" for name, image in others.items())
        generation = (live.get("metadata") or {}).get("generation")
        w.supersede(
            f"superseded by another change to the {w.kind.name} during the rollout: it now "
            f"runs {running} (generation {generation}); not rolled back, the newer change stands"
        )
        return True

    def _timed_out(self, w: Workload) -> None:
        reason, pod = timed_out(self._snapshot(w), self.clock() - self.started)
        self._fail(w, reason, pod["metadata"]["name"] if pod else "", "")

    def _fail(self, w: Workload, reason: str, pod: str, container: str) -> None:
        # Its own short budget: a failure found at the deadline still gets its diagnosis.
        kube = self.kube.with_deadline(self.kube.clock.monotonic() + _DIAGNOSIS_SECONDS)
        owners: tuple[tuple[str, str], ...] = ((w.kind.name, w.name),)
        if w.kind is DEPLOYMENT:
            owners += tuple(("ReplicaSet", name) for name in self._new_replicasets(kube, w, pod))
        summary = f"{w.display}: {reason}"
        if pod and not container:
            ready = condition(w.pods.get(pod) or {}, "Ready") or {}
            why = ready.get("message") or ready.get("reason") or ""
            summary = f"pod {pod}: not ready" + (f": {why}" if why else "")
            container = w.containers[0] if w.containers else ""
        w.fail(reason, diagnose_pod(kube, w.namespace, summary, pod, container, owners))

    def _new_replicasets(self, kube: Kube, w: Workload, pod: str) -> list[str]:
        """The ReplicaSet of ``pod``, else of the current template (best effort, for events)."""
        found = w.pods.get(pod) or {}
        names = [
            str(ref.get("name"))
            for ref in (found.get("metadata") or {}).get("ownerReferences") or []
            if ref.get("kind") == "ReplicaSet"
        ]
        if names or w.live is None:
            return names
        selector = label_selector((w.live.get("spec") or {}).get("selector") or {})
        try:
            listing = kube.request(
                "GET",
                w.kind.history,
                verb="list",
                namespace=w.namespace,
                query=[("labelSelector", selector)],
            )
        except ClusterError:
            return []
        current = template_without_hash(template_of(w.live))
        return [
            str(rs["metadata"]["name"])
            for rs in listing.get("items") or []
            if controlled_by(rs, uid_of(w.live))
            and template_without_hash(template_of(rs)) == current
        ]

    def _report_failures(self, failed: list[Workload]) -> None:
        for w in failed:
            self.io.error(f"{w.label}: {w.reason}", title=f"Rollout of {w.name} failed")
            if w.diagnosis is None:
                continue
            with self.io.group(f"Why {w.name} failed"):
                self.io.info(w.diagnosis.summary)
                if w.diagnosis.events or w.diagnosis.log:
                    with self.io.untrusted() as log:
                        if w.diagnosis.events:
                            log.write("Events:")
                            log.write_lines(f"  {e}" for e in w.diagnosis.events)
                        if w.diagnosis.log:
                            log.write("Last log lines:")
                            log.write_lines(f"  {line}" for line in w.diagnosis.log)
                for note in w.diagnosis.notes:
                    self.io.info(note)

    # -- 4. undo -------------------------------------------------------------------------

    def _roll_back(self, failed: list[Workload]) -> None:
        culprits = ", ".join(
            w.name for w in failed if not w.reason.startswith(("stopped waiting", "not changed"))
        )
        undoing: list[Workload] = []
        with self.io.group("Rolling back"):
            for w in self.workloads:
                if not w.changed or w.superseded:
                    if w.outcome is Outcome.FAILED and w.before is None and w.changed:
                        w.reason += "; created by this run: nothing to roll back to"
                    continue
                why = (
                    w.reason
                    if w.outcome is Outcome.FAILED
                    else f"rolled back because {culprits} failed"
                )
                w.undo_reason = why
                try:
                    if self._undo(w):
                        undoing.append(w)
                except ClusterError as e:
                    w.not_undone(f"rollback failed: {e.message}")
            if undoing:
                # A second before the deadline: reading the diagnosis must fit in it too.
                self._wait(undoing, self.deadline - _FINISH_SECONDS, undoing=True)
            for w in undoing:
                if w.outcome is Outcome.FAILED:
                    self.io.error(f"{w.label}: {w.reason}", title=f"Rollback of {w.name} failed")
            if self.applied is not None:
                handled = {(w.kind.name, w.namespace, w.name) for w in self.workloads}
                self.restored = self.applied.restore(
                    lambda i: (
                        (i.manifest.kind, i.namespace, i.manifest.name) in handled
                        and i.prior is not None
                    )
                )
                for line in self.restored:
                    self.io.info(line)

    def _undo(self, w: Workload) -> bool:
        """Patch ``w`` back; False when there is nothing to undo."""
        if w.before is None:
            return False
        live = self._get(w.kind, w.namespace, w.name)
        if live is None:
            raise ClusterError(f"{w.kind.name} {w.namespace}/{w.name} no longer exists")
        if self._superseded(w, live):  # changed by someone else after ours failed
            w.reason = f"{w.undo_reason}; {w.reason}"
            return False
        plan, now = undo(self.kube, w.kind, w.namespace, w.name, w.before, self.image, w.containers)
        if plan is None:
            w.live = now
            w.not_undone("no rollout history found: nothing to roll back to")
            return False
        self.io.info(f"{w.display}: rolling back to {plan.source}")
        w.live = now
        w.start_undo(w.undo_reason)
        return True

    # -- results ---------------------------------------------------------------------------

    def _result(self, status: str | None = None) -> RolloutResult:
        results = []
        for w in [*self.jobs, *self.workloads]:
            outcome = w.outcome.value or "failed"
            reason = w.reason
            if outcome == "succeeded" and not w.changed and w.kind is not JOB:
                reason = f"already running {self.image}"
            results.append(
                DeploymentResult(
                    namespace=w.namespace,
                    name=w.name,
                    containers=w.containers,
                    previous_image=w.previous_image,
                    new_image=self.image,
                    revision=revision_of(w.live) if w.kind is not JOB else None,
                    result=outcome,
                    reason=reason,
                    diagnosis=w.diagnosis.text() if w.diagnosis else "",
                    kind=w.kind.name,
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
        return RolloutResult(status, tuple(results), tuple(self.restored))


class _NoProblem:
    reason = ""


_NONE: Any = _NoProblem()
