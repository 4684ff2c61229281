"""The ``kustomize`` input: check the kustomization graph, then ``kustomize build`` it.

The tree comes from the checked-out repository, which may be a hostile pull
request. kustomize's own load restrictor (RootOnly) confines the *files* a
kustomization loads to its directory, but not the *directories* it builds on
(``resources: [../base]`` may lie anywhere), and a ``resources`` entry that is
not a local path is fetched: a plain GET for an http(s) file, a ``git clone``
for anything git-like. So before kustomize runs, :func:`check_kustomization`
walks the graph itself, from the overlay through every resource, base and
component, and refuses, naming the file and the entry:

- anything remote (a URL, ``git@host:…``, ``github.com/org/repo``, ``?ref=``) or a
  path that does not exist (kustomize would try it as a remote);
- any path that leads outside the workspace once links are followed;
- KRM functions (``config.kubernetes.io/function``: exec or container) and the
  Helm generator (``helmCharts``), which would run programs.

kustomize then runs without ``--enable-alpha-plugins``, ``--enable-exec`` or
``--enable-helm``, with ``--load-restrictor LoadRestrictionsRootOnly``, a
scrubbed environment, no network, a deadline and an output cap
(:mod:`deployer.render.runner`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError, InputProblem
from deployer.manifests import MAX_TOTAL_BYTES, read_text_file
from deployer.render.runner import NO_NETWORK, ToolFailed, private_dirs, run_tool
from deployer.safeyaml import check_events, construct

__all__ = ["KUSTOMIZATION_FILES", "build", "check_kustomization", "is_remote"]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_EXAMPLE = "k8s/overlays/production"
_MAX_KUSTOMIZATIONS = 500
_MAX_DEPTH = 64
_MAX_EVENTS = 200_000
# Fields whose entries are kustomizations (directories) or files of objects.
_OPERANDS = ("resources", "bases", "components")
_FILES = ("crds", "configurations")
_PLUGINS = ("generators", "transformers", "validators")
_GENERATORS = ("configMapGenerator", "secretGenerator")
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")
_HELM_FIELDS = ("helmCharts", "helmChartInflationGenerator", "helmGlobals")
_SCP_LIKE = re.compile(r"^[\w.+-]+@[\w.-]+:")  # git@github.com:org/repo
_GIT_HOSTS = ("github.com/", "gitlab.com/", "bitbucket.org/", "dev.azure.com/")


def is_remote(entry: str) -> bool:
    """Whether kustomize would fetch ``entry`` rather than read it from the tree.

    A URL always is fetched (an http(s) file by GET, anything else by git); the other
    git-like forms of kustomize's repospec (``git@host:…``, ``github.com/org/repo``,
    ``…?ref=…``, ``…/_git/…``) only when no such local path exists.
    """
    return "://" in entry or entry.lower().startswith("git::") or _git_like(entry)


def _git_like(entry: str) -> bool:
    lowered = entry.lower()
    return (
        bool(_SCP_LIKE.match(entry))
        or lowered.startswith(_GIT_HOSTS)
        or "?ref=" in lowered
        or "?version=" in lowered
        or "/_git/" in lowered
    )


@dataclass
class _Walk:
    """The state of one check: the workspace, what was visited, what is wrong."""

    workspace: Path
    shown_root: Path
    problems: list[InputProblem] = field(default_factory=list)
    visited: set[Path] = field(default_factory=set)

    def fail(self, where: Path, text: str) -> None:
        self.problems.append(InputProblem("kustomize", f"{self.show(where)}: {text}", _EXAMPLE))

    def show(self, path: Path) -> str:
        """``path`` relative to the workspace, as a user knows it."""
        try:
            return path.relative_to(self.workspace).as_posix() or "."
        except ValueError:
            return str(path)


def check_kustomization(workspace: Path, directory: str) -> Path:
    """The overlay's real directory once the whole graph checks; :class:`ConfigError` if not."""
    workspace = workspace.resolve()
    walk = _Walk(workspace, Path(directory))
    root = (workspace / directory).resolve()
    if not root.is_relative_to(workspace) or not root.is_dir():
        walk.fail(root, "is not a directory inside the workspace")
    else:
        _visit(walk, root, depth=0)
    if walk.problems:
        raise ConfigError(walk.problems)
    return root


