"""The job summaries in a real browser, at GitHub's content width.

The summaries of whole runs (tests/unit/summary_runs.py: a success, a rolled-back
run, a dry run, an input error, a failed build, long names) are rendered as GitHub-flavoured
Markdown (markdown-it-py: GFM tables, autolinks, raw HTML) into a page with
GitHub-like CSS, and opened in Debian's headless Chromium 1012 px wide. A script in
the page measures, with every <details> closed and then open, whether anything
is wider than the window or scrolls sideways, and where the outcome and the reason
are; ``--dump-dom`` hands the measurements back. Screenshots are kept in
.testenv/artifacts/ (CI uploads them).

Under CI=true a missing Chromium fails the test; on a laptop it skips, saying why.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from tests.conftest import ROOT, in_ci
from tests.unit import summary_runs

WIDTH = 1012  # GitHub's job-summary column on a common laptop screen
FIRST_SCREEN = 800  # px from the top of the page that a reader sees without scrolling
ARTIFACTS = ROOT / ".testenv" / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# What the reader came for, per run: the outcome and the reason.
NEEDLES = {
    "succeeded": ("Succeeded: deployed", "now run"),
    "rolled-back": ("Rolled back", "CrashLoopBackOff"),
    "dry-run": ("Dry run: nothing was pushed", "sidecar"),
    "plan": ("Dry run: nothing was pushed", "3 to change"),
    "input-error": ("Invalid input", "contains a tag"),
    "build-failed": ("Build failed", "RUN pip install"),
    "long-names": ("Rolled back", "OOMKilled"),
}

# GitHub's Markdown styles, the parts that decide widths: tables are blocks that
# scroll and do not wrap, code blocks scroll, inline code and paragraphs wrap.
CSS = """
body { margin: 0; background: #f6f8fa; }
.job { box-sizing: border-box; width: 100%; background: #fff; border: 1px solid #d0d7de; }
.job > header { padding: 12px 16px; font: 600 14px sans-serif; border-bottom: 1px solid #d0d7de; }
.markdown-body { box-sizing: border-box; padding: 16px; color: #1f2328;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial,
    sans-serif, "Apple Color Emoji", "Segoe UI Emoji";
  font-size: 16px; line-height: 1.5; word-wrap: break-word; }
.markdown-body > :first-child { margin-top: 0 !important; }
.markdown-body h2, .markdown-body h3 { margin: 24px 0 16px; font-weight: 600; line-height: 1.25; }
.markdown-body h2 { font-size: 1.5em; padding-bottom: .3em; border-bottom: 1px solid #d1d9e0; }
.markdown-body h3 { font-size: 1.25em; }
.markdown-body p, .markdown-body ul, .markdown-body table, .markdown-body pre,
.markdown-body details { margin-top: 0; margin-bottom: 16px; }
.markdown-body ul { padding-left: 2em; }
.markdown-body strong { font-weight: 600; }
.markdown-body table { border-spacing: 0; border-collapse: collapse; display: block;
  width: max-content; max-width: 100%; overflow: auto; white-space: nowrap; }
.markdown-body th, .markdown-body td { padding: 6px 13px; border: 1px solid #d1d9e0; }
.markdown-body th { font-weight: 600; }
.markdown-body tr:nth-child(2n) { background: #f6f8fa; }
.markdown-body code { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas,
    "Liberation Mono", monospace;
  font-size: 85%; padding: .2em .4em; margin: 0; white-space: break-spaces;
  background: rgba(129, 139, 152, .12); border-radius: 6px; }
.markdown-body pre { padding: 16px; overflow: auto; font-size: 85%; line-height: 1.45;
  background: #f6f8fa; border-radius: 6px; word-wrap: normal; }
.markdown-body pre code { font-size: 100%; padding: 0; background: transparent;
  white-space: pre; word-break: normal; }
.markdown-body details summary { cursor: pointer; display: list-item; }
"""

MEASURE = """
function box(needle) {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, at = node.data.indexOf(needle);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + needle.length);
    const r = range.getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right};
  }
  return null;
}
function name(el) {
  return el.tagName.toLowerCase() + ': ' + (el.textContent || '').trim().slice(0, 60);
}
function overflows() {
  const width = document.documentElement.clientWidth, found = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > width + 0.5) found.push(name(el) + ' ends at ' + Math.round(r.right) + ' px');
    const x = getComputedStyle(el).overflowX;
    if ((x === 'auto' || x === 'scroll') && el.scrollWidth > el.clientWidth + 1)
      found.push(name(el) + ' scrolls: ' + el.scrollWidth + ' > ' + el.clientWidth + ' px');
  }
  return found;
}
function measure() {
  const root = document.documentElement;
  return {width: root.clientWidth, scrollWidth: root.scrollWidth, overflows: overflows()};
}
const needles = JSON.parse(document.getElementById('needles').textContent);
const result = {closed: measure(), boxes: needles.map(box)};
const details = [...document.querySelectorAll('details')];
details.forEach(d => d.open = true);
result.open = measure();
details.forEach(d => d.open = false);
document.getElementById('result').textContent = JSON.stringify(result);
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = "Chromium not found: install Debian's chromium package (scripts/install-deps.sh does)"
    if in_ci():
        pytest.fail(why)
    pytest.skip(why)


def page(markdown: str, needles: tuple[str, ...]) -> str:
    body = MarkdownIt("gfm-like").render(markdown)
    needles_json = json.dumps(needles).replace("<", "\\u003c")
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<style>{CSS}</style></head><body>"
        '<div class="job"><header>deploy summary</header>'
        f'<article class="markdown-body">{body}</article></div>'
        f'<script type="application/json" id="needles">{needles_json}</script>'
        '<div id="result" hidden></div>'
        f"<script>{MEASURE}</script></body></html>"
    )


def browse(exe: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            exe,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{FIRST_SCREEN}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(profile)},
    )


def measured(dom: str) -> dict[str, Any]:
    start = dom.index('<div id="result" hidden="">') + len('<div id="result" hidden="">')
    return json.loads(html.unescape(dom[start : dom.index("</div>", start)]))


@pytest.fixture(scope="module")
def summaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return summary_runs.summaries(tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("run", list(NEEDLES))
def test_the_summary_fits_the_width_and_answers_in_the_first_screen(
    run: str, summaries: dict[str, str], tmp_path: Path
) -> None:
    exe = chromium()
    needles = NEEDLES[run]
    source = tmp_path / f"summary-{run}.html"
    source.write_text(page(summaries[run], needles), encoding="utf-8")
    url = source.as_uri()

    dumped = browse(exe, url, tmp_path / "profile-dom", "--dump-dom")
    assert dumped.returncode == 0 and 'hidden="">{' in dumped.stdout, dumped.stderr[-2000:]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"summary-{run}.png"
    shot.unlink(missing_ok=True)
    taken = browse(exe, url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    (ARTIFACTS / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")

    result = measured(dumped.stdout)
    for state in ("closed", "open"):
        seen = result[state]
        assert seen["width"] == WIDTH, seen
        assert seen["scrollWidth"] <= seen["width"], (state, seen)
        assert seen["overflows"] == [], (state, seen["overflows"])
    for needle, found in zip(needles, result["boxes"], strict=True):
        assert found is not None, f"{needle!r} is not on the page"
        assert found["bottom"] <= FIRST_SCREEN, f"{needle!r} is below the first screen: {found}"
        assert found["right"] <= WIDTH, f"{needle!r} is off to the right: {found}"
