"""Label and field selectors, parsed and matched as the apiserver does."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SelectorError", "field_matcher", "label_matcher", "selector_matches"]

Matcher = Callable[[Mapping[str, Any]], bool]

_SET = re.compile(r"^\s*(!)?\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


class SelectorError(ValueError):
    """A selector the apiserver would refuse (400)."""


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    eq = _EQ.match(term)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    found = _SET.match(term)
    if not found:
        raise SelectorError(f"unable to parse requirement: {term!r}")
    negate, key, op, values = found.groups()
    if op:
        wanted = {v.strip() for v in values.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in wanted
        return lambda labels: labels.get(key) not in wanted
    if negate:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def label_matcher(text: str) -> Callable[[Mapping[str, str]], bool]:
    """``app=web,tier in (a,b),!legacy`` → a predicate on a labels dict."""
    terms = [_label_term(t) for t in _split(text or "")]
    return lambda labels: all(t(labels) for t in terms)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector object (matchLabels/matchExpressions) against labels.

    An empty selector matches everything; a missing one (None) matches nothing.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# Field labels each kind supports besides metadata.name and metadata.namespace.
FIELDS: dict[str, tuple[str, ...]] = {
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "status.phase"),
    "Node": ("spec.unschedulable",),
    "Secret": ("type",),
    "Job": ("status.successful",),
}


def _field(obj: Mapping[str, Any], path: str) -> str:
    if path == "source":
        return str((obj.get("source") or {}).get("component") or "")
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def field_matcher(text: str, kind: str) -> Matcher:
    """``involvedObject.kind=Pod,involvedObject.name=x`` → a predicate on an object."""
    terms: list[Matcher] = []
    allowed = ("metadata.name", "metadata.namespace", *FIELDS.get(kind, ()))
    for term in _split(text or ""):
        eq = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not eq:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = eq.groups()
        if path not in allowed:
            raise SelectorError(f"field label not supported: {path}")
        terms.append(_field_term(path, value, op == "!="))
    return lambda obj: all(t(obj) for t in terms)


def _field_term(path: str, value: str, negate: bool) -> Matcher:
    return lambda obj: (_field(obj, path) == value) != negate
