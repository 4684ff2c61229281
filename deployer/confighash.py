"""Config changes that roll: a pod-template annotation for a changed ConfigMap or Secret.

A container reads its environment when it starts, and many programs read mounted
files only then too, so a run that changes only a ConfigMap "succeeds" while every
pod keeps the old config. When the run changes (the server-side dry-run result
differs from the live object, or the object is new) a ConfigMap or Secret that a
workload's pod template consumes (``env[].valueFrom``, ``envFrom``, ``volumes``,
``projected`` sources), the template gets :data:`ANNOTATION` with a hash of what
changed: the workload rolls out, is verified, and is undone with everything else.

The hash is an HMAC-SHA256 under a key drawn at random for the run and never
stored or printed: anyone who may read a Deployment learns nothing about a
Secret's data from it (an unkeyed hash of a short secret could be brute-forced).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANNOTATION", "CONFIG_KINDS", "ConfigHasher", "config_changed", "consumed"]

ANNOTATION = "deployer.dev/config-hash"
CONFIG_KINDS = ("ConfigMap", "Secret")
_CONTENT = ("data", "binaryData", "stringData", "type", "immutable")


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _from_volume(volume: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if isinstance(volume.get("configMap"), Mapping):
        yield "ConfigMap", str(volume["configMap"].get("name", ""))
    if isinstance(volume.get("secret"), Mapping):
        yield "Secret", str(volume["secret"].get("secretName", ""))
    projected = volume.get("projected")
    for source in (projected.get("sources") or []) if isinstance(projected, Mapping) else []:
        if isinstance(source, Mapping) and isinstance(source.get("configMap"), Mapping):
            yield "ConfigMap", str(source["configMap"].get("name", ""))
        if isinstance(source, Mapping) and isinstance(source.get("secret"), Mapping):
            yield "Secret", str(source["secret"].get("name", ""))


def _from_container(container: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for entry in container.get("envFrom") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("configMapRef"), Mapping):
            yield "ConfigMap", str(entry["configMapRef"].get("name", ""))
        if isinstance(entry, Mapping) and isinstance(entry.get("secretRef"), Mapping):
            yield "Secret", str(entry["secretRef"].get("name", ""))
    for entry in container.get("env") or []:
        source = entry.get("valueFrom") if isinstance(entry, Mapping) else None
        if isinstance(source, Mapping) and isinstance(source.get("configMapKeyRef"), Mapping):
            yield "ConfigMap", str(source["configMapKeyRef"].get("name", ""))
        if isinstance(source, Mapping) and isinstance(source.get("secretKeyRef"), Mapping):
            yield "Secret", str(source["secretKeyRef"].get("name", ""))


def consumed(template: Mapping[str, Any]) -> set[tuple[str, str]]:
    """``(kind, name)`` of every ConfigMap and Secret a pod template reads."""
    spec = template.get("spec") if isinstance(template.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    found: set[tuple[str, str]] = set()
    for container in _containers(spec):
        found.update(_from_container(container))
    for volume in spec.get("volumes") or []:
        if isinstance(volume, Mapping):
            found.update(_from_volume(volume))
    return {(kind, name) for kind, name in found if name}


def _content(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: obj.get(k) for k in _CONTENT if obj and obj.get(k) is not None}


def config_changed(prior: Mapping[str, Any] | None, planned: Mapping[str, Any]) -> bool:
    """Whether applying changes what a ConfigMap/Secret holds (``planned``: the server's
    dry-run result, so defaults and ``stringData`` are already folded in as they will be)."""
    return prior is None or _content(prior) != _content(planned)


@dataclass
class ConfigHasher:
    """The run's keyed hash of config objects' content (the key never leaves the process)."""

    key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)

    def digest(self, objects: Iterable[tuple[str, str, Mapping[str, Any]]]) -> str:
        """One value for ``(kind, name, object)`` triples, in any order."""
        canonical = json.dumps(
            sorted([kind, name, _content(obj)] for kind, name, obj in objects),
            sort_keys=True,
            separators=(",", ":"),
        )
        return hmac.new(self.key, canonical.encode(), hashlib.sha256).hexdigest()[:32]
