"""The ``manifests`` input: find the files, parse them, put the deployed image in.

Validation happens before anything is sent to the cluster: every pattern must
match a file inside the workspace, every file must be YAML whose documents each
have ``apiVersion``, ``kind`` and ``metadata.name``. Then every image reference
to the configured repository (any tag or digest) is replaced by the image being
deployed, and the caller is told how many were replaced so it never silently
does nothing.
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import glob
import itertools
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError, InputProblem
from deployer.images import ImageSet, repository_of, same_repository
from deployer.safeyaml import check_events, construct_located

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "Manifest",
    "load_manifests",
    "read_inside",
    "read_regular_file",
    "read_text_file",
    "refuse_cluster_scoped",
    "refuse_other_namespaces",
    "rendered_manifests",
    "repository_of",
    "same_repository",
]

_EXAMPLE = "k8s/*.yaml"
_EXAMPLES = {"kustomize": "k8s/overlays/production", "helm-chart": "charts/web"}
_SUFFIXES = (".yaml", ".yml", ".json")
_MIB = 1024 * 1024
MAX_FILE_BYTES = 4 * _MIB  # an object is at most ~1.5 MiB in etcd; a file may hold several
MAX_TOTAL_BYTES = 16 * _MIB
MAX_DEPTH = 100  # deep CRD schemas nest ~40 levels
MAX_EVENTS = 1_000_000  # a realistic 4 MiB file has ~600,000 (libyaml: ~3 s)

# Kinds Kubernetes itself serves cluster-scoped, as (API group, kind); a custom
# resource's scope comes from the cluster's discovery (see refuse_cluster_scoped).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "IPAddress"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("resource.k8s.io", "DeviceClass"),
        ("resource.k8s.io", "ResourceSlice"),
        ("internal.apiserver.k8s.io", "StorageVersion"),
        ("storagemigration.k8s.io", "StorageVersionMigration"),
        ("authentication.k8s.io", "TokenReview"),
        ("authentication.k8s.io", "SelfSubjectReview"),
        ("authorization.k8s.io", "SubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectRulesReview"),
    }
)


@dataclass
class Manifest:
    """One document of a manifest file, with the image already substituted."""

    source: str  # "k8s/app.yaml (document 2)"
    doc: dict[str, Any]
    substituted: int
    cluster_scoped: bool | None = None  # None: not known before the cluster's discovery
    origin: str = "manifests"  # the input it came from: manifests, kustomize or helm-chart
    images: dict[str, int] | None = None  # image → times substituted into this document

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


def _problem(text: str) -> InputProblem:
    return InputProblem("manifests", text, _EXAMPLE)


def _resolved(workspace: Path, shown: str, problems: list[InputProblem]) -> Path | None:
    """The real path of ``shown`` if it is inside the workspace once every link is followed."""
    try:
        path = (workspace / shown).resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link, a loop, a name too long
        problems.append(_problem(f"'{shown}' cannot be resolved (a dangling or looping link?)"))
        return None
    if not path.is_relative_to(workspace):
        problems.append(
            _problem(f"'{shown}' leads outside the workspace; only files inside it are read")
        )
        return None
    return path


def _matches(workspace: Path, pattern: str) -> list[str]:
    """The workspace paths ``pattern`` matches, as :func:`glob.glob` finds them, sorted.

    ``**`` is walked without following links to directories: Python 3.11's glob follows
    them, and two links that loop make its walk exponential (the job would hang).
    Without ``**`` a glob is as deep as the pattern, so it stays :func:`glob.glob`.
    """
    parts = tuple(Path(pattern).parts)
    if "**" not in parts:
        return sorted(glob.glob(pattern, root_dir=workspace))
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
    start = workspace.joinpath(*fixed)
    try:
        outside = bool(fixed) and not start.resolve().is_relative_to(workspace)
    except (OSError, RuntimeError):  # a link loop
        outside = True
    if outside:
        return [Path(*fixed).as_posix()]  # named, and refused, by _resolved
    found = []
    # From the pattern's literal start (which may be a link); below it, no link is entered.
    for top, dirs, files in os.walk(start):
        base = Path(top).relative_to(workspace).parts
        for name in dirs + files:
            if _glob_match((*base, name), parts):
                found.append(Path(*base, name).as_posix())
    return sorted(found)


def _glob_match(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether path components match glob components (``**``: any number of directories).

    As glob does, ``*`` and ``**`` do not match names starting with ``.``.
    """

    @functools.cache
    def match(i: int, j: int) -> bool:
        if j == len(pattern):
            return i == len(path)
        if pattern[j] == "**":
            if match(i, j + 1):
                return True
            return i < len(path) and not path[i].startswith(".") and match(i + 1, j)
        if i == len(path):
            return False
        name, want = path[i], pattern[j]
        if name.startswith(".") and not want.startswith("."):
            return False
        return fnmatch.fnmatchcase(name, want) and match(i + 1, j + 1)

    return match(0, 0)