def _kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _visit(walk: _Walk, directory: Path, depth: int) -> None:
    if directory in walk.visited:
        return  # kustomize refuses a cycle itself; a shared base is checked once
    walk.visited.add(directory)
    if len(walk.visited) > _MAX_KUSTOMIZATIONS or depth > _MAX_DEPTH:
        walk.fail(directory, f"the graph has more than {_MAX_KUSTOMIZATIONS} kustomizations")
        return
    found = _kustomization_file(directory)
    if found is None:
        walk.fail(directory, "holds no kustomization.yaml")
        return
    where = _inside(walk, directory, found.name, found)
    if where is None:
        return
    try:
        data = _load_yaml(read_text_file(where, walk.show(found)))
    except ValueError as e:
        walk.fail(found, str(e))
        return
    if not isinstance(data, Mapping):
        walk.fail(found, "is not a kustomization (not a mapping)")
        return
    _check_fields(walk, found, directory, data, depth)


def _check_fields(
    walk: _Walk, found: Path, directory: Path, data: Mapping[str, Any], depth: int
) -> None:
    for name in _HELM_FIELDS:
        if data.get(name):
            walk.fail(found, f"'{name}' runs helm inside kustomize, which deployer does not do")
    for name in _OPERANDS:
        for entry in _strings(data.get(name)):
            target = _entry(walk, found, directory, f"{name} entry", entry)
            if target is not None and target.is_dir():
                _visit(walk, target, depth + 1)
    for name in _FILES:
        for entry in _strings(data.get(name)):
            _entry(walk, found, directory, f"{name} entry", entry)
    for entry in _patch_paths(data):
        _entry(walk, found, directory, "patch path", entry)
    for name in _GENERATORS:
        for generator in _mappings(data.get(name)):
            for path in _generator_paths(generator):
                _entry(walk, found, directory, f"{name} file", path)
    openapi = data.get("openapi")
    if isinstance(openapi, Mapping) and isinstance(openapi.get("path"), str):
        _entry(walk, found, directory, "openapi path", openapi["path"])
    for replacement in _mappings(data.get("replacements")):
        if isinstance(replacement.get("path"), str):
            _entry(walk, found, directory, "replacements path", replacement["path"])
    for name in _PLUGINS:
        for entry in _strings(data.get(name)):
            _plugin(walk, found, directory, name, entry, depth)


def _plugin(
    walk: _Walk, found: Path, directory: Path, field_name: str, entry: str, depth: int
) -> None:
    """A generators/transformers/validators entry: inline YAML, a file or a kustomization."""
    if "\n" in entry:
        config: Any = None
        try:
            config = _load_yaml(entry)
        except ValueError as e:
            walk.fail(found, f"an inline {field_name} entry {e}")
        _plugin_config(walk, found, directory, field_name, config)
        return
    target = _entry(walk, found, directory, f"{field_name} entry", entry)
    if target is None:
        return
    if target.is_dir():
        _visit(walk, target, depth + 1)
        return
    try:
        config = _load_yaml(read_text_file(target, walk.show(target)), documents=True)
    except ValueError as e:
        walk.fail(target, str(e))
        return
    for item in config or []:
        _plugin_config(walk, target, directory, field_name, item)


def _plugin_config(walk: _Walk, where: Path, directory: Path, field_name: str, config: Any) -> None:
    if not isinstance(config, Mapping):
        return
    metadata = config.get("metadata") if isinstance(config.get("metadata"), Mapping) else {}
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    kind = str(config.get("kind", ""))[:60]
    if isinstance(annotations, Mapping) and any(a in annotations for a in _FUNCTION_ANNOTATIONS):
        walk.fail(
            where,
            f"{field_name} has a KRM function ({kind}, an exec or container program); "
            "deployer never runs programs from the repository: render it in an earlier step "
            "you trust, or use kustomize's built-in transformers",
        )
        return
    if kind == "HelmChartInflationGenerator":
        walk.fail(where, f"{field_name} runs helm inside kustomize, which deployer does not do")
        return
    for entry in _nested_paths(config):
        _entry(walk, where, directory, f"{field_name} ({kind}) path", entry)


