"""The commit time of the checked-out commit, read from the workspace's ``.git``.

On ``workflow_dispatch`` the event holds no commit, so the ``created`` label needs
the commit's time from the checkout. git itself is not run: a workspace's
``.git/config`` can name programs (``core.fsmonitor``, hooks) that git would
execute. The object is read directly, loose or from a version-2 pack index, with
every read bounded and every file kept inside the workspace. Anything unusual
(a deltified commit, a ``.git`` file pointing elsewhere) gives ``None``.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

__all__ = ["commit_time"]

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_MAX_OBJECT = 1 << 20  # a commit object is a few hundred bytes
_MAX_FILE = 64 << 20  # refs, packed-refs and pack indexes read whole
_COMMITTER_RE = re.compile(rb"^committer .* (\d{1,12}) [+-]\d{4}$", re.MULTILINE)


def _read(path: Path, root: Path, limit: int = _MAX_FILE) -> bytes | None:
    try:
        real = path.resolve()
        real.relative_to(root)
        if not real.is_file() or real.stat().st_size > limit:
            return None
        return real.read_bytes()
    except (OSError, ValueError, RuntimeError):
        return None


def _inflate(data: bytes) -> bytes | None:
    try:
        return zlib.decompressobj().decompress(data, _MAX_OBJECT)
    except zlib.error:
        return None


def _head(git: Path, root: Path) -> str | None:
    head = _read(git / "HEAD", root, 4096)
    if head is None:
        return None
    text = head.decode("ascii", "replace").strip()
    if _SHA_RE.match(text):
        return text
    if not text.startswith("ref: refs/"):
        return None
    ref = text[5:]
    loose = _read(git / ref, root, 4096)
    if loose is not None:
        sha = loose.decode("ascii", "replace").strip()
        return sha if _SHA_RE.match(sha) else None
    packed = _read(git / "packed-refs", root) or b""
    for line in packed.decode("utf-8", "replace").splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and _SHA_RE.match(sha):
            return sha
    return None


def _loose(git: Path, root: Path, sha: str) -> bytes | None:
    data = _read(git / "objects" / sha[:2] / sha[2:], root)
    body = _inflate(data) if data is not None else None
    if body is None or not body.startswith(b"commit "):
        return None
    return body.partition(b"\0")[2]


def _packed(git: Path, root: Path, sha: str) -> bytes | None:
    wanted = bytes.fromhex(sha)
    try:
        indexes = sorted((git / "objects" / "pack").glob("pack-*.idx"))[:64]
    except OSError:
        return None
    for index_path in indexes:
        index = _read(index_path, root)
        if not index or index[:8] != b"\377tOc\0\0\0\2" or len(index) < 8 + 1024:
            continue
        fanout = struct.unpack(">256I", index[8 : 8 + 1024])
        count = fanout[255]
        names = 8 + 1024
        low = fanout[wanted[0] - 1] if wanted[0] else 0
        high = fanout[wanted[0]]
        position = None
        while low < high:  # binary search in the sorted names
            middle = (low + high) // 2
            name = index[names + 20 * middle : names + 20 * middle + 20]
            if name == wanted:
                position = middle
                break
            if name < wanted:
                low = middle + 1
            else:
                high = middle
        if position is None:
            continue
        offsets = names + 24 * count  # after the names and the CRCs
        (offset,) = struct.unpack(">I", index[offsets + 4 * position : offsets + 4 * position + 4])
        if offset & 0x80000000:
            large = offsets + 4 * count + 8 * (offset & 0x7FFFFFFF)
            (offset,) = struct.unpack(">Q", index[large : large + 8])
        try:
            with index_path.with_suffix(".pack").open("rb") as pack:
                pack.seek(offset)
                chunk = pack.read(_MAX_OBJECT)
        except OSError:
            return None
        if not chunk or (chunk[0] >> 4) & 7 != 1:  # 1 = commit; a delta is not read
            return None
        start = 1
        while chunk[start - 1] & 0x80 and start < len(chunk):
            start += 1
        return _inflate(chunk[start:])
    return None


def commit_time(workspace: Path, sha: str = "") -> int | None:
    """The committer time (seconds since the epoch) of ``sha``, else of HEAD, or None."""
    root = workspace.resolve()
    git = root / ".git"
    if not git.is_dir() or git.is_symlink():
        return None
    commit = sha if _SHA_RE.match(sha) else _head(git, root)
    if commit is None:
        return None
    body = _loose(git, root, commit) or _packed(git, root, commit)
    if body is None:
        return None
    header = body.partition(b"\n\n")[0]
    match = _COMMITTER_RE.search(header)
    return int(match.group(1)) if match else None
