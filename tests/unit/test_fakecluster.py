"""The fake cluster itself: the apiserver, watch and controller semantics the rollout relies on.

Each test states a behaviour of the real control plane (kube-apiserver, the
Deployment/ReplicaSet controllers, the kubelet) and checks the fake has it, so
unit tests of the rollout that pass against the fake mean something.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import urllib3

from deployer.cluster import DEPLOYMENTS, EVENTS, PODS, REPLICASETS, SSAR, Kube, Response, Watch
from deployer.errors import AccessDenied, ClusterError
from tests.fakecluster import (
    FakeClock,
    FakeCluster,
    FakeDeadlock,
    deployment,
    make_kube,
    rolled_out,
)

IMAGE = "registry.example/web@sha256:" + "1" * 64
IMAGE2 = "registry.example/web@sha256:" + "2" * 64


def image(name: str, n: int = 3) -> str:
    return f"registry.example/{name}@sha256:{str(n) * 64}"


def set_image(cluster: FakeCluster, name: str, ref: str, kind: str = "Deployment") -> None:
    cluster.patch(
        kind,
        name,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": ref}]}}}},
    )


def ready_web(cluster: FakeCluster, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    cluster.create(deployment("web", IMAGE, replicas=replicas, **spec))
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 30)
    found = cluster.get("Deployment", "web")
    assert found is not None
    return found


# -- the clock ---------------------------------------------------------------------------------


def test_waiting_moves_virtual_time_and_runs_what_is_due_in_order() -> None:
    clock = FakeClock()
    ran: list[tuple[str, float]] = []
    clock.call_later(5, lambda: ran.append(("b", clock.elapsed)))
    clock.call_later(2, lambda: ran.append(("a", clock.elapsed)))
    start = clock.monotonic()
    assert clock.wait(threading.Event(), 10) is False
    assert clock.monotonic() - start == 10
    assert ran == [("a", 2), ("b", 5)]
    done = threading.Event()
    clock.call_later(1, done.set)
    assert clock.wait(done, 60) is True
    assert clock.elapsed == 11


def test_a_thread_waiting_on_the_clock_is_woken_when_time_reaches_it() -> None:
    clock = FakeClock()
    woke: list[float] = []

    def sleeper() -> None:
        clock.sleep(30)
        woke.append(clock.elapsed)

    thread = threading.Thread(target=sleeper)
    thread.start()
    clock.sleep(100)  # the main thread's wait lets the sleeper's deadline come first
    thread.join(5)
    assert woke == [30]
    assert clock.elapsed == 100


def test_a_wait_with_nothing_due_and_no_deadline_is_a_deadlock_not_a_hang() -> None:
    clock = FakeClock()
    clock.deadlock_after = 0.2
    with pytest.raises(FakeDeadlock, match="nothing is due"):
        clock.block_until(lambda: False, None)


# -- objects -------------------------------------------------------------------------------------


def test_objects_get_uid_resource_version_and_generation_like_the_apiserver() -> None:
    cluster = FakeCluster()
    created = cluster.create(deployment("web", IMAGE))
    m = created["metadata"]
    assert m["generation"] == 1 and m["uid"] and m["creationTimestamp"] == "2026-01-01T00:00:00Z"
    rv = int(m["resourceVersion"])
    labelled = cluster.patch("Deployment", "web", {"metadata": {"labels": {"team": "a"}}})
    assert labelled["metadata"]["generation"] == 1  # metadata is not spec
    assert int(labelled["metadata"]["resourceVersion"]) > rv
    annotated = cluster.patch("Deployment", "web", {"metadata": {"annotations": {"x": "1"}}})
    assert annotated["metadata"]["generation"] == 2  # a Deployment's annotations count
    scaled = cluster.patch("Deployment", "web", {"spec": {"replicas": 3}})
    assert scaled["metadata"]["generation"] == 3
    cluster.run(5)
    after = cluster.get("Deployment", "web")
    assert after is not None
    assert after["metadata"]["generation"] == 3  # status writes do not bump it
    assert after["status"]["observedGeneration"] == 3
    same = cluster.patch("Deployment", "web", {"spec": {"replicas": 3}})
    assert same["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]  # no-op


def test_defaults_are_filled_in_as_the_apiserver_does() -> None:
    cluster = FakeCluster()
    created = cluster.create(deployment("web", "nginx"))
    spec = created["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Always"  # no tag
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    assert "status" not in created or created["status"] == {}


def test_errors_are_status_bodies_with_code_reason_and_message() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster)
    missing = kube.request(
        "GET", DEPLOYMENTS, verb="get", namespace="default", name="nope", expect=frozenset({404})
    )
    assert isinstance(missing, Response)
    assert missing.body["reason"] == "NotFound"
    assert missing.body["message"] == 'deployments.apps "nope" not found'
    assert missing.body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    cluster.create(deployment("web", IMAGE))
    again = kube.request(
        "POST",
        DEPLOYMENTS,
        verb="create",
        namespace="default",
        body=deployment("web", IMAGE),
        expect=frozenset({409}),
    )
    assert isinstance(again, Response)
    assert (again.status, again.body["reason"]) == (409, "AlreadyExists")
    bad = deployment("bad", IMAGE)
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ClusterError, match=r"422 Unprocessable Entity.*`selector` does not match"):
        kube.request("POST", DEPLOYMENTS, verb="create", namespace="default", body=bad)


def test_a_stale_resource_version_in_a_patch_is_a_409_conflict() -> None:
    cluster = FakeCluster()
    live = cluster.create(deployment("web", IMAGE))
    cluster.patch("Deployment", "web", {"metadata": {"labels": {"moved": "on"}}})
    kube = make_kube(cluster)
    for body, content_type in (
        (
            {
                "metadata": {"resourceVersion": live["metadata"]["resourceVersion"]},
                "spec": {"replicas": 5},
            },
            "application/strategic-merge-patch+json",
        ),
        (
            [
                {
                    "op": "replace",
                    "path": "/metadata/resourceVersion",
                    "value": live["metadata"]["resourceVersion"],
                },
                {"op": "replace", "path": "/spec/replicas", "value": 5},
            ],
            "application/json-patch+json",
        ),
    ):
        answer = kube.request(
            "PATCH",
            DEPLOYMENTS,
            verb="patch",
            namespace="default",
            name="web",
            body=body,
            content_type=content_type,
            expect=frozenset({409}),
        )
        assert isinstance(answer, Response)
        assert answer.body["reason"] == "Conflict"
        assert "the object has been modified" in answer.body["message"]
    current = cluster.get("Deployment", "web")
    assert current is not None and current["spec"]["replicas"] == 2


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    cluster = FakeCluster()
    body = deployment("web", IMAGE)
    body["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": "envoy:1"})
    cluster.create(body)
    set_image(cluster, "web", IMAGE2)
    found = cluster.get("Deployment", "web")
    assert found is not None
    containers = found["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("app", IMAGE2), ("proxy", "envoy:1")]
    replaced = cluster.patch(
        "Deployment",
        "web",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "only", "image": IMAGE}, {"$patch": "replace"}]
                    }
                }
            }
        },
    )
    assert [c["name"] for c in replaced["spec"]["template"]["spec"]["containers"]] == ["only"]


def test_server_side_apply_creates_updates_and_drops_fields_it_no_longer_sets() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster)
    from deployer.cluster import Resource

    configmaps = Resource("", "v1", "configmaps")

    def apply(data: dict[str, str], *, dry: bool = False, manager: str = "deployer") -> Any:
        query = [("fieldManager", manager), ("force", "true")] + (
            [("dryRun", "All")] if dry else []
        )
        return kube.request(
            "PATCH",
            configmaps,
            verb="patch",
            namespace="default",
            name="settings",
            query=query,
            body={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": data,
            },
            content_type="application/apply-patch+yaml",
        )

    assert apply({"a": "1"}, dry=True)["data"] == {"a": "1"}
    assert cluster.get("ConfigMap", "settings") is None  # dryRun=All changes nothing
    apply({"a": "1", "b": "2"})
    cluster.patch("ConfigMap", "settings", {"data": {"c": "3"}})  # another manager's field
    after = apply({"a": "9"})
    assert after["data"] == {"a": "9", "c": "3"}  # b dropped (ours), c kept (theirs)
    managers = {e["manager"]: e["operation"] for e in after["metadata"]["managedFields"]}
    assert managers == {"deployer": "Apply", "kubectl-patch": "Update"}


def test_job_template_is_immutable_so_an_apply_is_refused() -> None:
    from tests.fakecluster import job

    cluster = FakeCluster()
    cluster.create(job("migrate", IMAGE))
    kube = make_kube(cluster)
    from deployer.cluster import JOBS

    changed = job("migrate", IMAGE2)
    answer = kube.request(
        "PATCH",
        JOBS,
        verb="patch",
        namespace="default",
        name="migrate",
        query=[("fieldManager", "deployer"), ("force", "true"), ("dryRun", "All")],
        body=changed,
        content_type="application/apply-patch+yaml",
        expect=frozenset({422}),
    )
    assert isinstance(answer, Response)
    assert "field is immutable" in answer.body["message"]


# -- watches ---------------------------------------------------------------------------------------


def test_list_then_watch_from_its_version_sees_every_later_change_and_ends_at_timeout() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster)
    listing = kube.request("GET", DEPLOYMENTS, verb="list", namespace="default")
    cluster.create(deployment("web", IMAGE))
    events = list(
        kube.watch(
            DEPLOYMENTS,
            "default",
            resource_version=listing["metadata"]["resourceVersion"],
            query=[],
            timeout_seconds=30,
        )
    )
    kinds = [e["type"] for e in events]
    assert kinds[0] == "ADDED" and set(kinds[1:]) == {"MODIFIED"}
    assert cluster.clock.elapsed == 30  # the server ended the watch
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)


def test_label_selector_watch_turns_a_label_change_into_added_and_deleted() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster)
    start = str(cluster.store.rv)
    cluster.create(deployment("web", IMAGE))
    cluster.controllers.disabled.add("deployment")
    cluster.patch("Deployment", "web", {"metadata": {"labels": {"tier": "front"}}})
    cluster.patch("Deployment", "web", {"metadata": {"labels": {"tier": "back"}}})
    events = list(
        kube.watch(
            DEPLOYMENTS,
            "default",
            resource_version=start,
            query=[("labelSelector", "tier=front")],
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


def test_bookmarks_carry_the_current_version() -> None:
    cluster = FakeCluster()
    cluster.bookmark_interval = 10
    kube = make_kube(cluster)
    events = list(
        kube.watch(
            PODS, "default", resource_version=str(cluster.store.rv), query=[], timeout_seconds=25
        )
    )
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(cluster.store.rv)


@pytest.mark.parametrize("as_status", [False, True])
def test_a_watch_from_a_compacted_version_is_410_gone(as_status: bool) -> None:
    cluster = FakeCluster()
    old = str(cluster.store.rv)
    cluster.create(deployment("web", IMAGE))
    cluster.compact()
    cluster.faults.gone_as_status = as_status
    transport = cluster.transport
    stream = transport.open_stream(
        "/apis/apps/v1/namespaces/default/deployments",
        [("watch", "true"), ("resourceVersion", old)],
        (10, 40),
    )
    if as_status:
        assert stream.status == 410
        assert b'"reason":"Expired"' in stream.read()
    else:
        assert stream.status == 200
        (line,) = list(stream.chunks())
        assert b'"type":"ERROR"' in line and b'"code":410' in line
    # The product's Watch lists again and goes on.
    kube = make_kube(cluster, deadline=cluster.clock.monotonic() + 5)
    watch = Watch(kube, DEPLOYMENTS, "default")
    watch._rv = old  # as if it had been watching from before the compaction
    seen = [e.type for e in watch]
    assert seen[0] == "SYNC"


def test_a_cut_connection_is_a_protocol_error_and_watch_resumes_without_losing_changes() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", IMAGE, replicas=1))
    kube = make_kube(cluster, deadline=cluster.clock.monotonic() + 20)
    cluster.clock.call_later(0.5, lambda: cluster.cut_watches("Pod"))
    names: set[str] = set()
    watch = Watch(kube, PODS, "default")
    for event in watch:
        for obj in event.objects:
            if (obj.get("status") or {}).get("phase") == "Running":
                names.add(obj["metadata"]["name"])
        if names:
            watch.stop()
    assert names
    reset = cluster.requests_to("GET", "/pods")
    assert len(reset) >= 3  # list, the watch that was cut, the watch resumed


def test_a_stalled_watch_times_out_at_the_clients_read_timeout() -> None:
    cluster = FakeCluster()
    cluster.stall_watches()
    stream = cluster.transport.open_stream(
        "/api/v1/namespaces/default/pods", [("watch", "true"), ("resourceVersion", "")], (10, 20)
    )
    cluster.stall_watches()
    cluster.create(deployment("web", IMAGE, replicas=1))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        list(stream.chunks())
    assert cluster.clock.elapsed == 20


def test_threaded_watch_pumps_see_events_as_virtual_time_passes() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", IMAGE, replicas=2))
    kube = make_kube(cluster, deadline=cluster.clock.monotonic() + 60)
    wake = threading.Event()
    seen: list[tuple[float, str]] = []
    watch = Watch(kube, PODS, "default")

    def pump() -> None:
        for event in watch:
            for obj in event.objects:
                seen.append((cluster.clock.elapsed, (obj.get("status") or {}).get("phase", "")))
            wake.set()

    thread = threading.Thread(target=pump)
    thread.start()
    end = cluster.clock.monotonic() + 10
    while cluster.clock.monotonic() < end:
        cluster.clock.wait(wake, 0.5)
        wake.clear()
    watch.stop()
    thread.join(5)
    assert not thread.is_alive()
    running = [t for t, phase in seen if phase == "Running"]
    assert running and min(running) == pytest.approx(1.0)  # ready_delay after the bind


# -- the outage ---------------------------------------------------------------------------------------


def test_an_outage_refuses_connections_and_the_client_retries_until_it_ends() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", IMAGE))
    cluster.outage(3)
    kube = make_kube(cluster, deadline=cluster.clock.monotonic() + 30)
    found = kube.request("GET", DEPLOYMENTS, verb="get", namespace="default", name="web")
    assert found["metadata"]["name"] == "web"
    assert cluster.clock.elapsed >= 3
    cluster.outage(3, mode="503")
    before = len(cluster.requests)
    kube.request("GET", DEPLOYMENTS, verb="get", namespace="default", name="web")
    assert len(cluster.requests) - before > 1  # answered 503, tried again


# -- authorization --------------------------------------------------------------------------------------


def test_a_restricted_role_is_answered_in_access_reviews_and_enforced() -> None:
    cluster = FakeCluster()
    cluster.restrict("testenv/cluster/rbac.yaml")
    kube = make_kube(cluster)

    def may(verb: str, resource: str, group: str) -> bool:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": "default",
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                }
            },
        }
        return bool(kube.request("POST", SSAR, verb="create", body=body)["status"]["allowed"])

    assert may("patch", "deployments", "apps")
    assert may("delete", "pods", "")
    assert not may("delete", "deployments", "apps")
    with pytest.raises(AccessDenied, match=r"may not delete deployments.apps web"):
        kube.request("DELETE", DEPLOYMENTS, verb="delete", namespace="default", name="web")


def test_discovery_lists_the_served_resources() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster)
    from deployer.cluster import discover

    cache: dict[str, list[Any]] = {}
    assert discover(kube, "apps/v1", "Deployment", cache) == DEPLOYMENTS
    assert discover(kube, "v1", "ConfigMap", cache).plural == "configmaps"
    with pytest.raises(ClusterError, match="does not serve kind Widget"):
        discover(kube, "example.com/v1", "Widget", cache)


# -- Deployments --------------------------------------------------------------------------------------


def test_a_rolling_update_respects_max_surge_and_max_unavailable() -> None:
    cluster = FakeCluster()
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    ready_web(cluster, replicas=4, strategy=strategy)
    set_image(cluster, "web", IMAGE2)
    most, least = 0, 99
    for _ in range(200):
        cluster.run(0.1)
        pods = [p for p in cluster.list("Pod") if not p["metadata"].get("deletionTimestamp")]
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions") or []
            )
        ]
        most, least = max(most, len(pods)), min(least, len(ready))
        if rolled_out(cluster, "Deployment", "web"):
            break
    assert rolled_out(cluster, "Deployment", "web")
    assert (most, least) == (5, 4)


def test_revisions_and_a_rollback_reusing_the_old_replicaset() -> None:
    cluster = FakeCluster()
    ready_web(cluster)
    set_image(cluster, "web", IMAGE2)
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 60)
    set_image(cluster, "web", IMAGE)  # back to the first template
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 60)
    sets = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs
        for rs in cluster.list("ReplicaSet")
    }
    assert len(sets) == 2  # the first ReplicaSet was reused
    first = sets[IMAGE]["metadata"]
    assert first["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert first["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    hash_ = first["labels"]["pod-template-hash"]
    assert first["name"] == f"web-{hash_}"
    assert sets[IMAGE]["spec"]["selector"]["matchLabels"]["pod-template-hash"] == hash_
    d = cluster.get("Deployment", "web")
    assert (
        d is not None and d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    )
    running = [p for p in cluster.list("Pod") if not p["metadata"].get("deletionTimestamp")]
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in running} == {hash_}


def test_progressing_reasons_through_a_rollout_and_the_deadline() -> None:
    cluster = FakeCluster()
    ready_web(cluster, progressDeadlineSeconds=30)
    set_image(cluster, "web", image("never-ready"))
    changed_at = cluster.clock.elapsed

    def reason() -> str:
        d = cluster.get("Deployment", "web") or {}
        return str(
            next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")["reason"]
        )

    assert cluster.run_until(lambda: reason() == "ProgressDeadlineExceeded", 120)
    reasons: list[str] = []
    for change in cluster.store.history:  # every state the Deployment went through
        if change.t.kind == "Deployment":
            for cond in (change.obj.get("status") or {}).get("conditions") or []:
                if cond["type"] == "Progressing" and (not reasons or reasons[-1] != cond["reason"]):
                    reasons.append(cond["reason"])
    assert reasons[-4:] == [
        "NewReplicaSetAvailable",
        "NewReplicaSetCreated",
        "ReplicaSetUpdated",
        "ProgressDeadlineExceeded",
    ]
    # The deadline counts from the last progress: one new pod created, none became ready.
    assert 30 < cluster.clock.elapsed - changed_at <= 32


def test_a_replica_failure_of_the_new_replicaset_keeps_the_old_message_on_the_deployment() -> None:
    """SetDeploymentCondition leaves a condition with the same status and reason alone.

    So the Deployment's ReplicaFailure still tells the first failure after the new
    ReplicaSet fails for another reason; only the ReplicaSet's own condition is right
    (issue 16, item 9).
    """
    from tests.fakecluster import quota

    cluster = FakeCluster()
    cluster.create(quota("pods", {"pods": "2"}))
    cluster.create(deployment("web", IMAGE, replicas=3))
    cluster.run(5)
    d = cluster.get("Deployment", "web")
    assert d is not None
    old_failure = next(c for c in d["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert "exceeded quota: pods" in old_failure["message"]
    cluster.patch(
        "Deployment", "web", {"spec": {"template": {"spec": {"serviceAccountName": "robot"}}}}
    )
    cluster.run(5)
    d = cluster.get("Deployment", "web")
    assert d is not None
    failure = next(c for c in d["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert failure == old_failure
    new_rs = next(
        rs
        for rs in cluster.list("ReplicaSet")
        if rs["spec"]["template"]["spec"].get("serviceAccountName") == "robot"
    )
    own = next(c for c in new_rs["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert (own["reason"], own["status"]) == ("FailedCreate", "True")
    assert 'serviceaccount "robot" not found' in own["message"]


# -- pods ---------------------------------------------------------------------------------------------


def _container_state(cluster: FakeCluster) -> list[tuple[str, int]]:
    found = []
    for pod in cluster.list("Pod"):
        for cs in pod["status"].get("containerStatuses") or []:
            state = cs["state"]
            reason = (state.get("waiting") or state.get("terminated") or {}).get("reason") or next(
                iter(state)
            )
            found.append((str(reason), int(cs["restartCount"])))
    return found


def test_a_crash_loop_restarts_with_the_kubelets_back_off() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", image("crash-loop"), replicas=1))
    restarts_at: dict[int, float] = {}
    for _ in range(1000):
        cluster.run(0.5)
        for reason, restarts in _container_state(cluster):
            if reason == "CrashLoopBackOff":
                restarts_at.setdefault(restarts, cluster.clock.elapsed)
        if 4 in restarts_at:
            break
    # Bound at 0, ready delay 1 s, runs 1 s, restarts at once, then 10 s, 20 s, 40 s.
    assert restarts_at == {1: 3.0, 2: 14.0, 3: 35.0, 4: 76.0}
    events = [e for e in cluster.events() if e["reason"] == "BackOff"]
    assert events and events[0]["count"] == 4 and events[0]["type"] == "Warning"


def test_a_failed_pull_flips_between_err_image_pull_and_image_pull_back_off() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", image("fail-pull"), replicas=1))
    flips: list[tuple[float, str]] = []
    for _ in range(160):
        cluster.run(0.5)
        ((reason, _),) = _container_state(cluster)
        if not flips or flips[-1][1] != reason:
            flips.append((cluster.clock.elapsed, reason))
    assert flips[:7] == [
        (0.5, "ContainerCreating"),
        (1.0, "ErrImagePull"),
        (2.0, "ImagePullBackOff"),
        (12.0, "ErrImagePull"),
        (13.0, "ImagePullBackOff"),
        (33.0, "ErrImagePull"),
        (34.0, "ImagePullBackOff"),
    ]
    pod = cluster.list("Pod")[0]
    assert pod["status"]["phase"] == "Pending"


def test_never_ready_and_unschedulable_pods_and_the_autoscaler() -> None:
    cluster = FakeCluster()
    cluster.autoscaler.enable(delay=60)
    cluster.create(deployment("web", image("unschedulable"), replicas=1))
    cluster.run(1)
    (pod,) = cluster.list("Pod")
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    assert scheduled["message"].startswith(
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )
    reasons = [e["reason"] for e in cluster.events(name=pod["metadata"]["name"])]
    assert reasons == ["FailedScheduling", "TriggeredScaleUp"]
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 70)
    assert 61 <= cluster.clock.elapsed <= 63


def test_pod_logs_honour_tail_lines_limit_bytes_and_previous() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", image("crash-loop"), replicas=1))
    cluster.run(20)
    (pod,) = cluster.list("Pod")
    name = pod["metadata"]["name"]
    kube = make_kube(cluster)
    text = kube.request(
        "GET",
        PODS,
        verb="get",
        namespace="default",
        name=name,
        sub="log",
        query=[("tailLines", 1), ("previous", "true")],
        raw=True,
    )
    assert text == "panic: dial tcp 10.96.0.20:5432: connect: connection refused\n"
    cluster.logs[("default", name, "app", True)] = "x" * 100
    cut = kube.request(
        "GET",
        PODS,
        verb="get",
        namespace="default",
        name=name,
        sub="log",
        query=[("limitBytes", 10), ("previous", "true")],
        raw=True,
    )
    assert cut == "x" * 10


def test_events_are_listed_by_field_selector_like_the_diagnosis_does() -> None:
    cluster = FakeCluster()
    cluster.create(deployment("web", image("never-ready"), replicas=1))
    cluster.run(25)
    (pod,) = cluster.list("Pod")
    kube = make_kube(cluster)
    listing = kube.request(
        "GET",
        EVENTS,
        verb="list",
        namespace="default",
        query=[
            (
                "fieldSelector",
                f"involvedObject.kind=Pod,involvedObject.name={pod['metadata']['name']}",
            )
        ],
    )
    unhealthy = [e for e in listing["items"] if e["reason"] == "Unhealthy"]
    assert unhealthy and unhealthy[0]["count"] == 3 and unhealthy[0]["type"] == "Warning"
    assert all(e["involvedObject"]["name"] == pod["metadata"]["name"] for e in listing["items"])


def test_a_kube_on_the_fake_reads_the_fake_clock() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster, deadline=cluster.clock.monotonic() + 5)
    assert isinstance(kube, Kube)
    assert kube.clock is cluster.clock
    assert kube.request("GET", REPLICASETS, verb="list", namespace="default")["items"] == []


# -- StatefulSets, DaemonSets, Jobs ------------------------------------------------------------


def _revisions(cluster: FakeCluster, name: str) -> dict[str, str]:
    return {
        p["metadata"]["name"]: p["metadata"]["labels"]["controller-revision-hash"]
        for p in cluster.list("Pod")
        if p["metadata"]["name"].startswith(name)
    }


def test_a_statefulset_updates_one_pod_at_a_time_from_the_highest_ordinal() -> None:
    from tests.fakecluster import statefulset

    cluster = FakeCluster()
    cluster.create(statefulset("db", IMAGE, replicas=3))
    assert cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 30)
    first = _revisions(cluster, "db")
    set_image(cluster, "db", IMAGE2, kind="StatefulSet")
    order: list[str] = []
    for _ in range(300):
        cluster.run(0.1)
        for name, rev in _revisions(cluster, "db").items():
            if rev != first.get(name) and name not in order:
                order.append(name)
        if rolled_out(cluster, "StatefulSet", "db"):
            break
    assert order == ["db-2", "db-1", "db-0"]
    sts = cluster.get("StatefulSet", "db")
    assert sts is not None
    status = sts["status"]
    assert status["currentRevision"] == status["updateRevision"] != next(iter(first.values()))
    revisions = {r["metadata"]["name"]: r["revision"] for r in cluster.list("ControllerRevision")}
    assert revisions == {next(iter(first.values())): 1, status["updateRevision"]: 2}


def test_a_statefulset_undo_stalls_on_the_stuck_pod_until_it_is_deleted() -> None:
    """kubernetes/kubernetes#67250: OrderedReady does not replace a pod that is not Ready."""
    from tests.fakecluster import statefulset

    cluster = FakeCluster()
    cluster.create(statefulset("db", IMAGE, replicas=2))
    assert cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 30)
    good = _revisions(cluster, "db")["db-1"]
    set_image(cluster, "db", image("crash-loop"), kind="StatefulSet")
    cluster.run(20)
    assert _revisions(cluster, "db")["db-0"] == good  # db-1 broke and the update stopped there
    set_image(cluster, "db", IMAGE, kind="StatefulSet")  # the undo
    assert not cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 120)
    sts = cluster.get("StatefulSet", "db")
    assert sts is not None and sts["status"]["updateRevision"] == good
    assert _revisions(cluster, "db")["db-1"] != good
    cluster.delete("Pod", "db-1")  # the forced rollback
    assert cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 30)
    assert _revisions(cluster, "db") == {"db-0": good, "db-1": good}


