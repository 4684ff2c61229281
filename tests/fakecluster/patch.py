"""The four patch formats of the apiserver, on plain objects.

- JSON merge patch (RFC 7386), ``application/merge-patch+json``;
- strategic merge patch, ``application/strategic-merge-patch+json``: lists of the
  built-in types merge by their key (containers by ``name``, ports by
  ``containerPort``, ...), with the ``$patch``, ``$retainKeys``,
  ``$setElementOrder`` and ``$deleteFromPrimitiveList`` directives;
- JSON patch (RFC 6902), ``application/json-patch+json``;
- server-side apply, ``application/apply-patch+yaml``: :func:`field_paths` and
  :func:`apply_merge` (ownership is kept by the store).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "PatchError",
    "apply_merge",
    "field_paths",
    "json_patch",
    "merge_patch",
    "remove_path",
    "strategic_merge",
]

# field name -> merge key of its items (for the built-in types the fake serves).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "ports": ("containerPort", "port"),
    "resourceClaims": ("name",),
}
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch that cannot be applied (422 from the apiserver)."""


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(original) if isinstance(original, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _key_of(field: str, item: Any) -> tuple[str, Any] | None:
    if not isinstance(item, Mapping):
        return None
    for key in MERGE_KEYS.get(field, ()):
        if key in item:
            return key, item[key]
    return None


def strategic_merge(original: Any, patch: Any) -> Any:
    """A strategic merge patch on ``original`` (None: the patch deletes it)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(dict(original)) if isinstance(original, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain or k in patch}
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(order, list):
            field = key.split("/", 1)[1]
            result[field] = _ordered(field, result.get(field) or [], order)
    return result


def _ordered(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    def rank(item: Any) -> int:
        for i, wanted in enumerate(order):
            found = _key_of(field, wanted)
            if (found and _key_of(field, item) == found) or item == wanted:
                return i
        return len(order)

    return sorted(items, key=rank)


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(i, Mapping) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not isinstance(i, Mapping) or "$patch" not in i]
    if field in SET_LISTS:
        merged = list(original or [])
        return merged + [v for v in patch if v not in merged]
    if not any(_key_of(field, i) for i in patch):
        return copy.deepcopy(patch)
    result = copy.deepcopy(list(original or []))
    for item in patch:
        key = _key_of(field, item)
        index = next(
            (n for n, old in enumerate(result) if key and _key_of(field, old) == key), None
        )
        if isinstance(item, Mapping) and item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(strategic_merge({}, item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


# -- JSON patch -------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return node


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        return parent.pop(int(last))
    if last not in parent:
        raise PatchError(f"doc is missing key: /{'/'.join(parts)}")
    return parent.pop(last)


def _add(doc: Any, parts: list[str], value: Any, replace: bool) -> Any:
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        elif replace:
            parent[int(last)] = copy.deepcopy(value)
        else:
            parent.insert(int(last), copy.deepcopy(value))
    elif isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: /{last}")
        parent[last] = copy.deepcopy(value)
    else:
        raise PatchError("the path does not name a container")
    return doc


def json_patch(original: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of ``original``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(original)
    for op in operations:
        kind, parts = op.get("op"), _pointer(str(op.get("path", "")))
        try:
            if kind in ("add", "replace"):
                doc = _add(doc, parts, op.get("value"), kind == "replace")
            elif kind == "remove":
                _remove(doc, parts)
            elif kind in ("move", "copy"):
                source = _pointer(str(op.get("from", "")))
                value = _get(doc, source) if kind == "copy" else _remove(doc, source)
                doc = _add(doc, parts, value, False)
            elif kind == "test":
                if _get(doc, parts) != op.get("value"):
                    raise PatchError(f"testing value /{'/'.join(parts)} failed")
            else:
                raise PatchError(f"unknown JSON patch operation {kind!r}")
        except (IndexError, ValueError, TypeError) as e:
            if isinstance(e, PatchError):
                raise
            raise PatchError(str(e)) from None
    return doc


# -- server-side apply -----------------------------------------------------------------------

Path = tuple[str, ...]


def _item_segment(field: str, item: Any) -> str | None:
    key = _key_of(field, item)
    if key is None:
        return None
    return "k:" + json.dumps({key[0]: key[1]}, separators=(",", ":"))


def field_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    """The leaf field paths an applied configuration sets (lists by key, or atomic)."""
    found: set[Path] = set()
    if not isinstance(obj, Mapping):
        return {prefix}
    for key, value in obj.items():
        if prefix == () and key in ("apiVersion", "kind"):
            continue
        if prefix == ("metadata",) and key in (
            "name",
            "namespace",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            continue
        here = (*prefix, "f:" + key)
        if isinstance(value, Mapping) and value:
            found |= field_paths(value, here)
        elif isinstance(value, list) and value and all(_item_segment(key, i) for i in value):
            for item in value:
                seg = _item_segment(key, item)
                assert seg is not None
                found.add((*here, seg))
                found |= field_paths({k: v for k, v in item.items()}, (*here, seg))
        else:
            found.add(here)
    return found


def apply_merge(live: Any, applied: Any, field: str = "") -> Any:
    """Merge an applied configuration into the live object (maps deep, keyed lists by key)."""
    if isinstance(applied, Mapping):
        result = copy.deepcopy(dict(live)) if isinstance(live, Mapping) else {}
        for key, value in applied.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = apply_merge(result.get(key), value, key)
        return result
    if isinstance(applied, list) and applied and all(_item_segment(field, i) for i in applied):
        current = copy.deepcopy(list(live)) if isinstance(live, list) else []
        for item in applied:
            key = _key_of(field, item)
            index = next((n for n, old in enumerate(current) if _key_of(field, old) == key), None)
            if index is None:
                current.append(copy.deepcopy(item))
            else:
                current[index] = apply_merge(current[index], item, field)
        return current
    return copy.deepcopy(applied)


def remove_path(obj: Any, path: Path) -> None:
    """Delete the field at ``path`` (``f:``/``k:`` segments) if it is there."""
    node = obj
    for n, seg in enumerate(path):
        last = n == len(path) - 1
        if seg.startswith("f:"):
            if not isinstance(node, dict) or seg[2:] not in node:
                return
            if last:
                del node[seg[2:]]
                return
            node = node[seg[2:]]
        elif seg.startswith("k:"):
            if not isinstance(node, list):
                return
            wanted = json.loads(seg[2:])
            index = next(
                (
                    i
                    for i, item in enumerate(node)
                    if isinstance(item, Mapping)
                    and all(item.get(k) == v for k, v in wanted.items())
                ),
                None,
            )
            if index is None:
                return
            if last:
                del node[index]
                return
            node = node[index]


def fields_tree(paths: Iterable[Path]) -> dict[str, Any]:
    """``managedFields[].fieldsV1`` for a set of paths."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for seg in path:
            node = node.setdefault(seg, {})
        if path and path[-1].startswith("k:"):
            node.setdefault(".", {})
    return tree


def changed_paths(before: Any, after: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths whose value differs (for ownership of Update operations)."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        found: set[Path] = set()
        for key in set(before) | set(after):
            if prefix == () and key in ("status", "apiVersion", "kind"):
                continue
            if prefix == ("metadata",) and key not in ("labels", "annotations", "finalizers"):
                continue
            if before.get(key) != after.get(key):
                found |= changed_paths(before.get(key), after.get(key), (*prefix, "f:" + key))
        return found
    return {prefix} if prefix else set()
