"""The structure checks of `make lint` catch what they are for (and main passes them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "deployer" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "deployer" / "__init__.py").touch()
    return tmp_path


def test_a_long_function_and_a_long_class_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    methods = "".join(f"    def m{i}(self) -> None:\n        pass\n\n" for i in range(101))
    root = tree(tmp_path, {"a.py": f"def long():\n{body}\n\nclass Big:\n{methods}"})
    assert script("check_size").main(root, known={}) == 1
    err = capsys.readouterr().err
    assert "deployer/a.py:1: function long has 61 lines (limit 60)" in err
    assert "class Big has 303 lines (limit 300)" in err


def test_a_known_unit_may_not_grow_and_leaves_the_list_once_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(70))
    root = tree(tmp_path, {"a.py": f"def long():\n{body}\n\ndef short():\n    pass\n"})
    check = script("check_size")
    assert check.main(root, known={"deployer/a.py:long": 71}) == 0
    assert check.main(root, known={"deployer/a.py:long": 65}) == 1
    assert check.main(root, known={"deployer/a.py:short": 65}) == 1
    err = capsys.readouterr().err
    assert "grew to 71 lines" in err and "short is 2 lines now: remove it from KNOWN" in err


def test_an_import_cycle_fails_wherever_the_import_stands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree(
        tmp_path,
        {
            "a.py": "from deployer.b import x\n",
            "b.py": "def f():\n    from deployer import c\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
            "d.py": "import deployer.a\n",
        },
    )
    assert script("check_imports").main(root) == 1
    assert "import cycle: deployer.a -> deployer.b -> deployer.c -> deployer.a" in (
        capsys.readouterr().err
    )


def test_the_package_passes_both_checks() -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    assert script("check_size").main() == 0
    assert script("check_imports").main() == 0
