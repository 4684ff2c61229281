"""Actions I/O: what the runner would read from our log and files."""

from __future__ import annotations

import base64
import io
import re
import threading
from pathlib import Path

from deployer.actions import ActionsIO, escape_data, escape_property


def runner_outputs(text: str) -> dict[str, str]:
    """Parse GITHUB_OUTPUT the way the runner does (name=value and heredoc)."""
    found: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            j = lines.index(delimiter, i + 1)
            found[name] = "\n".join(lines[i + 1 : j])
            i = j + 1
        elif "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
            i += 1
        else:
            i += 1
    return found


def make(tmp_path: Path) -> tuple[ActionsIO, io.StringIO, Path, Path]:
    out = io.StringIO()
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.touch()
    summary.touch()
    env = {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}
    return ActionsIO(out, env), out, output, summary


def _command_name(line: str) -> str | None:
    """The command name the runner parses from a line: ``::name props::`` after leading
    whitespace (ActionCommand.TryParseV2), or ``##[name props]`` anywhere (TryParse)."""
    stripped = line.lstrip()
    if stripped.startswith("::"):
        end = stripped.find("::", 2)
        if end >= 0:
            return stripped[2:end].split(" ", 1)[0]
    start = line.find("##[")
    if start >= 0 and line.find("]", start) >= 0:
        return line[start + 3 : line.find("]", start)].split(" ", 1)[0]
    return None


def commands(log: str) -> list[str]:
    """Workflow commands the runner would execute (outside stop-commands blocks).

    Like the runner, a block ends at a command named like its token compared
    ignoring case (OrdinalIgnoreCase), in either command syntax.
    """
    executed, stopped_by = [], None
    for line in log.splitlines():
        stripped = line.lstrip()
        if stopped_by is not None:
            name = _command_name(line)
            if name is not None and name.lower() == stopped_by.lower():
                stopped_by = None
            continue
        if stripped.startswith("::stop-commands::"):
            stopped_by = stripped.removeprefix("::stop-commands::")
            continue
        if stripped.startswith("::"):
            executed.append(stripped)
    return executed


def test_escaping() -> None:
    assert escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert escape_property("a:b,c") == "a%3Ab%2Cc"


def test_error_is_one_line_even_with_newlines(tmp_path: Path) -> None:
    actions, out, _, _ = make(tmp_path)
    actions.error("first\n::add-mask::x\nsecond", title="Bad: thing")
    assert out.getvalue() == "::error title=Bad%3A thing::first%0A::add-mask::x%0Asecond\n"


def test_mask_registers_each_line_and_redacts_encodings(tmp_path: Path) -> None:
    actions, out, output, summary = make(tmp_path)
    secret = "p@ss/word-Line1\nLine2-secret"
    actions.mask(secret)
    assert "::add-mask::Line2-secret" in out.getvalue()
    assert "::add-mask::p@ss/word-Line1%0ALine2-secret" in out.getvalue()
    leaked = [
        "p@ss/word-Line1",
        base64.b64encode(b"user:p@ss/word-Line1").decode(),
        b"p@ss/word-Line1".hex(),
        "p%40ss%2Fword-Line1",
    ]
    actions.info("values: " + " ".join(leaked))
    actions.set_outputs({"x": leaked[0]})
    actions.append_summary(f"| {leaked[1]} |")
    actions.error(f"failed with {leaked[0]}")
    everything = out.getvalue().split("::add-mask::")[-1].split("\n", 1)[1]
    everything += output.read_text() + summary.read_text()
    # the base64 of user:secret carries the secret at an offset: its whole groups are caught
    for value in ["p@ss/word-Line1", b"p@ss/word-Line1".hex(), "p%40ss%2Fword-Line1"]:
        assert value not in everything
    assert "d29yZC1MaW5lMQ" not in everything  # base64 of "word-Line1" inside user:...


