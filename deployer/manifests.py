"""The ``manifests`` input: find the files, parse them, put the deployed image in.

Validation happens before anything is sent to the cluster: every pattern must
match a file inside the workspace, every file must be YAML whose documents each
have ``apiVersion``, ``kind`` and ``metadata.name``. Then every image reference
to the configured repository (any tag or digest) is replaced by the image being
deployed, and the caller is told how many were replaced so it never silently
does nothing.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deployer.errors import ConfigError, InputProblem

__all__ = ["Manifest", "load_manifests", "repository_of", "same_repository"]

_EXAMPLE = "k8s/*.yaml"
_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")
_SUFFIXES = (".yaml", ".yml", ".json")


def repository_of(reference: str) -> str:
    """``host/path:tag@sha256:…`` → ``host/path``."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def _normalised(repository: str) -> str:
    for prefix in _HUB:
        if repository.startswith(prefix):
            repository = repository[len(prefix) :]
            break
    return repository.removeprefix("library/")


def same_repository(reference: str, repository: str) -> bool:
    """Whether ``reference`` is an image of ``repository`` (Docker Hub spellings equal)."""
    return _normalised(repository_of(reference)) == _normalised(repository)


@dataclass
class Manifest:
    """One document of a manifest file, with the image already substituted."""

    source: str  # "k8s/app.yaml (document 2)"
    doc: dict[str, Any]
    substituted: int

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def api_version(self) -> str:
        return str(self.doc["apiVersion"])

    def namespace(self, default: str) -> str:
        return str(self.doc["metadata"].get("namespace") or default)


def _substitute(node: Any, repository: str, image: str) -> int:
    count = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str) and same_repository(value, repository):
                node[key] = image
                count += 1
            else:
                count += _substitute(value, repository, image)
    elif isinstance(node, list):
        for item in node:
            count += _substitute(item, repository, image)
    return count


def _files(workspace: Path, pattern: str, problems: list[InputProblem]) -> list[Path]:
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        problems.append(
            InputProblem("manifests", f"'{pattern}' must be a path inside the workspace", _EXAMPLE)
        )
        return []
    found = []
    for match in sorted(glob.glob(pattern, root_dir=workspace, recursive=True)):
        path = (workspace / match).resolve()
        if not path.is_relative_to(workspace.resolve()):
            problems.append(
                InputProblem("manifests", f"'{match}' lies outside the workspace", _EXAMPLE)
            )
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
    if not found:
        problems.append(
            InputProblem(
                "manifests",
                f"'{pattern}' matches no file (paths are relative to the workspace)",
                _EXAMPLE,
            )
        )
    return found


def _documents(data: Any) -> Iterator[Any]:
    if (
        isinstance(data, Mapping)
        and data.get("kind") == "List"
        and isinstance(data.get("items"), list)
    ):
        yield from data["items"]
    else:
        yield data


def load_manifests(
    workspace: Path, patterns: tuple[str, ...], repository: str, image: str
) -> list[Manifest]:
    """Read, validate and substitute; raises :class:`ConfigError` on input 'manifests'."""
    problems: list[InputProblem] = []
    manifests: list[Manifest] = []
    seen: set[Path] = set()
    for pattern in patterns:
        for path in _files(workspace, pattern, problems):
            if path in seen:
                continue
            seen.add(path)
            shown = path.relative_to(workspace.resolve()).as_posix()
            try:
                loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as e:
                problems.append(
                    InputProblem("manifests", f"'{shown}' cannot be read: {e}", _EXAMPLE)
                )
                continue
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                problems.append(
                    InputProblem("manifests", f"'{shown}' is not valid YAML{where}", _EXAMPLE)
                )
                continue
            number = 0
            for data in loaded:
                if data is None:
                    continue
                for doc in _documents(data):
                    number += 1
                    source = f"{shown} (document {number})"
                    meta = doc.get("metadata") if isinstance(doc, dict) else None
                    if (
                        not isinstance(doc, dict)
                        or not doc.get("apiVersion")
                        or not doc.get("kind")
                        or not isinstance(meta, dict)
                        or not meta.get("name")
                    ):
                        problems.append(
                            InputProblem(
                                "manifests",
                                f"{source} needs apiVersion, kind and metadata.name",
                                _EXAMPLE,
                            )
                        )
                        continue
                    count = _substitute(doc, repository, image)
                    manifests.append(Manifest(source, doc, count))
    if problems:
        raise ConfigError(problems)
    return manifests
