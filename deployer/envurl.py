"""The ``url`` output: where the deployed environment answers, for ``environment.url``.

First match, in this order, over the objects the run applied and the workloads it
named (their state after the run):

1. the annotation :data:`URL_ANNOTATION` (``deployer.dev/url``) on any of them;
2. an Ingress rule's ``host`` (``https://`` when a ``tls`` entry covers the host);
3. a Gateway API HTTPRoute's first ``hostnames`` entry (``https://``: a Gateway's
   HTTPS listener is assumed; annotate the route to say otherwise);
4. a LoadBalancer Service's ``status.loadBalancer.ingress`` hostname or IP
   (``https://`` for port 443, else ``http://``, with the port unless 80).

The text comes from manifests and the cluster, so it is untrusted: it becomes the
output only as an http(s) URL with a host, no user or password, no white space or
control characters, at most :data:`MAX_URL` characters (:func:`valid_url`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MAX_URL", "URL_ANNOTATION", "environment_url", "valid_url"]

URL_ANNOTATION = "deployer.dev/url"
MAX_URL = 2048
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])$"
)
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f<>\"'`\\^{}|]")


def valid_url(text: str) -> str | None:
    """``text`` if it is a safe http(s) URL with a host, else None."""
    if not isinstance(text, str) or not text or len(text) > MAX_URL or _UNSAFE.search(text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port  # raises for a port that is not a number in range
    except ValueError:
        return None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if not _HOST.match(host):
        return None
    return text


def _annotation(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(URL_ANNOTATION) if isinstance(annotations, Mapping) else None
    return value.strip() if isinstance(value, str) else None


def _ingress(obj: Mapping[str, Any]) -> Iterator[str]:
    spec = obj.get("spec") or {}
    covered: set[str] = set()
    for tls in spec.get("tls") or []:
        if isinstance(tls, Mapping):
            covered.update(str(h) for h in tls.get("hosts") or [])
    for rule in spec.get("rules") or []:
        host = rule.get("host") if isinstance(rule, Mapping) else None
        if isinstance(host, str) and host and "*" not in host:
            yield f"{'https' if host in covered else 'http'}://{host}"


def _route(obj: Mapping[str, Any]) -> Iterator[str]:
    for host in (obj.get("spec") or {}).get("hostnames") or []:
        if isinstance(host, str) and host and "*" not in host:
            yield f"https://{host}"


def _load_balancer(obj: Mapping[str, Any]) -> Iterator[str]:
    if (obj.get("spec") or {}).get("type") != "LoadBalancer":
        return
    ports = [p.get("port") for p in (obj.get("spec") or {}).get("ports") or []]
    port = ports[0] if ports and isinstance(ports[0], int) else 80
    for entry in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        address = entry.get("hostname") or entry.get("ip") if isinstance(entry, Mapping) else None
        if isinstance(address, str) and address:
            host = f"[{address}]" if ":" in address else address
            if port == 443:
                yield f"https://{host}"
            else:
                yield f"http://{host}" + ("" if port == 80 else f":{port}")


def _candidates(objects: list[Mapping[str, Any]]) -> Iterator[tuple[str, str]]:
    for obj in objects:
        value = _annotation(obj)
        if value:
            yield value, f"the {URL_ANNOTATION} annotation of {_name(obj)}"
    rules = (
        ("Ingress", _ingress),
        ("HTTPRoute", _route),
        ("Service", _load_balancer),
    )
    for kind, found in rules:
        for obj in objects:
            if obj.get("kind") == kind:
                for url in found(obj):
                    yield url, _name(obj)


def _name(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"


def environment_url(objects: Iterable[Mapping[str, Any]]) -> tuple[str, str, list[str]]:
    """``(url, where it came from, refused candidates)``; ``("", "", …)`` when none fits.

    A candidate that is not a safe URL is skipped (and named in the third item, cut
    short, so the log can say why an annotation was ignored).
    """
    refused: list[str] = []
    for url, where in _candidates([o for o in objects if isinstance(o, Mapping)]):
        if valid_url(url):
            return url, where, refused
        refused.append(where)
    return "", "", refused
