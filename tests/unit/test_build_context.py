"""The build context tar: what the engine receives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from deployer.build import context_archive
from deployer.errors import BuildError


def members(chunks: object) -> dict[str, bytes]:
    data = b"".join(chunks)  # type: ignore[call-overload]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_dockerignore_is_honoured_and_the_dockerfile_always_sent(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "secret.env").write_text("TOKEN=x\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("x")
    (tmp_path / "logs" / "keep.log").write_text("k")
    (tmp_path / ".dockerignore").write_text(
        "# comment\n*.env\nlogs/*.log\n!logs/keep.log\nDockerfile\n"
    )
    chunks, name = context_archive(tmp_path, tmp_path / "Dockerfile")
    found = members(chunks)
    assert name == "Dockerfile"
    assert found["Dockerfile"] == b"FROM scratch\n"
    assert found["app.py"] == b"print(1)\n"
    assert "secret.env" not in found
    assert "logs/a.log" not in found
    assert found["logs/keep.log"] == b"k"


def test_dockerfile_outside_the_context_is_added(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "file").write_text("f")
    (tmp_path / "Dockerfile.prod").write_text("FROM scratch\nCOPY file /\n")
    chunks, name = context_archive(context, tmp_path / "Dockerfile.prod")
    found = members(chunks)
    assert name.startswith(".dockerfile.")
    assert found[name] == b"FROM scratch\nCOPY file /\n"
    assert set(found) == {name, "file"}


def test_large_contexts_stream_in_chunks(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    for i in range(40):
        (tmp_path / f"f{i}").write_bytes(bytes([i]) * 20_000)
    chunks, _ = context_archive(tmp_path, tmp_path / "Dockerfile")
    parts = list(chunks)
    assert len(parts) > 2
    assert len(members(iter(parts))) == 41


def test_unreadable_file_is_a_build_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gone").write_text("x")
    chunks, _ = context_archive(tmp_path, tmp_path / "Dockerfile")
    (tmp_path / "sub" / "gone").unlink()
    with pytest.raises(BuildError, match="Cannot read sub/gone"):
        members(chunks)
