"""Inert Markdown: text from outside shown so it cannot become a link, an image or HTML.

Untrusted text (pod messages, events, logs, manifests, the cluster's answers, input
values) goes into Markdown only through :func:`code` (one inline code span) or
:func:`fenced` (a code block nothing inside can close), each with a size cap.
Used by the job summary (:mod:`deployer.report`) and the dry-run plan
(:mod:`deployer.plan`).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "FIELD_CHARS",
    "LINE_CHARS",
    "SECTION_LINES",
    "WRAP_COLUMNS",
    "clip",
    "clip_middle",
    "code",
    "fenced",
    "short_image",
    "wrapped",
]

FIELD_CHARS = 2_000  # one message or reason
LINE_CHARS = 400  # one line of untrusted text in a fenced block, before wrapping
WRAP_COLUMNS = 100  # fenced lines are wrapped so the block never scrolls sideways
SECTION_LINES = 60  # lines of one fenced block
FENCE_INPUT = 64 * 1024  # characters of a fenced block's text looked at (head; 3x that of its end)

# ANSI escape sequences (colours in build and pod logs) and other control characters.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_middle(text: str, limit: int) -> str:
    """Names keep both ends: ``deployment/payments-c…-eu-west-1b-2`` tells two apart."""
    if len(text) <= limit:
        return text
    tail = (limit - 1) // 2
    return text[: limit - 1 - tail] + "…" + text[-tail:]


def code(text: str, *, limit: int = FIELD_CHARS, cell: bool = False) -> str:
    """``text`` as one inline code span: shown literally, never a link, image or HTML.

    In a table cell (``cell``) a ``|`` would end the cell even inside a code span:
    it is escaped, and backslashes right before it doubled so the escape holds.
    """
    text = clip(" ".join(_CONTROL.sub("", text[: limit * 2]).split()), limit)
    if not text:
        return ""
    if cell and "|" in text:
        text = re.sub(r"(\\*)\|", lambda m: m.group(1) * 2 + "\\|", text)
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def wrapped(line: str, columns: int = WRAP_COLUMNS) -> list[str]:
    """``line`` cut into pieces of at most ``columns`` display columns, at a space if near."""
    if len(line) <= columns // 2 or (len(line) <= columns and line.isascii()):
        return [line]
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for char in line:
        w = _width(char)
        if used + w > columns:
            text = "".join(current)
            cut = text.rfind(" ", columns // 2)
            rest = text[cut + 1 :] if cut > 0 else ""
            pieces.append(text[:cut] if cut > 0 else text)
            current, used = ["↳ ", *rest], 2 + sum(_width(c) for c in rest)
        current.append(char)
        used += w
    pieces.append("".join(current))
    return pieces


def fenced(text: str, *, max_lines: int = SECTION_LINES, language: str = "text") -> str:
    """``text`` in a fenced code block that nothing inside can close.

    Lines are capped at :data:`LINE_CHARS` and wrapped at :data:`WRAP_COLUMNS`, the
    block at ``max_lines`` (its first third and its end are kept: a log's last lines
    matter most).
    """
    if len(text) > 4 * FENCE_INPUT:  # only its head and its end can be shown
        text = text[:FENCE_INPUT] + "\n…\n" + text[-3 * FENCE_INPUT :]
    given = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    dropped = 0  # lines never looked at: more than the block could show anyway
    if len(given) > 4 * max_lines:
        dropped = len(given) - 4 * max_lines
        given = given[:max_lines] + given[-3 * max_lines :]
    lines: list[str] = []
    for line in given:
        line = clip(_CONTROL.sub("", line.expandtabs(4)).rstrip(), LINE_CHARS)
        lines.extend(wrapped(line, WRAP_COLUMNS))
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) > max_lines:
        head = max_lines // 3
        tail = max_lines - head - 1
        left_out = len(lines) - head - tail + dropped
        lines = [*lines[:head], f"… ({left_out} lines left out) …", *lines[-tail:]]
    body = "\n".join(lines)
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", body)), default=0) + 1)
    return f"{ticks}{language}\n{body}\n{ticks}"


_DIGEST = re.compile(r"^(?P<repo>.+)@(?P<algo>[a-z0-9]+):(?P<hex>[0-9a-fA-F]{12,})$")


def _short_repository(repository: str, limit: int = 32) -> str:
    if len(repository) <= limit:
        return repository
    tail = repository[-(limit - 1) :]
    if "/" in tail[1:]:
        tail = tail[tail.index("/", 1) :]
    return "…" + tail


def short_image(reference: str) -> str:
    """``repo@sha256:e2ec6d4e…`` (and long repositories and tags cut), for tables."""
    parts = []
    for ref in reference.split(", "):
        found = _DIGEST.match(ref)
        if found:
            repo = _short_repository(found["repo"])
            parts.append(f"{repo}@{found['algo']}:{found['hex'][:8]}…")
            continue
        repo, sep, tag = ref.rpartition(":")
        if sep and "/" not in tag:
            parts.append(f"{_short_repository(repo)}:{clip(tag, 24)}")
        else:
            parts.append(_short_repository(ref))
    return ", ".join(parts)
