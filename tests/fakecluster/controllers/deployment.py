"""The Deployment controller (pkg/controller/deployment), the parts a rollout observes.

Rolling updates with maxSurge (rounded up) and maxUnavailable (rounded down, 1 if
both are 0), unhealthy old replicas cleaned up first, Recreate; the new
ReplicaSet named ``<deployment>-<pod-template-hash>``; revisions (max + 1, the
reused ReplicaSet's old number into ``revision-history``); annotations copied to
ReplicaSets; status (replicas, updated, ready, available, unavailable,
observedGeneration) and conditions: Available, Progressing (NewReplicaSetCreated,
FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable, ReplicaSetCreateError,
ProgressDeadlineExceeded, DeploymentPaused) and ReplicaFailure copied from the
ReplicaSets with ``SetDeploymentCondition``'s quirk: a condition with the same
status and reason is left alone, so an old message stays (issue 16, item 9).
History beyond ``revisionHistoryLimit`` is deleted once the rollout is complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.fakecluster.controllers.events import record
from tests.fakecluster.errors import ApiError
from tests.fakecluster.meta import (
    condition,
    deep,
    int_or_percent,
    meta,
    owned_by,
    owner_ref,
    parse_time,
    remove_condition,
    set_condition,
    short_hash,
)

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync", "template_equal"]

Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX = "deployment.kubernetes.io/max-replicas"
HASH = "pod-template-hash"
MANAGER = "kube-controller-manager"
_NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        HISTORY,
        DESIRED,
        MAX,
        "deprecated.deployment.rollback.to",
    }
)


def _without_hash(template: Mapping[str, Any]) -> Obj:
    copy = deep(dict(template))
    labels = (copy.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH, None)
    return copy


def template_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """EqualIgnoreHash."""
    return _without_hash(a) == _without_hash(b)


def _replicas(obj: Mapping[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("replicas") or 0)


def _status(obj: Mapping[str, Any], field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def _revision(rs: Mapping[str, Any]) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def fenceposts(d: Mapping[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved like ResolveFenceposts."""
    spec = d.get("spec") or {}
    desired = _replicas(d)
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = int_or_percent(rolling.get("maxSurge", "25%"), desired, True)
    unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(d: Mapping[str, Any]) -> int:
    spec = d.get("spec") or {}
    if (spec.get("strategy") or {}).get("type") != "RollingUpdate" or _replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], _replicas(d))


