"""All GitHub Actions I/O: workflow commands, masking, outputs and the job summary.

Nothing else in deployer writes workflow commands or the runner's files. Every
line written here passes through :meth:`ActionsIO.redact`, so a value that was
masked never reaches the log, the outputs or the summary, even when it is
embedded in an exception message.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = [
    "MIN_RENDERED_SECRET",
    "SUMMARY_LIMIT",
    "ActionsIO",
    "cut_markdown",
    "escape_data",
    "escape_property",
]

_REDACTED = "***"
# Secrets shorter than this are not registered with the runner (it would mask every such
# substring of the log) and are redacted only field by field, before anything is rendered:
# replacing a one-character secret such as a backtick in rendered Markdown or JSON would
# break the code spans and fences that keep untrusted text inert.
MIN_RENDERED_SECRET = 4
# The runner drops a step summary larger than this, whole (actions/runner: 1 MiB per step).
SUMMARY_LIMIT = 1024 * 1024
_SUMMARY_CUT_NOTE = (
    "\n*The summary was cut here: the runner drops step summaries over 1 MiB. "
    "The log has everything.*\n"
)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def escape_data(text: str) -> str:
    """Escape a workflow-command message (as actions/toolkit does)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow-command property value."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _encodings(value: str) -> set[str]:
    """The value and the encodings of it that a careless print could leak."""
    raw = value.encode()
    found = {value, value.encode().hex(), urllib.parse.quote(value, safe="")}
    # Escaped forms, should a secret ever be escaped before it is redacted.
    found |= {html.escape(value), html.escape(value, quote=False)}
    found |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    for shift in range(3):  # base64 of the value at each alignment inside a larger text
        chunk = raw[shift:]
        whole = chunk[: len(chunk) // 3 * 3]  # only whole 3-byte groups encode the same
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.add(encode(whole).decode())
    return {f for f in found if len(f) >= 6}


class ActionsIO:
    """Writes the log and the runner's files for one run.

    ``out`` is the log (the runner reads workflow commands from stdout); ``env``
    supplies GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. Tests pass a StringIO and a dict.
    """

    def __init__(self, out: TextIO | None = None, env: Mapping[str, str] | None = None) -> None:
        self._out = out if out is not None else sys.stdout
        env = env if env is not None else {}
        self._output_path = Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None
        self._summary_path = (
            Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None
        )
        self._secrets: set[str] = set()
        self._lock = threading.RLock()
        self._stopped_by = ""  # the token of the open stop-commands block, if one is open
        self._depth = 0  # untrusted() blocks open (only the outermost one is the runner's)

    # -- masking -----------------------------------------------------------------

    def mask(self, value: str | None) -> None:
        """Register a secret with the runner (each line of it) and redact it locally.

        Safe from any thread at any time: inside an open stop-commands block (a token
        renewed on a watch thread while a pod's log is printed) the runner would show
        ``::add-mask::`` verbatim, so the block is closed around the mask and reopened.
        """
        if not value or not value.strip():
            return
        lines = [line.strip() for line in value.splitlines() if line.strip()]
        with self._lock:
            commands = []
            for line in [value.strip(), *lines]:
                if line in self._secrets:
                    continue
                if len(line) >= MIN_RENDERED_SECRET:
                    commands.append(f"::add-mask::{escape_data(line)}\n")
                self._secrets.add(line)
                self._secrets.update(_encodings(line))
            if commands and self._stopped_by:
                token = self._stopped_by
                commands = [f"::{token}::\n", *commands, f"::stop-commands::{token}\n"]
            self._out.write("".join(commands))
            self._out.flush()

    def redact(self, text: str, *, rendered: bool = False) -> str:
        """Replace every registered secret (and its encodings) in ``text``.

        ``rendered``: ``text`` is finished Markdown or JSON whose fields were redacted one
        by one already; secrets shorter than :data:`MIN_RENDERED_SECRET` are left alone.
        """
        shortest = MIN_RENDERED_SECRET if rendered else 1
        with self._lock:
            found = [s for s in self._secrets if len(s) >= shortest and s in text]
        for secret in sorted(found, key=len, reverse=True):
            text = text.replace(secret, _REDACTED)
        return text

    # -- log lines and annotations --------------------------------------------------

    def _write(self, line: str, *, head: str = "") -> None:
        """Write ``head`` as is and ``line`` redacted.

        ``head`` is our own command syntax (``::error title=…::``, ``::stop-commands::…``):
        redacting inside it would turn a short secret such as ``a`` into a broken
        ``::stop-comm***nds::`` and let untrusted text after it run as commands.
        """
        with self._lock:
            self._out.write(head + self.redact(line) + "\n")
            self._out.flush()

    def info(self, message: str) -> None:
        """A plain log line of our own; a line that looks like a command is neutralised."""
        for line in message.splitlines() or [""]:
            if line.lstrip().startswith("::"):
                line = " " + line.replace("::", ": :", 1)
            # The runner still reads legacy ##[command] anywhere in a line.
            self._write(line.replace("##[", "## ["))

    def _command(self, name: str, message: str, props: Mapping[str, str]) -> None:
        rendered = ",".join(
            f"{key}={escape_property(self.redact(value))}" for key, value in props.items() if value
        )
        head = f"::{name} {rendered}::" if rendered else f"::{name}::"
        self._write(escape_data(self.redact(message)), head=head)

    def error(self, message: str, *, title: str = "", file: str = "") -> None:
        self._command("error", message, {"title": title, "file": file})

    def warning(self, message: str, *, title: str = "") -> None:
        self._command("warning", message, {"title": title})

    def notice(self, message: str, *, title: str = "") -> None:
        self._command("notice", message, {"title": title})

    def debug(self, message: str) -> None:
        """A line the runner shows only with debug logging on (ACTIONS_STEP_DEBUG)."""
        self._command("debug", message, {})

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A collapsible log group, closed even when the body raises."""
        self._write(escape_data(self.redact(title)), head="::group::")
        try:
            yield
        finally:
            self._write("", head="::endgroup::")

    @contextmanager
    def untrusted(self) -> Iterator[UntrustedLog]:
        """Print text we do not control (build output, pod logs, events) inertly.

        Between ``::stop-commands::<token>`` and ``::<token>::`` the runner
        executes no workflow command, whatever the text contains.
        """
        token = f"deployer-{secrets.token_hex(16)}"
        with self._lock:
            self._write("", head=f"::stop-commands::{token}")
            self._depth += 1
            if self._depth == 1:
                self._stopped_by = token
        try:
            yield UntrustedLog(self, token)
        finally:
            with self._lock:
                self._write("", head=f"::{token}::")
                self._depth -= 1
                if self._depth == 0:
                    self._stopped_by = ""

    # -- outputs and summary ------------------------------------------------------------

    def set_outputs(self, outputs: Mapping[str, str]) -> None:
        """Write step outputs with a random heredoc delimiter per value."""
        blocks = []
        for name, value in outputs.items():
            value = self.redact(value, rendered=True)
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            while delimiter in value:  # pragma: no cover - a uuid collision
                delimiter = f"ghadelimiter_{uuid.uuid4()}"
            blocks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        if self._output_path is None:
            for name, value in outputs.items():
                self.info(f"output {name}: {value}")
            return
        with self._output_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(blocks))

    def append_summary(self, markdown: str) -> None:
        """Append a section to the job summary (no-op outside the runner).

        The whole file stays under :data:`SUMMARY_LIMIT`: a section that would pass
        it is cut at a line, with an open code fence closed and a note saying so.
        """
        if self._summary_path is None:
            return
        text = self.redact(markdown, rendered=True).rstrip("\n") + "\n\n"
        with self._lock:
            try:
                used = self._summary_path.stat().st_size
            except OSError:
                used = 0
            room = SUMMARY_LIMIT - used
            if len(text.encode()) > room:
                text = cut_markdown(text, room)
            if not text:
                return
            with self._summary_path.open("a", encoding="utf-8") as fh:
                fh.write(text)


def cut_markdown(text: str, room: int) -> str:
    """The longest head of ``text`` by whole lines that, closed and noted, fits ``room`` bytes.

    An open code fence is closed; a note says the summary was cut. '' if nothing fits.
    """
    budget = room - len(_SUMMARY_CUT_NOTE.encode()) - 64  # 64: a closing fence
    kept: list[str] = []
    fence = ""
    for line in text.split("\n"):
        size = len(line.encode()) + 1
        if size > budget:
            break
        budget -= size
        kept.append(line)
        found = _FENCE.match(line)
        if found and not fence:
            fence = found.group(1)
        elif fence and set(line.strip()) == {fence[0]} and len(line.strip()) >= len(fence):
            fence = ""
    if budget < 0 or (not kept and room < len(_SUMMARY_CUT_NOTE.encode())):
        return ""
    closing = f"{fence}\n" if fence else ""
    return "\n".join(kept) + "\n" + closing + _SUMMARY_CUT_NOTE


class UntrustedLog:
    """Writer handed out by :meth:`ActionsIO.untrusted`."""

    def __init__(self, io: ActionsIO, token: str) -> None:
        self._io = io
        self._token = token
        self._pattern = re.compile(re.escape(token), re.IGNORECASE)

    def write_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def write(self, text: str) -> None:
        if text.endswith("\n"):
            text = text[:-1]
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            # Only a command named like the token ends the block, and the runner compares
            # command names ignoring case (OrdinalIgnoreCase): ::DEPLOYER-AB12::,
            # ::Deployer-ab12 x=y:: or ##[deployer-AB12] anywhere would all resume.
            self._io._write(self._pattern.sub(_REDACTED, line))
