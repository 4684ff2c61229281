"""Untrusted text as inert Markdown: one inline code span that nothing inside can end.

Kept apart from :mod:`deployer.report` so the stages that write a summary line of
their own (the cluster's TLS warning, the dry-run plan's cluster-scoped note) use
the same span without importing the report (which imports the rollout's types).
"""

from __future__ import annotations

import re

__all__ = ["CONTROL", "clip", "code"]

# ANSI escape sequences (colours in build and pod logs) and other control characters.
CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(text: str, *, limit: int = 2_000, cell: bool = False) -> str:
    """``text`` as one inline code span: shown literally, never a link, image or HTML.

    Control characters go (a CR or LF would end the span's line), runs of white
    space become one space. In a table cell (``cell``) a ``|`` would end the cell
    even inside a code span: it is escaped, and backslashes right before it
    doubled so the escape holds.
    """
    text = clip(" ".join(CONTROL.sub("", text[: limit * 2]).split()), limit)
    if not text:
        return ""
    if cell and "|" in text:
        text = re.sub(r"(\\*)\|", lambda m: m.group(1) * 2 + "\\|", text)
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"
