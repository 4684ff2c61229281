"""What the cluster serves, for ``helm template --kube-version/--api-versions``.

``helm install`` asks the cluster itself; ``helm template`` only knows what it is
told (else the versions compiled into helm). Discovery is open to every user; a
group that fails (an aggregated API that is down answers 503) is left out, as helm's
own discovery does, and the whole discovery has a short deadline of its own.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployer.cluster import Kube
from deployer.errors import ClusterError
from deployer.render.helm import Capabilities

__all__ = ["discover_capabilities"]

_SECONDS = 10.0
_WORKERS = 8
_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?$")


def _kube_version(answer: Any) -> str:
    git = str((answer or {}).get("gitVersion", ""))
    if _SEMVER.match(git):
        return git if git.startswith("v") else f"v{git}"
    major = re.sub(r"\D", "", str((answer or {}).get("major", "")))
    minor = re.sub(r"\D", "", str((answer or {}).get("minor", "")))  # EKS: "30+"
    if not major or not minor:
        raise ClusterError("The API server's /version does not say which Kubernetes it is")
    return f"v{major}.{minor}.0"


def _kinds(kube: Kube, group_version: str) -> list[str]:
    path = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
    try:
        answer = kube.request_path("GET", path, what=f"discover {group_version}")
    except ClusterError:
        return []
    return sorted(
        {
            f"{group_version}/{r['kind']}"
            for r in answer.get("resources") or []
            if isinstance(r, dict) and r.get("kind") and "/" not in str(r.get("name", ""))
        }
    )


def discover_capabilities(kube: Kube) -> Capabilities:
    """The cluster's version and every group/version and group/version/Kind it serves."""
    kube = kube.with_deadline(min(kube.deadline, kube.clock.monotonic() + _SECONDS))
    version = _kube_version(kube.request_path("GET", "/version", what="read the cluster version"))
    core = kube.request_path("GET", "/api", what="discover the core API")
    groups = kube.request_path("GET", "/apis", what="discover the API groups")
    versions = [str(v) for v in core.get("versions") or []]
    for group in groups.get("groups") or []:
        for entry in group.get("versions") or []:
            if entry.get("groupVersion"):
                versions.append(str(entry["groupVersion"]))
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        kinds = [k for found in pool.map(lambda gv: _kinds(kube, gv), versions) for k in found]
    return Capabilities(version, tuple(dict.fromkeys([*versions, *kinds])))