def test_untrusted_text_cannot_issue_commands(tmp_path: Path) -> None:
    actions, out, _, _ = make(tmp_path)
    with actions.group("Build log"), actions.untrusted() as log:
        log.write("::add-mask::stolen\n::error::fake\r::set-output name=image::evil\n")
        log.write("::endgroup::\n")
    executed = commands(out.getvalue())
    assert executed == ["::group::Build log", "::endgroup::"]
    token = re.search(r"::stop-commands::(\S+)", out.getvalue())
    assert token and len(token.group(1)) >= 32


def test_untrusted_text_cannot_end_the_block_early(tmp_path: Path) -> None:
    actions, out, _, _ = make(tmp_path)
    with actions.untrusted() as log:
        token = out.getvalue().split("::stop-commands::")[1].strip()
        log.write(f"::{token}::\n::error::escaped")
    assert commands(out.getvalue()) == []


def test_the_token_ends_the_block_in_no_case_and_no_syntax(tmp_path: Path) -> None:
    """The runner compares the resume token ignoring case, in ``::x::`` and ``##[x]`` form."""
    actions, out, _, _ = make(tmp_path)
    for form in ["::{}::", "  ::{} a=b::", "log ##[{}] text", "##[{} x=y;]"]:
        for case in (str.upper, str.title, str.swapcase):
            with actions.untrusted() as log:
                token = out.getvalue().rsplit("::stop-commands::", 1)[1].strip()
                log.write(form.format(case(token)) + "\n::error::escaped\n##[error]escaped")
    assert commands(out.getvalue()) == []
    assert "escaped" in out.getvalue()


def test_plain_info_lines_are_not_commands(tmp_path: Path) -> None:
    actions, out, _, _ = make(tmp_path)
    actions.info("::error::from a name")
    actions.info("pod says ##[add-mask]hidden and ##[error]x")
    assert commands(out.getvalue()) == []
    assert "##[" not in out.getvalue()


def test_outputs_cannot_be_injected(tmp_path: Path) -> None:
    actions, _, output, _ = make(tmp_path)
    hostile = "x\nstatus=succeeded\nimage<<EOF\nevil\nEOF\nghadelimiter_fake"
    actions.set_outputs({"reason": hostile, "status": "failed"})
    parsed = runner_outputs(output.read_text())
    assert parsed == {"reason": hostile, "status": "failed"}


def test_delimiters_are_random(tmp_path: Path) -> None:
    actions, _, output, _ = make(tmp_path)
    actions.set_outputs({"a": "1", "b": "2"})
    delimiters = re.findall(r"<<(\S+)", output.read_text())
    assert len(set(delimiters)) == 2
    assert all(d.startswith("ghadelimiter_") for d in delimiters)


def test_outputs_outside_the_runner_go_to_the_log() -> None:
    out = io.StringIO()
    ActionsIO(out, {}).set_outputs({"status": "succeeded"})
    assert "status: succeeded" in out.getvalue()


def test_a_mask_from_another_thread_inside_an_untrusted_block_still_registers(
    tmp_path: Path,
) -> None:
    """Issue 17.12: a cluster token renewed on a watch thread while a pod's log is printed
    (was: ``::add-mask::`` inside the stop-commands block, shown verbatim by the runner)."""
    from deployer.cloud import TokenSource

    actions, out, _, _ = make(tmp_path)
    count = iter(range(1000))
    source = TokenSource(lambda: (f"renewed-token-{next(count):04d}", 0.0), actions.mask)
    renewed: list[str] = []

    def renew() -> None:
        for _ in range(25):
            renewed.append(source.token())  # expired at once: renewed and masked every time

    with actions.untrusted() as outer, actions.untrusted() as log:
        thread = threading.Thread(target=renew)
        thread.start()
        while thread.is_alive():
            log.write("::error::a pod's log line")
            outer.write("::warning::another")
        thread.join()
    actions.notice("after the block")
    executed = commands(out.getvalue())
    assert [c for c in executed if c.startswith("::add-mask::")] == [
        f"::add-mask::{token}" for token in renewed
    ]
    assert not [c for c in executed if c.startswith(("::error", "::warning"))]
    assert executed[-1] == "::notice::after the block"  # the block was closed at its end