class _Sync:
    """One sync of one Deployment."""

    def __init__(self, cluster: FakeCluster, d: Obj) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.rs_t = cluster.registry.of_kind("ReplicaSet")
        self.d_t = cluster.registry.of_kind("Deployment")
        self.d = d
        self.name = meta(d)["name"]
        self.ns = meta(d)["namespace"]
        self.key = (self.ns, self.name)
        uid = meta(d)["uid"]
        owned = [rs for rs in self.store.list(self.rs_t, self.ns) if owned_by(rs, uid)]
        owned.sort(key=lambda rs: (meta(rs)["creationTimestamp"], meta(rs)["name"]))
        self.all = owned

    # -- the ReplicaSets -------------------------------------------------------------------

    def new_rs(self) -> Obj | None:
        template = (self.d.get("spec") or {}).get("template") or {}
        return next(
            (rs for rs in self.all if template_equal(rs["spec"]["template"], template)), None
        )

    def old(self, new: Obj | None) -> list[Obj]:
        return [rs for rs in self.all if new is None or meta(rs)["uid"] != meta(new)["uid"]]

    def scale(self, rs: Obj, replicas: int) -> Obj:
        before = _replicas(rs)
        if before == replicas:
            return rs
        updated = deep(rs)
        updated["spec"]["replicas"] = replicas
        annotations = updated["metadata"].setdefault("annotations", {})
        surge = (
            fenceposts(self.d)[0]
            if (self.d["spec"].get("strategy") or {}).get("type") == "RollingUpdate"
            else 0
        )
        annotations[DESIRED] = str(_replicas(self.d))
        annotations[MAX] = str(_replicas(self.d) + surge)
        result = self.store.update(self.rs_t, updated, manager=MANAGER)
        direction = "up" if replicas > before else "down"
        record(
            self.cluster,
            self.d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {meta(rs)['name']} from {before} to {replicas}",
            "deployment-controller",
        )
        self._replace(result)
        return result

    def _replace(self, rs: Obj) -> None:
        self.all = [rs if meta(x)["uid"] == meta(rs)["uid"] else x for x in self.all]

    def ensure_new(self) -> Obj | None:
        """getNewReplicaSet(createIfNotExisted=true), with revision bookkeeping."""
        new = self.new_rs()
        old = self.old(new)
        max_old = max((_revision(rs) for rs in old), default=0)
        revision = max_old + 1
        if new is not None:
            current = _revision(new)
            if current < revision:
                updated = deep(new)
                annotations = updated["metadata"].setdefault("annotations", {})
                if REVISION in annotations:
                    history = [h for h in annotations.get(HISTORY, "").split(",") if h]
                    annotations[HISTORY] = ",".join([*history, str(current)])
                annotations[REVISION] = str(revision)
                for key, value in (meta(self.d).get("annotations") or {}).items():
                    if key not in _NOT_COPIED:
                        annotations[key] = value
                new = self.store.update(self.rs_t, updated, manager=MANAGER)
                self._replace(new)
            if condition(self.d, "Progressing") is None and self.has_deadline():
                self.set_progressing(
                    "True", "FoundNewReplicaSet", f'Found new replica set "{meta(new)["name"]}"'
                )
            self.d["metadata"].setdefault("annotations", {})[REVISION] = str(_revision(new))
            return new
        return self.create_new(revision, old)

    def create_new(self, revision: int, old: list[Obj]) -> Obj | None:
        spec = self.d["spec"]
        template = deep(spec["template"])
        collisions = int((self.d.get("status") or {}).get("collisionCount") or 0)
        digest = short_hash([_without_hash(template), collisions])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH] = digest
        selector = deep(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH] = digest
        annotations = {
            k: v for k, v in (meta(self.d).get("annotations") or {}).items() if k not in _NOT_COPIED
        }
        surge = (
            fenceposts(self.d)[0]
            if (spec.get("strategy") or {}).get("type") == "RollingUpdate"
            else 0
        )
        annotations.update(
            {
                REVISION: str(revision),
                DESIRED: str(_replicas(self.d)),
                MAX: str(_replicas(self.d) + surge),
            }
        )
        name = f"{self.name}-{digest}"
        probe = {"spec": {"replicas": 0}}
        replicas = self.new_replicas([*old, probe], probe)
        body = {
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_ref(self.d)],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = self.store.create(
                self.rs_t,
                body,
                manager=MANAGER,
                user="system:serviceaccount:kube-system:deployment-controller",
            )
        except ApiError as e:
            message = f'Failed to create new replica set "{name}": {e.message}'
            if self.has_deadline():
                self.set_progressing("False", "ReplicaSetCreateError", message)
                self.write_status(self.d["status"])
            record(
                self.cluster,
                self.d,
                "Warning",
                "ReplicaSetCreateError",
                message,
                "deployment-controller",
            )
            self.cluster.controllers.backoff("deployment", self.key)
            return None
        self.cluster.controllers.forget("deployment", self.key)
        self.all.append(created)
        if replicas > 0:
            record(
                self.cluster,
                self.d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {name} from 0 to {replicas}",
                "deployment-controller",
            )
        if self.has_deadline():
            self.set_progressing(
                "True", "NewReplicaSetCreated", f'Created new replica set "{name}"'
            )
        self.d["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
        return created

    def has_deadline(self) -> bool:
        deadline = (self.d.get("spec") or {}).get("progressDeadlineSeconds")
        return deadline is not None and int(deadline) < 2**31 - 1

    def set_progressing(self, status: str, reason: str, message: str) -> None:
        now = self.store.now()
        conditions = list((self.d.setdefault("status", {})).get("conditions") or [])
        new = {
            "type": "Progressing",
            "status": status,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
        self.d["status"]["conditions"] = set_condition(
            conditions, new, keep_message_on_same_reason=True
        )

    # -- rolling update ----------------------------------------------------------------------

    def new_replicas(self, all_rs: list[Any], new: Mapping[str, Any]) -> int:
        """NewRSNewReplicas."""
        spec = self.d["spec"]
        desired = _replicas(self.d)
        if (spec.get("strategy") or {}).get("type") != "RollingUpdate":
            return desired
        surge = fenceposts(self.d)[0]
        current = sum(_replicas(rs) for rs in all_rs)
        most = desired + surge
        if current >= most:
            return _replicas(new)
        return _replicas(new) + min(most - current, desired - _replicas(new))

    def rolling(self, new: Obj) -> None:
        desired = _replicas(self.d)
        if _replicas(new) != desired:
            target = desired if _replicas(new) > desired else self.new_replicas(self.all, new)
            if target != _replicas(new):
                self.scale(new, target)
                return
        old = [rs for rs in self.old(new) if _replicas(rs) > 0]
        old_count = sum(_replicas(rs) for rs in old)
        if old_count == 0:
            return
        all_count = sum(_replicas(rs) for rs in self.all)
        min_available = desired - max_unavailable(self.d)
        new_unavailable = _replicas(new) - _status(new, "availableReplicas")
        max_down = all_count - min_available - new_unavailable
        if max_down <= 0:
            return
        cleaned = 0
        for rs in sorted(old, key=lambda r: meta(r)["creationTimestamp"]):
            if cleaned >= max_down:
                break
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            if unhealthy <= 0:
                continue
            down = min(max_down - cleaned, unhealthy)
            self.scale(rs, _replicas(rs) - down)
            cleaned += down
        available = sum(_status(rs, "availableReplicas") for rs in self.all)
        if available <= min_available:
            return
        budget = available - min_available
        done = 0
        for rs in sorted(self.old(new), key=lambda r: meta(r)["creationTimestamp"]):
            current = self._fresh(rs)
            if done >= budget:
                break
            if _replicas(current) == 0:
                continue
            down = min(_replicas(current), budget - done)
            self.scale(current, _replicas(current) - down)
            done += down

    def _fresh(self, rs: Obj) -> Obj:
        return next((x for x in self.all if meta(x)["uid"] == meta(rs)["uid"]), rs)

    def recreate(self, new: Obj | None) -> Obj | None:
        old = [rs for rs in self.old(new) if _replicas(rs) > 0]
        for rs in old:
            self.scale(rs, 0)
        if old:
            return new
        pods = self.cluster.store.list(self.cluster.registry.of_kind("Pod"), self.ns)
        old_uids = {meta(rs)["uid"] for rs in self.old(new)}
        if any(owned_by(p, uid) for p in pods for uid in old_uids):
            return new  # wait for the old pods to be gone
        if new is None:
            new = self.ensure_new()
        if new is not None and _replicas(new) != _replicas(self.d):
            new = self.scale(new, _replicas(self.d))
        return new

    # -- status ----------------------------------------------------------------------------

    def calculate(self, new: Obj | None) -> Obj:
        status = deep(self.d.get("status") or {})
        desired = _replicas(self.d)
        available = sum(_status(rs, "availableReplicas") for rs in self.all)
        total = sum(_replicas(rs) for rs in self.all)
        status.update(
            {
                "observedGeneration": meta(self.d).get("generation", 1),
                "replicas": sum(_status(rs, "replicas") for rs in self.all),
                "updatedReplicas": _status(new, "replicas") if new is not None else 0,
                "readyReplicas": sum(_status(rs, "readyReplicas") for rs in self.all),
                "availableReplicas": available,
                "unavailableReplicas": max(0, total - available),
                "terminatingReplicas": sum(_status(rs, "terminatingReplicas") for rs in self.all),
            }
        )
        for field in (
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ):
            if status[field] == 0:
                del status[field]
        now = self.store.now()
        ok = available >= desired - max_unavailable(self.d)
        cond = {
            "type": "Available",
            "status": "True" if ok else "False",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if ok
            else "Deployment does not have minimum availability.",
        }
        status["conditions"] = set_condition(
            list(status.get("conditions") or []), cond, keep_message_on_same_reason=True
        )
        return status

    def complete(self, status: Mapping[str, Any]) -> bool:
        desired = _replicas(self.d)
        return (
            int(status.get("updatedReplicas") or 0) == desired
            and int(status.get("replicas") or 0) == desired
            and int(status.get("availableReplicas") or 0) == desired
            and int(status.get("observedGeneration") or 0)
            >= int(meta(self.d).get("generation") or 0)
        )

    def progressing(self, status: Mapping[str, Any]) -> bool:
        old = self.d.get("status") or {}

        def n(s: Mapping[str, Any], f: str) -> int:
            return int(s.get(f) or 0)

        return (
            n(status, "updatedReplicas") > n(old, "updatedReplicas")
            or n(status, "replicas") - n(status, "updatedReplicas")
            < n(old, "replicas") - n(old, "updatedReplicas")
            or n(status, "readyReplicas") > n(old, "readyReplicas")
            or n(status, "availableReplicas") > n(old, "availableReplicas")
        )

    def roll_status(self, new: Obj | None) -> None:
        """syncRolloutStatus."""
        status = self.calculate(new)
        rs_name = meta(new)["name"] if new is not None else ""
        conditions = list(status.get("conditions") or [])
        current = condition(self.d, "Progressing")
        complete_before = (
            status.get("replicas", 0) == status.get("updatedReplicas", 0)
            and current is not None
            and current.get("reason") == "NewReplicaSetAvailable"
        )
        now = self.store.now()
        if not self.has_deadline():
            conditions = remove_condition(conditions, "Progressing")
        elif not complete_before:
            if self.complete(status):
                cond = _progressing(
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                    now,
                )
                conditions = set_condition(conditions, cond, keep_message_on_same_reason=True)
            elif self.progressing(status):
                cond = _progressing(
                    "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', now
                )
                if current is not None and current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                conditions = [*remove_condition(conditions, "Progressing"), cond]
            elif self.timed_out(conditions):
                cond = _progressing(
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                    now,
                )
                conditions = set_condition(conditions, cond, keep_message_on_same_reason=True)
        failures = _replica_failures(self.all, new)
        if failures:
            conditions = set_condition(conditions, failures, keep_message_on_same_reason=True)
        else:
            conditions = remove_condition(conditions, "ReplicaFailure")
        status["conditions"] = conditions
        self.write_status(status)
        self.requeue_stuck(status)

    def timed_out(self, conditions: list[Obj]) -> bool:
        cond = next((c for c in conditions if c.get("type") == "Progressing"), None)
        if cond is None or cond.get("reason") == "NewReplicaSetAvailable":
            return False
        if cond.get("reason") == "ProgressDeadlineExceeded":
            return True
        deadline = int(self.d["spec"]["progressDeadlineSeconds"])
        return parse_time(str(cond["lastUpdateTime"])) + deadline < self.cluster.clock.time()

    def requeue_stuck(self, status: Mapping[str, Any]) -> None:
        cond = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None
        )
        if cond is None or not self.has_deadline():
            return
        if cond.get("reason") in (
            "NewReplicaSetAvailable",
            "ProgressDeadlineExceeded",
        ) or self.complete(status):
            return
        deadline = int(self.d["spec"]["progressDeadlineSeconds"])
        after = parse_time(str(cond["lastUpdateTime"])) + deadline - self.cluster.clock.time()
        self.cluster.controllers.requeue("deployment", self.key, max(after, 0.0) + 1.0)

    def write_status(self, status: Mapping[str, Any]) -> None:
        current = self.store.get(self.d_t, self.ns, self.name)
        if current is None:
            return
        wanted_annotations = meta(self.d).get("annotations") or {}
        if (
            current.get("status") == status
            and (meta(current).get("annotations") or {}) == wanted_annotations
        ):
            return
        body = deep(current)
        body["status"] = deep(dict(status))
        body["metadata"]["annotations"] = deep(wanted_annotations)
        self.d = self.store.update(self.d_t, body, manager=MANAGER, subresource="status")

    def cleanup(self, new: Obj | None) -> None:
        limit = (self.d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        old = [
            rs
            for rs in self.old(new)
            if _replicas(rs) == 0
            and _status(rs, "replicas") == 0
            and not meta(rs).get("deletionTimestamp")
        ]
        extra = len(old) - int(limit)
        for rs in sorted(old, key=_revision)[: max(0, extra)]:
            self.store.delete(self.rs_t, self.ns, meta(rs)["name"])


def _progressing(status: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": "Progressing",
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _replica_failures(all_rs: list[Obj], new: Obj | None) -> Obj | None:
    """getReplicaFailures: the new ReplicaSet's ReplicaFailure, else any old one's."""
    ordered = ([new] if new is not None else []) + [rs for rs in all_rs if rs is not new]
    for rs in ordered:
        cond = condition(rs, "ReplicaFailure")
        if cond is not None:
            return {
                "type": "ReplicaFailure",
                "status": cond.get("status"),
                "lastUpdateTime": cond.get("lastTransitionTime"),
                "lastTransitionTime": cond.get("lastTransitionTime"),
                "reason": cond.get("reason"),
                "message": cond.get("message"),
            }
    return None


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    """syncDeployment."""
    store = cluster.store
    found = store.get(cluster.registry.of_kind("Deployment"), key[0], key[1])
    if found is None or meta(found).get("deletionTimestamp"):
        return
    s = _Sync(cluster, deep(found))
    spec = s.d["spec"]
    if spec.get("paused"):
        new = s.new_rs()
        if new is not None and _replicas(new) != _replicas(s.d) and not s.old(new):
            s.scale(new, _replicas(s.d))
        _paused_condition(s, True)
        status = s.calculate(new)
        s.write_status(status)
        return
    _paused_condition(s, False)
    if (spec.get("strategy") or {}).get("type") == "Recreate":
        new = s.recreate(s.new_rs())
    else:
        new = s.ensure_new()
        if new is None:
            return
        before = [deep(rs) for rs in s.all]
        s.rolling(new)
        new = s._fresh(new)
        if before == s.all and s.complete(s.calculate(new)):
            s.cleanup(new)
    s.roll_status(new)


def _paused_condition(s: _Sync, paused: bool) -> None:
    current = condition(s.d, "Progressing")
    if not s.has_deadline():
        return
    if paused and (current is None or current.get("reason") != "DeploymentPaused"):
        s.set_progressing("Unknown", "DeploymentPaused", "Deployment is paused")
    elif not paused and current is not None and current.get("reason") == "DeploymentPaused":
        s.set_progressing("Unknown", "DeploymentResumed", "Deployment is resumed")
