"""Small helpers on plain API objects (dicts), shared by the store and the controllers."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "condition",
    "deep",
    "labels_of",
    "meta",
    "owned_by",
    "owner_ref",
    "rfc3339",
    "set_condition",
    "short_hash",
]

Obj = dict[str, Any]

_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString alphabet


def deep(value: T) -> T:
    """A deep copy (objects handed out are never the store's own)."""
    return copy.deepcopy(value)


def rfc3339(seconds: float) -> str:
    """``2026-01-01T00:00:05Z``: metav1.Time has second precision."""
    moment = dt.datetime.fromtimestamp(int(seconds), tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    text = text.replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()


def meta(obj: Mapping[str, Any]) -> Obj:
    found = obj.get("metadata")
    if not isinstance(found, dict):
        return {}
    return found


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def short_hash(value: Any, length: int = 10) -> str:
    """A stable name suffix in the alphabet the controllers use (like ``pod-template-hash``)."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:length])


def owner_ref(owner: Mapping[str, Any], *, controller: bool = True) -> Obj:
    m = meta(owner)
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference is ``uid``."""
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in meta(obj).get("ownerReferences") or []
    )


def controller_of(obj: Mapping[str, Any]) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def condition(obj: Mapping[str, Any], kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def set_condition(
    conditions: list[Obj], new: Obj, *, keep_message_on_same_reason: bool = False
) -> list[Obj]:
    """Set a condition as the controllers' helpers do.

    ``keep_message_on_same_reason`` is ``SetDeploymentCondition``: a condition with the
    same status and reason is left as it was (its old message stays).
    """
    current = next((c for c in conditions if c.get("type") == new["type"]), None)
    if (
        keep_message_on_same_reason
        and current is not None
        and current.get("status") == new.get("status")
        and current.get("reason") == new.get("reason")
    ):
        return conditions
    if current is not None and current.get("status") == new.get("status"):
        new = {**new, "lastTransitionTime": current.get("lastTransitionTime")}
    return [c for c in conditions if c.get("type") != new["type"]] + [new]


def remove_condition(conditions: list[Obj], kind: str) -> list[Obj]:
    return [c for c in conditions if c.get("type") != kind]


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        amount = int(text[:-1]) * total / 100
        return int(-(-amount // 1)) if round_up else int(amount // 1)
    return int(text)


def parse_quantity(value: Any) -> float:
    """A resource.Quantity as a number (cpu in cores, memory in bytes)."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    suffixes = {
        "Ki": 1024,
        "Mi": 1024**2,
        "Gi": 1024**3,
        "Ti": 1024**4,
        "n": 1e-9,
        "u": 1e-6,
        "m": 1e-3,
        "k": 1e3,
        "K": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def format_quantity(amount: float, name: str) -> str:
    if name.endswith("cpu") and amount != int(amount):
        return f"{round(amount * 1000)}m"
    if amount == int(amount):
        return str(int(amount))
    return str(amount)


def first(items: Iterable[Any]) -> Any:
    return next(iter(items), None)
