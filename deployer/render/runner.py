"""Run a renderer binary (kustomize, helm) on untrusted input, bounded and boxed.

The binary gets a scrubbed environment: no variable of the job (no credentials,
no ``KUBECONFIG``, no ``GIT_*``), ``HOME``, ``TMPDIR`` and every tool directory in
a private temporary directory, ``PATH`` a directory that does not exist (so
nothing, not ``git`` nor a plugin, can be found by name), and an HTTP(S) proxy that goes nowhere
when the step needs no network (a ``$ref`` or a remote base that got past the
checks cannot be fetched). The run has a deadline, stdout is read up to a cap
(the process is killed beyond it), stderr keeps its last lines for the error, and
a cancel kills the whole process group at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from deployer.clock import SYSTEM_CLOCK, Clock
from deployer.errors import Cancelled

__all__ = ["NO_NETWORK", "PrivateDirs", "ToolFailed", "private_dirs", "run_tool"]

# Go's HTTP client honours these: every non-loopback request goes to a port nothing
# listens on, so it fails at once instead of reaching the network.
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}
_STDERR_KEEP = 16 * 1024  # bytes of stderr kept for the error message (its end)
_CHUNK = 64 * 1024
_POLL = 0.1
_JOIN = 5.0


class ToolFailed(Exception):
    """The tool could not run, failed, timed out or wrote too much (``message`` says)."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stderr = stderr


@dataclass(frozen=True)
class PrivateDirs:
    """A private temporary directory tree for one tool run, removed afterwards.

    Only ``home`` and ``tmp`` exist from the start; :attr:`nothing` never exists (a
    ``PATH`` or plugin directory there finds nothing), and the tools' own directories
    are paths in the tree the tool creates if it needs them (fewer syscalls per run).
    """

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def nothing(self) -> Path:
        """A directory that does not exist: PATH, plugin directories."""
        return self.root / "nothing"

    def path(self, name: str) -> Path:
        """A new directory ``name`` inside the tree."""
        found = self.root / name
        found.mkdir(mode=0o700, parents=True, exist_ok=True)
        return found

    def base_env(self) -> dict[str, str]:
        """The environment every tool run starts from: nothing of the job's."""
        return {
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "PATH": str(self.nothing),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "LANG": "C.UTF-8",
            # A render is short: a larger GC target spends ~15 % less CPU collecting
            # garbage; the limit keeps the heap bounded whatever the input.
            "GOGC": "400",
            "GOMEMLIMIT": "1GiB",
        }


@contextmanager
def private_dirs(prefix: str) -> Iterator[PrivateDirs]:
    root = Path(tempfile.mkdtemp(prefix=f"deployer-{prefix}-"))
    try:
        dirs = PrivateDirs(root)
        dirs.home.mkdir(mode=0o700)
        dirs.tmp.mkdir(mode=0o700)
        yield dirs
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Reader(threading.Thread):
    """Reads one pipe: all of it up to ``cap`` bytes (``over`` set beyond), or its end."""

    def __init__(self, pipe: object, cap: int, *, keep_end: bool, wake: threading.Event) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.cap = cap
        self.keep_end = keep_end
        self.data = bytearray()
        self.over = False
        self.wake = wake

    def run(self) -> None:
        read = getattr(self.pipe, "read")  # noqa: B009 - a binary pipe
        while chunk := read(_CHUNK):
            self.data += chunk
            if len(self.data) > self.cap:
                if self.keep_end:
                    del self.data[: len(self.data) - self.cap]
                else:
                    self.over = True
                    self.wake.set()
                    return


def _kill(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    seconds: float,
    max_output: int,
    cancel: threading.Event | None = None,
    stdin: bytes | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> bytes:
    """Run ``argv`` and return its stdout; :class:`ToolFailed` or :class:`Cancelled`."""
    try:
        process = subprocess.Popen(  # argv is ours, the binary trusted; the input is not
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: one kill stops its children
            close_fds=True,
        )
    except OSError as e:
        raise ToolFailed(f"cannot run {Path(argv[0]).name}: {e.strerror or e}") from None
    wake = threading.Event()  # the process ended, or wrote too much
    out = _Reader(process.stdout, max_output, keep_end=False, wake=wake)
    err = _Reader(process.stderr, _STDERR_KEEP, keep_end=True, wake=threading.Event())

    def reap() -> None:
        process.wait()
        wake.set()

    threading.Thread(target=reap, daemon=True).start()
    out.start()
    err.start()
    if stdin is not None and process.stdin is not None:
        try:
            process.stdin.write(stdin)
            process.stdin.close()
        except OSError:
            pass  # it exited early; its status says why
    try:
        _wait(wake, out, seconds, cancel or threading.Event(), clock)
    finally:
        _kill(process)  # also what it left behind in its group, which would hold the pipes
        out.join(_JOIN)  # bounded: a process that left the group could hold a pipe open
        err.join(_JOIN)
        for pipe in (process.stdout, process.stderr, process.stdin):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()
    stderr = bytes(err.data).decode("utf-8", "replace").strip()
    if process.returncode != 0:
        raise ToolFailed(f"{Path(argv[0]).name} failed (exit code {process.returncode})", stderr)
    return bytes(out.data)


def _wait(
    wake: threading.Event, out: _Reader, seconds: float, cancel: threading.Event, clock: Clock
) -> None:
    deadline = clock.monotonic() + seconds
    while True:
        woken = clock.wait(wake, min(_POLL, max(0.0, deadline - clock.monotonic())))
        if out.over:
            raise ToolFailed(f"its output is larger than {out.cap // (1024 * 1024)} MiB")
        if woken:
            return
        if cancel.is_set():
            raise Cancelled("cancelled")
        if clock.monotonic() >= deadline:
            raise ToolFailed(f"it did not finish in {seconds:.0f} s")
