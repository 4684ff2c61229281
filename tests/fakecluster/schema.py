"""Defaults and validation the apiserver applies, for the fields deploy tools touch."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.fakecluster.errors import ApiError, invalid
from tests.fakecluster.resources import ResourceType
from tests.fakecluster.selectors import selector_matches

__all__ = ["default", "validate"]

Obj = dict[str, Any]
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_WORKLOADS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"})


def _pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(c: Obj) -> None:
    c.setdefault("imagePullPolicy", _pull_policy(str(c.get("image", ""))))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")


def pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and the container defaults."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _container(c)


def _template(obj: Obj) -> Obj:
    template: Obj = obj.setdefault("spec", {}).setdefault("template", {})
    template.setdefault("metadata", {})
    pod_spec(template.setdefault("spec", {}))
    return template


def default(t: ResourceType, obj: Obj) -> None:
    """Fill the defaults of ``obj`` in place (create and update)."""
    spec = obj.setdefault("spec", {}) if t.kind in _WORKLOADS or t.kind == "Pod" else None
    if t.kind == "Pod":
        assert spec is not None
        pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(tol.get("key") == key for tol in tolerations):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                )
    elif t.kind == "Deployment":
        assert spec is not None
        _template(obj)
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif t.kind == "ReplicaSet":
        assert spec is not None
        _template(obj)
        spec.setdefault("replicas", 1)
    elif t.kind == "StatefulSet":
        assert spec is not None
        _template(obj)
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault(
            "persistentVolumeClaimRetentionPolicy",
            {"whenDeleted": "Retain", "whenScaled": "Retain"},
        )
    elif t.kind == "DaemonSet":
        assert spec is not None
        _template(obj)
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
    elif t.kind == "Job":
        assert spec is not None
        _template(obj)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    elif t.kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels.setdefault("kubernetes.io/metadata.name", obj["metadata"].get("name", ""))
    elif t.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif t.kind == "Service":
        svc = obj.setdefault("spec", {})
        svc.setdefault("type", "ClusterIP")
        svc.setdefault("sessionAffinity", "None")
        svc.setdefault("internalTrafficPolicy", "Cluster")
        svc.setdefault("ipFamilyPolicy", "SingleStack")
        svc.setdefault("ipFamilies", ["IPv4"])
        for port in svc.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


# -- validation ------------------------------------------------------------------------------


def _kind_group(t: ResourceType) -> str:
    return f"{t.kind}.{t.group}" if t.group else t.kind


def _containers(spec: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    problems = []
    containers = spec.get("containers") or []
    if not containers:
        problems.append((f"{where}.containers", "Required value"))
    for n, c in enumerate(containers):
        if not c.get("name"):
            problems.append((f"{where}.containers[{n}].name", "Required value"))
        if not c.get("image"):
            problems.append((f"{where}.containers[{n}].image", "Required value"))
    return problems


def validate(t: ResourceType, obj: Obj, old: Obj | None) -> None:
    """Raise the 422 the apiserver answers for what deploy tools get wrong."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    problems: list[tuple[str, str]] = []
    if t.kind != "Event" and (len(name) > 253 or not _NAME.match(name)):
        problems.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        )
    spec = obj.get("spec") or {}
    if t.kind in _WORKLOADS:
        template = spec.get("template") or {}
        problems += _containers(template.get("spec") or {}, "spec.template.spec")
        labels = (template.get("metadata") or {}).get("labels") or {}
        selector = spec.get("selector")
        if t.kind != "Job" or selector is not None:
            if not selector:
                problems.append(("spec.selector", "Required value"))
            elif not selector_matches(selector, labels):
                problems.append(
                    (
                        "spec.template.metadata.labels",
                        f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                    )
                )
        if t.kind == "Job":
            policy = (template.get("spec") or {}).get("restartPolicy")
            if policy not in ("OnFailure", "Never"):
                problems.append(
                    (
                        "spec.template.spec.restartPolicy",
                        f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                    )
                )
        if old is not None:
            problems += _immutable(t, spec, old.get("spec") or {})
    elif t.kind == "Pod":
        problems += _containers(spec, "spec")
        if old is not None:
            problems += _pod_update(spec, old.get("spec") or {})
    if problems:
        raise invalid(_kind_group(t), name, problems)


def _immutable(t: ResourceType, spec: Mapping[str, Any], old: Mapping[str, Any]) -> list[Any]:
    problems = []
    if spec.get("selector") != old.get("selector"):
        problems.append(
            ("spec.selector", f"Invalid value: {spec.get('selector')!r}: field is immutable")
        )
    if t.kind == "Job" and _without_job_labels(spec.get("template")) != _without_job_labels(
        old.get("template")
    ):
        problems.append(
            ("spec.template", f"Invalid value: {spec.get('template')!r}: field is immutable")
        )
    if t.kind == "StatefulSet":
        allowed = {
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        }
        if {k: v for k, v in spec.items() if k not in allowed} != {
            k: v for k, v in old.items() if k not in allowed
        }:
            problems.append(
                (
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', "
                    "'ordinals', 'template', 'updateStrategy', "
                    "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                )
            )
    return problems


def _without_job_labels(template: Any) -> Any:
    return template  # the Job controller's own labels are set at create, before any update


def _pod_update(spec: Mapping[str, Any], old: Mapping[str, Any]) -> list[Any]:
    def mutable_removed(s: Mapping[str, Any]) -> Obj:
        copy: Obj = {
            k: v
            for k, v in s.items()
            if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
        }
        for field in ("containers", "initContainers"):
            copy[field] = [{k: v for k, v in c.items() if k != "image"} for c in s.get(field) or []]
        return copy

    if mutable_removed(spec) != mutable_removed(old):
        return [
            (
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
                "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if "
                "it was previously negative)",
            )
        ]
    return []


def check_namespace(obj: Mapping[str, Any], namespace: str | None) -> None:
    own = (obj.get("metadata") or {}).get("namespace")
    if namespace and own and own != namespace:
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