def _entry(walk: _Walk, found: Path, directory: Path, what: str, entry: str) -> Path | None:
    """The real path of one entry, or None after recording what is wrong with it."""
    shown = entry[:120]
    local = "://" not in entry and not entry.lower().startswith("git::")
    if not local or (_git_like(entry) and not _exists(directory / entry)):
        walk.fail(
            found,
            f"{what} '{shown}' is remote; deployer renders offline and never fetches a "
            "base, file or repository: vendor it into the repository",
        )
        return None
    if "\0" in entry or not entry.strip():
        walk.fail(found, f"{what} '{shown}' is not a path")
        return None
    return _inside(walk, found, f"{what} '{shown}'", directory / entry)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _inside(walk: _Walk, found: Path, what: str, path: Path) -> Path | None:
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        walk.fail(
            found,
            f"{what} does not exist in the workspace (kustomize would try it as a remote "
            "base; deployer renders offline)",
        )
        return None
    except (OSError, RuntimeError):
        walk.fail(found, f"{what} cannot be resolved (a looping link?)")
        return None
    if not real.is_relative_to(walk.workspace):
        walk.fail(found, f"{what} leads outside the workspace (links followed)")
        return None
    if real.is_dir():
        for inner in _links_out(walk.workspace, real):
            walk.fail(found, f"{what}: its entry {walk.show(inner)} links outside the workspace")
    return real


def _links_out(workspace: Path, directory: Path) -> Iterator[Path]:
    """Links directly in ``directory`` that lead outside the workspace (generators may
    read a directory's files)."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_symlink():
            try:
                target = entry.resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # dangling: kustomize cannot read it either
            if not target.is_relative_to(workspace):
                yield entry


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _patch_paths(data: Mapping[str, Any]) -> Iterator[str]:
    for patch in _mappings(data.get("patches")) + _mappings(data.get("patchesJson6902")):
        if isinstance(patch.get("path"), str):
            yield patch["path"]
    for entry in _strings(data.get("patchesStrategicMerge")):
        if "\n" not in entry:  # one line: a file (an inline patch spans lines)
            yield entry


def _generator_paths(generator: Mapping[str, Any]) -> Iterator[str]:
    for entry in _strings(generator.get("files")):
        yield entry.partition("=")[2] if "=" in entry else entry
    yield from _strings(generator.get("envs"))
    yield from _strings(generator.get("env"))


def _nested_paths(node: Any) -> Iterator[str]:
    """``path``/``paths``/``files``/``envs``/``env`` strings anywhere in a plugin config."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("path", "paths", "envs", "env") and isinstance(value, str | list):
                yield from _strings(value)
            elif key == "files":
                for entry in _strings(value):
                    yield entry.partition("=")[2] if "=" in entry else entry
            else:
                yield from _nested_paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nested_paths(item)


def _load_yaml(text: str, *, documents: bool = False) -> Any:
    """YAML from the tree, bounded like a manifest file; ValueError says what is wrong."""
    import yaml

    try:
        check_events(
            text,
            max_depth=_MAX_DEPTH,
            max_events=_MAX_EVENTS,
            aliases="deployer does not accept in a kustomization",
            verdict="too much for a kustomization",
        )
        return construct(text, documents=documents)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ValueError(
            "is not valid YAML" + (f" at line {mark.line + 1}" if mark is not None else "")
        ) from None


# -- rendering -------------------------------------------------------------------------


def build(
    binary: str | None,
    root: Path,
    *,
    seconds: float,
    cancel: threading.Event | None = None,
) -> str:
    """``kustomize build`` of a checked overlay; its YAML output, or :class:`ConfigError`."""
    if not binary:
        raise ConfigError(
            [
                InputProblem(
                    "kustomize",
                    "needs the kustomize binary, which is not in this environment (the action "
                    "image has it; elsewhere set DEPLOYER_KUSTOMIZE to its absolute path)",
                    _EXAMPLE,
                )
            ]
        )
    with private_dirs("kustomize") as dirs:
        env = {**dirs.base_env(), **NO_NETWORK, "KUSTOMIZE_PLUGIN_HOME": str(dirs.nothing)}
        argv = [binary, "build", str(root), "--load-restrictor", "LoadRestrictionsRootOnly"]
        try:
            out = run_tool(
                argv,
                env=env,
                cwd=dirs.tmp,
                seconds=seconds,
                max_output=MAX_TOTAL_BYTES,
                cancel=cancel,
            )
        except ToolFailed as e:
            detail = f": {_last_lines(e.stderr)}" if e.stderr else ""
            raise ConfigError(
                [InputProblem("kustomize", f"kustomize build {e.message}{detail}", _EXAMPLE)]
            ) from None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            [InputProblem("kustomize", "kustomize build wrote text that is not UTF-8", _EXAMPLE)]
        ) from None


def _last_lines(text: str, count: int = 6, limit: int = 1500) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:])[-limit:]
