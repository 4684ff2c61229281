"""docker/metadata-action stand-in (see action.yml): tags and labels from the event."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

DEFAULT_TAGS = ["type=schedule", "type=ref,event=branch", "type=ref,event=tag", "type=ref,event=pr"]


def fail(message: str) -> None:
    print(f"::error::metadata-action stand-in: {message}")
    sys.exit(1)


def sanitize(tag: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", tag)[:128]


def event_payload() -> dict[str, Any]:
    path = os.environ.get("GITHUB_EVENT_PATH", "")
    try:
        return dict(json.loads(Path(path).read_text())) if path else {}
    except (OSError, ValueError):
        return {}


def semver(ref: str, pattern: str) -> str | None:
    match = re.fullmatch(r"refs/tags/v?(\d+)\.(\d+)\.(\d+)([-+].*)?", ref)
    if not match:
        return None
    major, minor, patch, rest = match.groups()
    version = f"{major}.{minor}.{patch}{rest or ''}"
    values = {"version": version, "major": major, "minor": minor, "patch": patch}
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), pattern)


def tag_of(rule: str, env: dict[str, str], event: dict[str, Any]) -> str | None:
    attrs = dict(part.split("=", 1) for part in rule.split(",") if "=" in part)
    if attrs.get("enable", "true") == "false":
        return None
    kind, ref, sha = attrs.get("type", ""), env.get("GITHUB_REF", ""), env.get("GITHUB_SHA", "")
    if kind == "sha":
        value = sha if attrs.get("format") == "long" else sha[:7]
        attrs.setdefault("prefix", "sha-")
    elif kind == "raw":
        value = attrs.get("value", "")
    elif kind == "ref":
        which = attrs.get("event", "")
        if which == "branch" and ref.startswith("refs/heads/"):
            value = ref.removeprefix("refs/heads/")
        elif which == "tag" and ref.startswith("refs/tags/"):
            value = ref.removeprefix("refs/tags/")
        elif which == "pr" and env.get("GITHUB_EVENT_NAME", "").startswith("pull_request"):
            value = str(event.get("number") or event.get("pull_request", {}).get("number", ""))
            attrs.setdefault("prefix", "pr-")
        elif which in ("branch", "tag", "pr"):
            return None
        else:
            fail(f"unknown ref event in {rule!r}")
    elif kind == "semver":
        found = semver(ref, attrs.get("pattern", "{{version}}"))
        if found is None:
            return None
        value = found
    elif kind == "schedule":
        return None if env.get("GITHUB_EVENT_NAME") != "schedule" else "nightly"
    else:
        fail(f"the rule {rule!r} is not faked by this stand-in")
    if not value:
        return None
    return sanitize(attrs.get("prefix", "") + value + attrs.get("suffix", ""))


def main() -> None:
    env = dict(os.environ)
    event = event_payload()
    images = [i for i in re.split(r"[\n,]", env["INPUT_IMAGES"]) if i.strip()]
    images = [i.strip() for i in images]
    rules = [r.strip() for r in env["INPUT_TAGS"].splitlines() if r.strip()] or DEFAULT_TAGS
    names: list[str] = []
    for rule in rules:
        tag = tag_of(rule, env, event)
        if tag and tag not in names:
            names.append(tag)
    repo = event.get("repository", {}) if isinstance(event.get("repository"), dict) else {}
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    repository = env.get("GITHUB_REPOSITORY", "")
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    version = names[0] if names else ""
    labels = {
        "org.opencontainers.image.title": str(repo.get("name") or repository.split("/")[-1]),
        "org.opencontainers.image.description": str(repo.get("description") or ""),
        "org.opencontainers.image.url": f"{server}/{repository}",
        "org.opencontainers.image.source": f"{server}/{repository}",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.revision": env.get("GITHUB_SHA", ""),
        "org.opencontainers.image.licenses": "",
    }
    for line in env["INPUT_LABELS"].splitlines():
        if "=" in line:
            key, _, value = line.strip().partition("=")
            labels[key] = value
    tags = [f"{image}:{name}" for image in images for name in names]
    label_lines = [f"{k}={v}" for k, v in labels.items()]
    outputs = {
        "version": version,
        "tags": "\n".join(tags),
        "tag-names": "\n".join(names),
        "labels": "\n".join(label_lines),
        "annotations": "\n".join(f"manifest:{line}" for line in label_lines),
        "json": json.dumps({"tags": tags, "labels": labels}),
    }
    with open(env["GITHUB_OUTPUT"], "a") as out:
        for name, value in outputs.items():
            delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            out.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    print(f"metadata-action stand-in: tags {names}")


if __name__ == "__main__":
    main()
