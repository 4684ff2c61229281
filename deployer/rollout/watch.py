"""Step 4, watch: one loop over one event source until every workload has a verdict.

The loop reads :class:`~deployer.rollout.events.Events` (a watch per namespace and
kind, and one per workload's pods), folds each item into the workloads' state and
hands every workload it touched to the judge
(:func:`~deployer.rollout.verdicts.judge_workload`). On every tick of the clock
(busy stream or not) it probes and judges every open workload, so graces run out
and probes run on time. It ends
when every workload is decided, at the deadline, or on cancel (raising
:class:`~deployer.errors.Cancelled`). Nothing else in the rollout waits for the
cluster.
"""

from __future__ import annotations

from deployer.cluster import CANARIES, PODS, Watch, label_selector
from deployer.errors import Cancelled, ClusterError
from deployer.rollout.context import Context
from deployer.rollout.events import Events, Item
from deployer.rollout.flagger import fold_canaries
from deployer.rollout.judge import baseline
from deployer.rollout.kinds import JOB, Kind, template_of
from deployer.rollout.probe import probe
from deployer.rollout.state import Workload
from deployer.rollout.status import job_status
from deployer.rollout.verdicts import judge_workload, time_out

__all__ = ["wait_for"]

TICK = 0.25  # how often the loop wakes without events: cancel and grace checks


def _start(ctx: Context, events: Events, workloads: list[Workload]) -> None:
    groups: dict[tuple[str, Kind], str | None] = {}
    for w in workloads:  # one watch per namespace and kind; a Job's from its creation
        groups.setdefault((w.namespace, w.kind), w.watch_from or None)
    for (ns, kind), since in groups.items():
        watch = Watch(ctx.kube, kind.resource, ns, since=since)
        events.watch(watch, f"{kind.lower}/{ns}", "workload")
    for ns in dict.fromkeys(w.namespace for w in workloads if w.canary is not None):
        events.watch(Watch(ctx.kube, CANARIES, ns), f"canary/{ns}", "canary")
    for w in workloads:
        if w.holder is not None:  # a workloadRef Rollout: its Deployment's generation
            query = [("fieldSelector", f"metadata.name={w.holder.name}")]
            holder = Watch(ctx.kube, w.holder.kind.resource, w.namespace, query)
            events.watch(holder, w.key, "holder")
    for w in workloads:
        selector = label_selector(((w.live or {}).get("spec") or {}).get("selector") or {})
        query = [("labelSelector", selector)]
        pods = Watch(ctx.kube, PODS, w.namespace, query, since=w.watch_from or None)
        events.watch(pods, w.key, "pods")
        if w.kind.history != w.kind.resource:  # a Job has no revisions of its own
            # Its ReplicaSets/ControllerRevisions: which pods are of the new revision.
            history = Watch(ctx.kube, w.kind.history, w.namespace, query)
            events.watch(history, w.key, "history")


def _fold_workloads(item: Item, workloads: list[Workload]) -> list[Workload]:
    lower, _, ns = item.key.partition("/")
    mine = [w for w in workloads if w.kind.lower == lower and w.namespace == ns and w.open]
    what = item.what
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
        if obj is not None and what.type == "DELETED" and w.kind is JOB:
            if job_status(obj).state == "complete":  # ttlSecondsAfterFinished: it is done
                w.live = dict(obj)
                touched.append(w)
            else:
                w.fail(f"Job {w.namespace}/{w.name} was deleted before it completed")
        elif (what.type == "SYNC" and gone) or (obj is not None and what.type == "DELETED"):
            w.fail(f"{w.kind.name} {w.namespace}/{w.name} was deleted during the rollout")
        elif obj is not None:
            w.live = dict(obj)
            touched.append(w)
    return touched


def _fold_objects(item: Item, w: Workload) -> list[Workload]:
    """A pods or history item: the workload's pods or ReplicaSets/ControllerRevisions by name."""
    what = item.what
    if isinstance(what, ClusterError):
        if w.open:
            w.fail(what.message)
        return []
    found = w.history if item.stream == "history" else w.pods
    if what.type == "SYNC":
        found.clear()
    for obj in what.objects:
        if what.type == "DELETED":
            found.pop(obj["metadata"]["name"], None)
        else:
            found[obj["metadata"]["name"]] = obj
    return [w]


def _fold_holder(item: Item, workloads: list[Workload]) -> list[Workload]:
    """The Deployment a Rollout refers to: the generation its controller must catch up with."""
    found = [w for w in workloads if w.key == item.key and w.holder is not None and w.open]
    what = item.what
    if isinstance(what, ClusterError) or not found:
        return []
    w = found[0]
    assert w.holder is not None
    for obj in what.objects if what.type != "DELETED" else ():
        w.holder.generation = int((obj.get("metadata") or {}).get("generation") or 0)
        w.holder.template = dict(template_of(obj))  # someone else's image: superseded
    return [w] if w.live is not None else []


def fold(item: Item, workloads: list[Workload]) -> list[Workload]:
    """Fold one watch item into the workloads' state; returns those it touched."""
    if item.stream == "workload":
        return _fold_workloads(item, workloads)
    if item.stream == "canary":
        return fold_canaries(item, workloads)
    if item.stream == "holder":
        return _fold_holder(item, workloads)
    found = [w for w in workloads if w.key == item.key]
    return _fold_objects(item, found[0]) if found else []


def _stop_early(ctx: Context, workloads: list[Workload], undoing: bool) -> bool:
    """With rollback on, one failure rolls every workload back: stop waiting."""
    if undoing or not ctx.config.rollback_on_failure:
        return False
    if not any(x.failed for x in workloads):
        return False
    for other in workloads:
        if other.open:
            other.stop_waiting()
    return True


def _judge_all(ctx: Context, workloads: list[Workload], undoing: bool) -> None:
    """The clock's tick: probe what is due and judge every open workload (graces run out)."""
    for w in workloads:
        if w.open:
            probe(ctx, w)
        if w.open:
            judge_workload(ctx, w, undoing)


def wait_for(
    ctx: Context, workloads: list[Workload], until: float, *, undoing: bool = False
) -> None:
    """Watch ``workloads`` until each is decided or ``until`` (a value of the clock).

    Ticks are scheduled by the clock, not by silence: a busy event stream (an
    autoscaler's events, a large rollout) never starves the probes or the graces.
    """
    for w in workloads:
        w.start_wait(undoing=undoing)
        w.baseline = baseline(w.live)
    with Events(ctx.clock) as events:
        _start(ctx, events, workloads)
        tick_at = ctx.now()
        while any(w.open for w in workloads):
            if ctx.cancel.is_set():
                raise Cancelled("cancelled")
            now = ctx.now()
            if now >= until:
                for w in workloads:
                    if w.open:
                        time_out(ctx, w)
                break
            item = events.next(max(0.0, min(tick_at, until) - now))
            for w in fold(item, workloads) if item is not None else ():
                if w.open:
                    judge_workload(ctx, w, undoing)
            if ctx.now() >= tick_at:
                _judge_all(ctx, workloads, undoing)
                tick_at = ctx.now() + TICK
            if _stop_early(ctx, workloads, undoing):
                break
