"""An in-memory Kubernetes cluster with real semantics, for unit tests of the rollout.

``FakeCluster`` is an apiserver (objects, resourceVersions, watches, the patch
types, admission, RBAC answers), the controllers a rollout watches (Deployment,
ReplicaSet, StatefulSet, DaemonSet, Job, garbage collector, namespaces), a
scheduler and a kubelet whose pods' fates follow their image names, all on a
``FakeClock`` of virtual time. ``make_kube(cluster)`` returns the product's own
``Kube`` on it. See ``docs/development.md`` (The fake cluster) for the rules.
"""

from tests.fakecluster.clock import FakeClock, FakeDeadlock
from tests.fakecluster.cluster import FakeCluster, make_kube
from tests.fakecluster.errors import ApiError
from tests.fakecluster.objects import (
    configmap,
    daemonset,
    deployment,
    job,
    quota,
    rolled_out,
    statefulset,
)

__all__ = [
    "ApiError",
    "FakeClock",
    "FakeCluster",
    "FakeDeadlock",
    "configmap",
    "daemonset",
    "deployment",
    "job",
    "make_kube",
    "quota",
    "rolled_out",
    "statefulset",
]
