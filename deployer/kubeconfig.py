"""Reading the ``kubeconfig`` input safely, and the credentials in it that must be masked.

A kubeconfig arrives as YAML or as base64 of YAML. It is parsed with PyYAML's safe
loader after refusing anchors/aliases (a "billion laughs" document) and anything
over :data:`MAX_BYTES`, so a hostile value costs bounded time and memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from deployer.safeyaml import check_events, construct

__all__ = ["MAX_BYTES", "Kubeconfig", "credentials_in", "parse_kubeconfig"]

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32  # a kubeconfig nests about 5 levels deep
MAX_EVENTS = 20_000  # a kubeconfig of 50 clusters is about 1,000 YAML events
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=\s]+$")
# Keys under users[].user whose values are credentials (auth-provider and exec included).
_SECRET_KEYS = {
    "token",
    "password",
    "client-key-data",
    "id-token",
    "refresh-token",
    "access-token",
    "client-secret",
    "secret",
}


class Kubeconfig:
    """A parsed kubeconfig and the raw text it came from."""

    def __init__(self, data: dict[str, Any], raw: str, was_base64: bool) -> None:
        self.data = data
        self.raw = raw
        self.was_base64 = was_base64

    @property
    def current_context(self) -> str | None:
        name = self.data.get("current-context")
        return name if isinstance(name, str) and name else None

    def context_namespace(self) -> str | None:
        """The namespace of the current context, if it sets one."""
        for entry in self.data.get("contexts") or []:
            if isinstance(entry, Mapping) and entry.get("name") == self.current_context:
                context = entry.get("context") or {}
                namespace = context.get("namespace") if isinstance(context, Mapping) else None
                return namespace if isinstance(namespace, str) and namespace else None
        return None


def _decode(text: str) -> tuple[str, bool]:
    stripped = text.strip()
    if ":" not in stripped and _BASE64_RE.match(stripped):
        try:
            return base64.b64decode("".join(stripped.split()), validate=True).decode(), True
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError("looks like base64 but does not decode to text") from None
    return text, False


def parse_kubeconfig(text: str) -> Kubeconfig:
    """Parse YAML or base64-of-YAML; raises ValueError saying what is wrong (never the content)."""
    import yaml  # here: runs without a kubeconfig do not pay for the import

    if len(text.encode()) > MAX_BYTES:
        raise ValueError(f"is larger than {MAX_BYTES // 1024} KiB")
    decoded, was_base64 = _decode(text)
    # Aliases, depth and size are refused from the event stream, before a node is
    # built: the composer recurses, so depth alone could crash it.
    try:
        check_events(
            decoded,
            max_depth=MAX_DEPTH,
            max_events=MAX_EVENTS,
            aliases="a kubeconfig never needs",
            verdict="not a kubeconfig",
        )
        data = construct(decoded)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"is not valid YAML{where}") from None
    if not isinstance(data, dict) or "clusters" not in data:
        raise ValueError("is not a kubeconfig (no 'clusters' section)")
    for section in ("clusters", "contexts", "users"):
        if not isinstance(data.get(section) or [], list):
            raise ValueError(f"has a '{section}' section that is not a list")
    if not data.get("current-context"):
        raise ValueError("has no current-context; set one with kubectl config use-context")
    names = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, Mapping)]
    if data["current-context"] not in names:
        # Not quoted: nothing of a secret input is echoed (the runner masks only credentials).
        raise ValueError(
            "has a current-context that none of its contexts is named; "
            "set one with kubectl config use-context"
        )
    return Kubeconfig(data, text, was_base64)


def _walk_secrets(node: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk_secrets(v, str(k))
    elif isinstance(node, list):
        for item in node:
            # exec env entries are {name, value}: every value may be a credential.
            if isinstance(item, Mapping) and "value" in item and "name" in item:
                yield str(item["value"])
            else:
                yield from _walk_secrets(item, key)
    elif key in _SECRET_KEYS and node is not None:
        yield str(node)
        if key.endswith("-data"):
            with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                yield base64.b64decode(str(node)).decode()


def credentials_in(text: str) -> list[str]:
    """Every credential in a kubeconfig input, for masking before anything prints.

    Best effort on purpose: called before validation, it never raises. A base64
    input is a credential as a whole.
    """
    found: list[str] = []
    try:
        _decoded, was_base64 = _decode(text)
    except ValueError:
        return [text.strip()] if text.strip() else []
    if was_base64:
        found.append(text.strip())
    try:
        config = parse_kubeconfig(text)
    except ValueError:
        return found
    for user in config.data.get("users") or []:
        if isinstance(user, Mapping):
            found.extend(_walk_secrets(user.get("user") or {}))
    return [s for s in found if s.strip()]