def _files(workspace: Path, pattern: str, problems: list[InputProblem]) -> list[tuple[str, Path]]:
    """``(name as shown, real path)`` of every file ``pattern`` names, links resolved.

    A matched directory stands for its ``.yaml``/``.yml``/``.json`` entries; each of
    them, like each match, must resolve to a path inside the workspace.
    """
    if "\0" in pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        problems.append(_problem(f"'{pattern[:60]}' must be a path inside the workspace"))
        return []
    found: list[tuple[str, Path]] = []
    known = len(problems)
    for match in _matches(workspace, pattern):
        path = _resolved(workspace, match, problems)
        if path is None:
            continue
        if not path.is_dir():
            found.append((Path(match).as_posix(), path))
            continue
        for entry in sorted(path.iterdir()):
            shown = (Path(match) / entry.name).as_posix()
            if entry.suffix not in _SUFFIXES:
                continue
            real = _resolved(workspace, shown, problems)
            if real is not None and not real.is_dir():
                found.append((shown, real))
    if not found and len(problems) == known:
        problems.append(
            _problem(f"'{pattern[:60]}' matches no file (paths are relative to the workspace)")
        )
    return found


def read_regular_file(path: Path, shown: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``, a regular file (more than ``limit``: too big).

    Raises ValueError saying what is wrong, never quoting the file. It is opened
    without following a last link (callers resolve links first and check where they
    lead) and without blocking (a FIFO), then checked on the open descriptor, so
    what is read is what was checked.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ValueError(f"'{shown}' cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"'{shown}' is not a regular file")
        return fh.read(limit + 1)


def read_inside(
    path: Path, roots: Sequence[Path], shown: str, limit: int, where: str = "the workspace"
) -> bytes:
    """The bytes of ``path``: a regular file of at most ``limit`` bytes that, every link
    followed, lies inside one of ``roots`` (``where`` names them in messages).

    Raises FileNotFoundError when there is no such file, ValueError saying what else
    is wrong (never quoting the file).
    """
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        if path.is_symlink():
            raise ValueError(f"'{shown}' is a dangling link") from None
        raise
    except (OSError, RuntimeError, ValueError):  # a loop, a name too long, a NUL
        raise ValueError(f"'{shown}' cannot be resolved (a looping link?)") from None
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise ValueError(f"'{shown}' leads outside {where}; only files inside it are read")
    data = read_regular_file(real, shown, limit)
    if len(data) > limit:
        size = f"{limit // _MIB} MiB" if limit >= _MIB else f"{limit // 1024} KiB"
        raise ValueError(f"'{shown}' is larger than {size}")
    return data


def _read(path: Path, shown: str, budget: int) -> str:
    """The text of a regular file of at most ``min(MAX_FILE_BYTES, budget)`` bytes.

    Raises ValueError saying what is wrong (see :func:`read_regular_file`).
    """
    limit = min(MAX_FILE_BYTES, budget)
    data = read_regular_file(path, shown, limit)
    if len(data) > limit:
        if limit < MAX_FILE_BYTES:
            raise ValueError(
                f"'{shown}' goes over {MAX_TOTAL_BYTES // _MIB} MiB of manifests in all"
            )
        raise ValueError(f"'{shown}' is larger than {MAX_FILE_BYTES // _MIB} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"'{shown}' is not UTF-8 text") from None


def _parse(text: str, shown: str) -> list[Any]:
    """Every YAML document of ``text``, guarded like the kubeconfig, as JSON values.

    Raises ValueError saying what is wrong, never quoting the file (a Secret's
    ``stringData`` may be in it).
    """
    return [doc for _line, doc in _parse_located(text, shown, MAX_EVENTS)]


def _parse_located(text: str, shown: str, max_events: int) -> list[tuple[int, Any]]:
    """:func:`_parse`, each document with the line its content starts on."""
    import yaml

    try:
        check_events(
            text,
            max_depth=MAX_DEPTH,
            max_events=max_events,
            aliases="deployer does not accept in manifests; write the repeated part out",
            verdict="too much for a manifest file",
        )
        return [(line, _json_value(doc)) for line, doc in construct_located(text)]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"'{shown}' is not valid YAML{where}") from None
    except _NotJson as e:
        raise ValueError(
            f"'{shown}' has a {e} value, which a Kubernetes object cannot hold; quote it"
        ) from None
    except ValueError as e:  # a limit, or a value the constructor failed on: never quoted
        raise ValueError(f"'{shown}' {e}") from None


class _NotJson(Exception):
    """A YAML value with no JSON form (``!!set``, ``!!binary``)."""


def _json_value(node: Any) -> Any:
    """``node`` with dates as ISO strings, as kubectl's YAML-to-JSON step sends them."""
    if isinstance(node, dict):
        return {_json_value(k): _json_value(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_json_value(item) for item in node]
    if isinstance(node, datetime.date):  # datetime too
        return node.isoformat()
    if node is None or isinstance(node, str | int | float):  # bool is an int
        return node
    tags: dict[type, str] = {set: "!!set", bytes: "!!binary"}
    raise _NotJson(tags.get(type(node), type(node).__name__))


def _documents(data: Any) -> Iterator[Any]:
    if (
        isinstance(data, Mapping)
        and data.get("kind") == "List"
        and isinstance(data.get("items"), list)
    ):
        yield from data["items"]
    else:
        yield data


def _to_manifests(
    loaded: list[Any],
    shown: str,
    images: ImageSet,
    origin: str,
    problems: list[InputProblem],
    *,
    numbered: bool = True,
) -> Iterator[Manifest]:
    """The Kubernetes objects among the YAML documents of one file, images substituted.

    Each is ``shown (document N)``; with ``numbered`` off, a lone object is ``shown``.
    """
    docs = [doc for data in loaded if data is not None for doc in _documents(data)]
    for number, doc in enumerate(docs, start=1):
        source = f"{shown} (document {number})" if numbered or len(docs) > 1 else shown
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
                    origin,
                    f"{source} needs apiVersion, kind and metadata.name",
                    _EXAMPLES.get(origin, _EXAMPLE),
                )
            )
            continue
        counts = images.substitute(doc)
        scoped = True if _builtin_cluster_scoped(doc) else None
        yield Manifest(source, doc, sum(counts.values()), scoped, origin, counts)


def load_manifests(
    workspace: Path,
    patterns: tuple[str, ...],
    repository: str,
    image: str,
    *,
    images: ImageSet | None = None,
) -> list[Manifest]:
    """Read, validate and substitute; raises :class:`ConfigError` on input 'manifests'.

    ``images`` (``repository`` → ``image`` and the ``images`` input) replaces the
    single pair when given.
    """
    workspace = workspace.resolve()
    images = images or ImageSet(repository, image)
    problems: list[InputProblem] = []
    manifests: list[Manifest] = []
    seen: set[Path] = set()
    budget = MAX_TOTAL_BYTES
    for pattern in patterns:
        for shown, path in _files(workspace, pattern, problems):
            if path in seen:
                continue
            seen.add(path)
            try:
                text = _read(path, shown, budget)
                budget -= len(text.encode())
                loaded = _parse(text, shown)
            except ValueError as e:
                problems.append(_problem(str(e)))
                continue
            manifests.extend(_to_manifests(loaded, shown, images, "manifests", problems))
    if problems:
        raise ConfigError(problems)
    return manifests


def rendered_manifests(
    text: str,
    images: ImageSet,
    *,
    origin: str,
    example: str,
    source: Callable[[int], str],
) -> list[Manifest]:
    """Objects from a renderer's output (all of it, as one YAML stream: one parse is half
    the time of one per document), with the limits of all manifest files together;
    ``source(line)`` names the document starting on that line (0-based).

    Raises :class:`ConfigError` on input ``origin`` (kustomize, helm-chart).
    """
    problems: list[InputProblem] = []
    manifests: list[Manifest] = []
    shown = f"the {origin} output"
    try:
        if len(text.encode()) > MAX_TOTAL_BYTES:
            raise ValueError(f"{shown} is larger than {MAX_TOTAL_BYTES // _MIB} MiB")
        located = _parse_located(text, shown, MAX_EVENTS * (MAX_TOTAL_BYTES // MAX_FILE_BYTES))
    except ValueError as e:
        raise ConfigError([InputProblem(origin, str(e), example)]) from None
    for line, data in located:
        manifests.extend(
            _to_manifests([data], source(line), images, origin, problems, numbered=False)
        )
    if problems:
        raise ConfigError(problems)
    return manifests


def read_text_file(path: Path, shown: str) -> str:
    """A regular UTF-8 file of at most :data:`MAX_FILE_BYTES`, read as :func:`load_manifests`
    reads one (the last link not followed: resolve first); ValueError says what is wrong."""
    return _read(path, shown, MAX_FILE_BYTES)


def _builtin_cluster_scoped(doc: Mapping[str, Any]) -> bool:
    group = str(doc["apiVersion"]).rpartition("/")[0]
    return (group, str(doc["kind"])) in CLUSTER_SCOPED_KINDS


def _defined_scopes(manifests: list[Manifest]) -> dict[tuple[str, str], bool]:
    """``(group, kind) -> cluster-scoped`` for the CRDs among the manifests."""
    found: dict[tuple[str, str], bool] = {}
    for m in manifests:
        if (m.api_version.rpartition("/")[0], m.kind) != (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
        ):
            continue
        spec = m.doc.get("spec")
        names = spec.get("names") if isinstance(spec, dict) else None
        if isinstance(spec, dict) and isinstance(names, dict):
            found[(str(spec.get("group", "")), str(names.get("kind", "")))] = (
                spec.get("scope") == "Cluster"
            )
    return found


def refuse_cluster_scoped(
    manifests: list[Manifest],
    namespaced: Callable[[str, str], bool],
    *,
    allowed: bool,
    namespace: str,
) -> list[Manifest]:
    """The cluster-scoped documents; :class:`ConfigError` for them unless ``allowed``.

    ``namespaced(api_version, kind)`` asks the cluster (discovery) about kinds that
    are not built in. A ClusterRoleBinding is not confined by the ``namespace``
    input: applying one must be asked for with ``allow-cluster-scoped: true``.
    """
    defined = _defined_scopes(manifests)
    for m in manifests:
        if m.cluster_scoped is None:
            key = (m.api_version.rpartition("/")[0], m.kind)
            # A kind whose CRD is among the manifests is not served yet: its CRD says.
            by_crd = defined.get(key)
            m.cluster_scoped = (
                by_crd if by_crd is not None else not namespaced(m.api_version, m.kind)
            )
    scoped = [m for m in manifests if m.cluster_scoped]
    if scoped and not allowed:
        raise ConfigError(
            [
                InputProblem(
                    m.origin,
                    f"{m.source} ({m.kind} {m.name}) is cluster-scoped: it would change the "
                    f"whole cluster, not only namespace {namespace}; remove it, or set "
                    "allow-cluster-scoped: true if this workflow should apply it",
                    _EXAMPLES.get(m.origin, _EXAMPLE),
                )
                for m in scoped
            ]
        )
    return scoped


def refuse_other_namespaces(manifests: list[Manifest], namespace: str, *, from_input: bool) -> None:
    """:class:`ConfigError` for documents whose ``metadata.namespace`` is not ``namespace``.

    ``namespace`` is the one in effect: the ``namespace`` input (``from_input``), else
    the kubeconfig context's, else ``default`` (:func:`deployer.cluster.default_namespace`).
    As ``kubectl apply -n`` refuses it: a manifest never silently goes elsewhere, whether
    the run's namespace was given as an input or not. Cluster-scoped documents have none.
    A namespace the manifests themselves create (a ``Namespace`` document, which needs
    ``allow-cluster-scoped``) is the run's too.
    """
    created = {
        m.name
        for m in manifests
        if m.cluster_scoped and (m.api_version, m.kind) == ("v1", "Namespace")
    }
    given_by = "the namespace input is" if from_input else "this run deploys to namespace"
    where = "" if from_input else " (the kubeconfig context's, else default)"
    problems = [
        InputProblem(
            m.origin,
            f"{m.source} ({m.kind} {m.name}) is in namespace {own}, but {given_by} "
            f"{namespace}{where}; remove its metadata.namespace or make the two agree",
            _EXAMPLES.get(m.origin, _EXAMPLE),
        )
        for m in manifests
        if not m.cluster_scoped
        and (own := m.doc["metadata"].get("namespace"))
        and own != namespace
        and own not in created
    ]
    if problems:
        raise ConfigError(problems)