def test_a_statefulset_partition_keeps_the_lower_ordinals() -> None:
    from tests.fakecluster import statefulset

    cluster = FakeCluster()
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    cluster.create(statefulset("db", IMAGE, replicas=3, updateStrategy=strategy))
    assert cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 30)
    old = _revisions(cluster, "db")["db-0"]
    set_image(cluster, "db", IMAGE2, kind="StatefulSet")
    cluster.run(1)
    assert cluster.run_until(lambda: rolled_out(cluster, "StatefulSet", "db"), 30)
    revisions = _revisions(cluster, "db")
    assert revisions["db-0"] == revisions["db-1"] == old != revisions["db-2"]
    sts = cluster.get("StatefulSet", "db")
    assert sts is not None and sts["status"]["currentRevision"] == old


def test_a_daemonset_runs_one_pod_per_node_and_rolls_them_node_by_node() -> None:
    from tests.fakecluster import daemonset

    cluster = FakeCluster()
    cluster.add_node("tainted", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
    cluster.create(daemonset("agent", IMAGE))
    assert cluster.run_until(lambda: rolled_out(cluster, "DaemonSet", "agent"), 30)
    nodes = sorted(p["spec"]["nodeName"] for p in cluster.list("Pod"))
    assert nodes == ["kwok-node-0", "kwok-node-1"]  # the tainted node is not tolerated
    set_image(cluster, "agent", image("fail-pull"), kind="DaemonSet")
    cluster.run(60)
    ds = cluster.get("DaemonSet", "agent")
    assert ds is not None
    # maxUnavailable 1: one node got the broken pod, the other keeps the old one.
    assert ds["status"]["updatedNumberScheduled"] == 1
    assert ds["status"]["numberAvailable"] == 1
    hashes = {
        r["metadata"]["labels"]["controller-revision-hash"]
        for r in cluster.list("ControllerRevision")
    }
    assert {
        p["metadata"]["labels"]["controller-revision-hash"] for p in cluster.list("Pod")
    } <= hashes


def _job_condition(cluster: FakeCluster, name: str) -> str:
    job = cluster.get("Job", name)
    if job is None:
        return "gone"
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return f"{cond['type']}:{cond['reason']}"
    return ""


def test_a_job_completes_and_ttl_zero_deletes_it_with_its_pods() -> None:
    from tests.fakecluster import job

    cluster = FakeCluster()
    created = cluster.create(job("migrate", IMAGE, ttlSecondsAfterFinished=0))
    labels = created["spec"]["template"]["metadata"]["labels"]
    assert labels["job-name"] == "migrate"
    assert labels["batch.kubernetes.io/controller-uid"] == created["metadata"]["uid"]
    assert cluster.run_until(lambda: cluster.get("Job", "migrate") is None, 30)
    cluster.run(2)
    seen: list[str] = []
    for change in cluster.store.history:  # every state the Job went through
        if change.t.kind == "Job":
            conds = (change.obj.get("status") or {}).get("conditions") or []
            state = change.type if change.type == "DELETED" else ",".join(c["type"] for c in conds)
            if not seen or seen[-1] != state:
                seen.append(state)
    assert seen == ["", "SuccessCriteriaMet,Complete", "DELETED"]
    assert cluster.list("Pod") == []


@pytest.mark.parametrize(("restart", "failed_at"), [("Never", 36.0), ("OnFailure", 13.0)])
def test_a_failing_job_stops_at_its_backoff_limit(restart: str, failed_at: float) -> None:
    from tests.fakecluster import job

    cluster = FakeCluster()
    cluster.create(job("migrate", image("fail"), restart=restart, backoffLimit=2))
    assert cluster.run_until(lambda: _job_condition(cluster, "migrate").startswith("Failed"), 120)
    assert _job_condition(cluster, "migrate") == "Failed:BackoffLimitExceeded"
    # Never: three pods fail, each 2 s after it starts, replaced 10 s then 20 s after a
    # failure; OnFailure: the second restart of one pod.
    assert cluster.clock.elapsed == pytest.approx(failed_at, abs=1.5)


def test_foreground_deletion_keeps_the_owner_until_its_dependents_are_gone() -> None:
    from tests.fakecluster import job

    cluster = FakeCluster()
    cluster.stop_seconds = 5
    cluster.create(job("migrate", image("never-ready")))
    cluster.run(3)
    cluster.delete("Job", "migrate", propagation="Foreground")
    held = cluster.get("Job", "migrate")
    assert held is not None and held["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert held["metadata"]["deletionTimestamp"]
    cluster.run(1)
    (pod,) = cluster.list("Pod")
    assert pod["metadata"]["deletionTimestamp"]  # terminating, for up to its grace
    assert cluster.get("Job", "migrate") is not None
    cluster.run(5)
    assert cluster.list("Pod") == [] and cluster.get("Job", "migrate") is None


def test_a_job_deleted_without_a_policy_orphans_its_pods() -> None:
    from tests.fakecluster import job

    cluster = FakeCluster()
    cluster.create(job("migrate", image("never-ready")))
    cluster.run(3)
    cluster.delete("Job", "migrate")  # batch/v1 defaults to Orphan
    cluster.run(3)
    (pod,) = cluster.list("Pod")
    assert cluster.get("Job", "migrate") is None
    assert pod["metadata"].get("ownerReferences") in (None, [])


def test_finalizers_hold_any_object_and_delete_preconditions_are_checked() -> None:
    from tests.fakecluster import configmap

    cluster = FakeCluster()
    body = configmap("settings", {"a": "1"})
    body["metadata"]["finalizers"] = ["example.com/keep"]
    created = cluster.create(body)
    kube = make_kube(cluster)
    from deployer.cluster import Resource

    configmaps = Resource("", "v1", "configmaps")
    stale = {"preconditions": {"resourceVersion": "1"}}
    answer = kube.request(
        "DELETE",
        configmaps,
        verb="delete",
        namespace="default",
        name="settings",
        body=stale,
        expect=frozenset({409}),
    )
    assert isinstance(answer, Response) and "Precondition failed" in answer.body["message"]
    pending = kube.request(
        "DELETE",
        configmaps,
        verb="delete",
        namespace="default",
        name="settings",
        body={"preconditions": {"uid": created["metadata"]["uid"]}},
    )
    assert pending["metadata"]["deletionTimestamp"]  # the object comes back: Terminating
    cluster.patch("ConfigMap", "settings", {"metadata": {"finalizers": None}}, type="merge")
    assert cluster.get("ConfigMap", "settings") is None


def test_leases_are_plain_objects_with_optimistic_concurrency() -> None:
    cluster = FakeCluster()
    kube = make_kube(cluster)
    from deployer.cluster import Resource

    leases = Resource("coordination.k8s.io", "v1", "leases")
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "deployer", "annotations": {"deployer.dev/changes": "[]"}},
        "spec": {
            "holderIdentity": "https://github.com/acme/web/actions/runs/1/attempts/1",
            "leaseDurationSeconds": 30,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
        },
    }
    created = kube.request("POST", leases, verb="create", namespace="default", body=body)
    assert created["spec"]["renewTime"] == "2026-01-01T00:00:00.000000Z"
    renewed = dict(created, spec={**created["spec"], "renewTime": "2026-01-01T00:00:10.000000Z"})
    kube.request("PUT", leases, verb="update", namespace="default", name="deployer", body=renewed)
    answer = kube.request(
        "PUT",
        leases,
        verb="update",
        namespace="default",
        name="deployer",
        body=renewed,
        expect=frozenset({409}),
    )
    assert isinstance(answer, Response) and answer.body["reason"] == "Conflict"


def test_quota_counts_a_terminating_pod_until_its_grace_ends() -> None:
    """QuotaV1Pod: a pod being deleted is charged until deletionTimestamp + grace."""
    from tests.fakecluster import quota

    cluster = FakeCluster()
    cluster.stop_seconds = 20  # the old pods take their time to stop
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    ready_web(cluster, replicas=2, strategy=strategy)
    cluster.create(quota("pods", {"pods": "2"}))
    set_image(cluster, "web", IMAGE2)
    cluster.run(5)
    new_rs = next(
        rs
        for rs in cluster.list("ReplicaSet")
        if rs["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE2
    )
    failure = next(c for c in new_rs["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert (
        "exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2"
        in failure["message"]
    )
    terminating = [p for p in cluster.list("Pod") if p["metadata"].get("deletionTimestamp")]
    assert len(terminating) == 1
    assert cluster.run_until(lambda: rolled_out(cluster, "Deployment", "web"), 120)
