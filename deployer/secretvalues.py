"""The values of a ``v1`` Secret in the manifests, to be masked before anything prints.

A rendered Secret (a kustomize ``secretGenerator``, a chart's template, a plain
manifest) carries its values in ``data`` (base64) and ``stringData``. Every run
registers them with the runner as soon as the manifests are rendered, so that an API
server's message quoting one, a diff or a log line cannot show it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from typing import Any

__all__ = ["SECRET_FIELDS", "is_secret", "secret_values"]

SECRET_FIELDS = ("data", "stringData")
_MASKED_CHARS = 8  # shorter values are not registered as masks: they would blot the log


def is_secret(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1"


def secret_values(obj: Mapping[str, Any] | None) -> list[str]:
    """The values of a Secret (as written and base64-decoded), to be masked in the log.

    Only values (and lines of values) of at least 8 characters: masking ``true`` or
    ``1`` would blot out every such word in the log. Nothing of ours prints a value
    (the plan shows "changed"/"unchanged"); this is for what quotes one: a pod's log
    tail in a diagnosis, an API server's message.
    """
    if obj is None or not is_secret(obj):
        return []
    found: list[str] = []
    for field in SECRET_FIELDS:
        values = obj.get(field)
        for value in (values if isinstance(values, dict) else {}).values():
            if not isinstance(value, str):
                continue
            texts = [value]
            if field == "data":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                    texts.append(base64.b64decode(value, validate=True).decode())
            for text in texts:
                pieces = [text.strip(), *(line.strip() for line in text.splitlines())]
                found += [p for p in pieces if len(p) >= _MASKED_CHARS]
    return list(dict.fromkeys(found))
