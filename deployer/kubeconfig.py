"""Reading the ``kubeconfig`` input safely, and the credentials in it that must be masked.

A kubeconfig arrives as YAML or as base64 of YAML. It is parsed with PyYAML's safe
loader after refusing anchors/aliases (a "billion laughs" document) and anything
over :data:`MAX_BYTES`, so a hostile value costs bounded time and memory.

No command a kubeconfig names is ever run: :meth:`Kubeconfig.without_commands` is
what the kubernetes client gets, and the current user's ``exec`` entry must be a
plugin :mod:`deployer.cloud.plugins` serves in-process. The input form may not
name files of the action's container (``tokenFile``, ``client-key``, ...); a
KUBECONFIG file may, but only regular files inside the workspace or the runner's
temporary directory, read here (:func:`inline_files`), never by the client: a
pull request's ``tokenFile: /proc/self/environ`` would otherwise be sent to the
server as the bearer token; nor one of the job's own credential files there
(``.git/config``: the caller's ``refused``). ``insecure-skip-tls-verify`` must be a
YAML boolean, as kubectl requires (the client would take the string ``"false"`` as
"skip"). :func:`check_destination`: no credential over plain http, and a token the
action makes only to its cloud's API servers, TLS verified, through no proxy the
kubeconfig names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deployer.cloud.http import is_loopback
from deployer.manifests import read_inside
from deployer.safeyaml import check_events, construct

__all__ = [
    "FILE_KEYS",
    "MAX_BYTES",
    "RUNNER_TEMP_MOUNT",
    "Kubeconfig",
    "check_destination",
    "check_input_kubeconfig",
    "check_tls_flags",
    "credentials_in",
    "inline_files",
    "parse_kubeconfig",
    "read_kubeconfig_files",
]

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32  # a kubeconfig nests about 5 levels deep
MAX_EVENTS = 20_000  # a kubeconfig of 50 clusters is about 1,000 YAML events
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=\s]+$")
# Keys under users[].user whose values are credentials (auth-provider and exec included).
_SECRET_KEYS = {
    "token",
    "password",
    "client-key-data",
    "id-token",
    "refresh-token",
    "access-token",
    "client-secret",
    "secret",
}
# Keys of a user that make the client send a credential (or us make one: exec).
_SENDS_CREDENTIAL = (
    "token",
    "tokenFile",
    "password",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "exec",
    "auth-provider",
)
# Keys whose value is a path the client would read: refused in the input form.
FILE_KEYS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}
# Where a file key's content goes once read (the client prefers it over the file).
_DATA_KEYS = {
    "certificate-authority": "certificate-authority-data",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
    "tokenFile": "token",
}
# Where the runner mounts its temporary directory into a container action (RUNNER_TEMP
# names the host's path, which does not exist in the container).
RUNNER_TEMP_MOUNT = Path("/github/runner_temp")


class Kubeconfig:
    """A parsed kubeconfig and the raw text it came from."""

    def __init__(self, data: dict[str, Any], raw: str, was_base64: bool) -> None:
        self.data = data
        self.raw = raw
        self.was_base64 = was_base64

    @property
    def current_context(self) -> str | None:
        name = self.data.get("current-context")
        return name if isinstance(name, str) and name else None

    def _named(self, section: str, name: object) -> dict[str, Any]:
        for entry in self.data.get(section) or []:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                body = entry.get(section[:-1])
                return dict(body) if isinstance(body, Mapping) else {}
        return {}

    def _context(self) -> dict[str, Any]:
        return self._named("contexts", self.current_context)

    def current_user(self) -> tuple[str, dict[str, Any]]:
        """The current context's user: (name, the ``user`` mapping)."""
        name = self._context().get("user")
        return str(name or ""), self._named("users", name)

    def current_cluster(self) -> tuple[str, dict[str, Any]]:
        """The current context's cluster: (name, the ``cluster`` mapping)."""
        name = self._context().get("cluster")
        return str(name or ""), self._named("clusters", name)

    def credentials(self) -> list[str]:
        """Every credential in it: user secrets, exec env and --client-secret, server userinfo."""
        found: list[str] = []
        for user in self.data.get("users") or []:
            if isinstance(user, Mapping):
                found.extend(_walk_secrets(user.get("user") or {}))
                found.extend(_exec_arg_secrets(user.get("user") or {}))
        for cluster in self.data.get("clusters") or []:
            body = cluster.get("cluster") if isinstance(cluster, Mapping) else None
            if isinstance(body, Mapping):
                found.extend(server_userinfo(str(body.get("server") or "")))
        return [s for s in found if s.strip()]

    def without_commands(self) -> dict[str, Any]:
        """A copy without any exec or auth-provider entry: what the client library gets."""
        data = copy.deepcopy(self.data)
        for entry in data.get("users") or []:
            user = entry.get("user") if isinstance(entry, Mapping) else None
            if isinstance(user, dict):
                user.pop("exec", None)
                user.pop("auth-provider", None)
        return data

    def current_entry(self, section: str) -> tuple[str, dict[str, Any] | None]:
        """The current context's ``user`` or ``cluster`` (name, the mapping itself, mutable)."""
        name = self._context().get(section)
        for entry in self.data.get(section + "s") or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                body = entry.get(section)
                return str(name or ""), body if isinstance(body, dict) else None
        return str(name or ""), None

    def context_namespace(self) -> str | None:
        """The namespace of the current context, if it sets one."""
        for entry in self.data.get("contexts") or []:
            if isinstance(entry, Mapping) and entry.get("name") == self.current_context:
                context = entry.get("context") or {}
                namespace = context.get("namespace") if isinstance(context, Mapping) else None
                return namespace if isinstance(namespace, str) and namespace else None
        return None


def _decode(text: str) -> tuple[str, bool]:
    stripped = text.strip()
    if ":" not in stripped and _BASE64_RE.match(stripped):
        try:
            return base64.b64decode("".join(stripped.split()), validate=True).decode(), True
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError("looks like base64 but does not decode to text") from None
    return text, False


def parse_kubeconfig(text: str) -> Kubeconfig:
    """Parse YAML or base64-of-YAML; raises ValueError saying what is wrong (never the content)."""
    decoded, was_base64 = _decode(text)
    data = _check_structure(_parse_document(decoded, len(text.encode())))
    return Kubeconfig(data, text, was_base64)


def _parse_document(decoded: str, size: int) -> Any:
    import yaml  # here: runs without a kubeconfig do not pay for the import

    if size > MAX_BYTES:
        raise ValueError(f"is larger than {MAX_BYTES // 1024} KiB")
    # Aliases, depth and size are refused from the event stream, before a node is
    # built: the composer recurses, so depth alone could crash it.
    try:
        check_events(
            decoded,
            max_depth=MAX_DEPTH,
            max_events=MAX_EVENTS,
            aliases="a kubeconfig never needs",
            verdict="not a kubeconfig",
        )
        data = construct(decoded)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"is not valid YAML{where}") from None
    return data


def _check_structure(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or "clusters" not in data:
        raise ValueError("is not a kubeconfig (no 'clusters' section)")
    for section in ("clusters", "contexts", "users"):
        if not isinstance(data.get(section) or [], list):
            raise ValueError(f"has a '{section}' section that is not a list")
    if not data.get("current-context"):
        raise ValueError("has no current-context; set one with kubectl config use-context")
    names = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, Mapping)]
    if data["current-context"] not in names:
        # Not quoted: nothing of a secret input is echoed (the runner masks only credentials).
        raise ValueError(
            "has a current-context that none of its contexts is named; "
            "set one with kubectl config use-context"
        )
    return data


def _merge(documents: list[Any]) -> Any:
    """Several KUBECONFIG files as kubectl merges them: the first of each name wins."""
    merged: dict[str, Any] = {}
    for data in documents:
        if not isinstance(data, dict):
            continue
        if not merged.get("current-context") and data.get("current-context"):
            merged["current-context"] = data["current-context"]
        for section in ("clusters", "contexts", "users"):
            entries = data.get(section) or []
            if not isinstance(entries, list):
                raise ValueError(f"has a '{section}' section that is not a list")
            have = merged.setdefault(section, [])
            names = {e.get("name") for e in have if isinstance(e, Mapping)}
            have.extend(e for e in entries if isinstance(e, Mapping) and e.get("name") not in names)
    return merged


def read_kubeconfig_files(value: str) -> tuple[Kubeconfig, Path]:
    """KUBECONFIG (one path, or several joined by ':'): the merged kubeconfig and its base dir.

    Raises ValueError saying what is wrong (never the content).
    """
    paths = [Path(p) for p in value.split(":") if p]
    documents, texts = [], []
    for path in paths:
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
        except FileNotFoundError:
            if len(paths) == 1:
                raise ValueError(f"{path} does not exist") from None
            continue
        except OSError as e:
            raise ValueError(f"{path} cannot be read: {e.strerror}") from None
        text = raw.decode("utf-8", "replace")
        texts.append(text)
        documents.append(_parse_document(text, len(raw)))
    if not documents:
        raise ValueError("names no file that exists")
    data = _check_structure(documents[0] if len(documents) == 1 else _merge(documents))
    return Kubeconfig(data, "\n".join(texts), False), paths[0].parent


def _check_no_files(config: Kubeconfig) -> None:
    for section, keys in FILE_KEYS.items():
        for entry in config.data.get(section + "s") or []:
            body = entry.get(section) if isinstance(entry, Mapping) else None
            if not isinstance(body, Mapping):
                continue
            for key in keys:
                if body.get(key):
                    data_key = "token" if key == "tokenFile" else f"{key}-data"
                    raise ValueError(
                        f"{section} '{entry.get('name')}' names a file ({key}), which the input "
                        f"form may not read from the action's container; put the content in "
                        f"'{data_key}' instead, or use a KUBECONFIG file in the workspace"
                    )


def check_tls_flags(config: Kubeconfig) -> None:
    """ValueError for an ``insecure-skip-tls-verify`` that is not a YAML boolean.

    kubectl refuses ``"false"``, ``"no"`` or ``1`` there; the Python client would
    evaluate ``not value`` and turn verification off for any non-empty string.
    """
    for entry in config.data.get("clusters") or []:
        body = entry.get("cluster") if isinstance(entry, Mapping) else None
        if not isinstance(body, Mapping) or "insecure-skip-tls-verify" not in body:
            continue
        if not isinstance(body["insecure-skip-tls-verify"], bool):
            raise ValueError(
                f"cluster '{str(entry.get('name'))[:60]}' has an insecure-skip-tls-verify that "
                "is not a YAML boolean (kubectl refuses it too); write true or false, unquoted"
            )


def inline_files(
    config: Kubeconfig,
    base: Path,
    roots: Sequence[Path],
    refused: Callable[[Path], str | None] = lambda _path: None,
) -> list[str]:
    """Read the current context's file keys into their data keys; return the secrets read.

    ``tokenFile``, ``client-key``, ``client-certificate`` and ``certificate-authority``
    (relative to ``base``, as the client resolves them) must be regular files of at
    most :data:`MAX_BYTES` that lie inside one of ``roots``, links followed, and that
    ``refused`` has no reason against (the job's own credential files lie in the
    workspace too). A file key whose data key is set too is dropped unread (the
    client prefers the data). Raises ValueError saying what is wrong, never the content.
    """
    secrets: list[str] = []
    for section in ("user", "cluster"):
        name, body = config.current_entry(section)
        for key in FILE_KEYS[section] if body is not None else ():
            assert body is not None
            value = body.pop(key, None)
            if not value or body.get(_DATA_KEYS[key]):
                continue
            path = Path(str(value)).expanduser()
            path = path if path.is_absolute() else base / path
            why = refused(path)
            if why:
                raise ValueError(
                    f"{section} '{name[:60]}' {key} names '{str(value)[:200]}', a credential "
                    f"file of the job ({why}): a kubeconfig may not send it to the API "
                    f"server. Point {key} at a file of its own, or put the content in "
                    f"'{_DATA_KEYS[key]}'"
                )
            try:
                data = read_inside(
                    path,
                    roots,
                    str(value)[:200],
                    MAX_BYTES,
                    where="the workspace and the runner's temporary directory",
                )
            except OSError as e:  # FileNotFoundError, a permission
                raise ValueError(f"{section} '{name[:60]}' {key}: {e.strerror}") from None
            except ValueError as e:
                raise ValueError(f"{section} '{name[:60]}' {key}: {e}") from None
            if key == "tokenFile":
                body["token"] = data.decode("utf-8", "replace").strip()
                secrets.append(body["token"])
            else:
                body[_DATA_KEYS[key]] = base64.b64encode(data).decode()
                if key == "client-key":
                    secrets.append(data.decode("utf-8", "replace"))
    return [s for s in secrets if s.strip()]


def check_destination(config: Kubeconfig) -> None:
    """ValueError when the current context would send a credential where it must not go.

    No credential over plain http (but to a loopback address, where the tests' API
    servers listen); a token the action makes goes only where
    :func:`deployer.cloud.plugins.check_server` allows.
    """
    from deployer.cloud.plugins import check_server, plugin_for_user

    cluster_name, cluster = config.current_cluster()
    user_name, user = config.current_user()
    server = str(cluster.get("server") or "")
    try:
        parts = urlsplit(server)
        host = parts.hostname or ""
    except ValueError:
        raise ValueError(f"cluster '{cluster_name[:60]}' has a server that is not a URL") from None
    sent = [key for key in _SENDS_CREDENTIAL if user.get(key)]
    sent += ["the server URL's password"] if server_userinfo(server) else []
    if sent and parts.scheme == "http" and not is_loopback(host):
        raise ValueError(
            f"cluster '{cluster_name[:60]}' is reached over plain http:// and user "
            f"'{user_name[:60]}' would send a credential ({sent[0]}) unencrypted; use the API "
            "server's https:// address (plain http only to a loopback address)"
        )
    try:
        plugin = plugin_for_user(user)
        if plugin is not None:
            check_server(plugin, parts.scheme, host)
    except ValueError as e:
        raise ValueError(f"user '{user_name[:60]}' {e}") from None
    if plugin is not None and not is_loopback(host):
        _check_token_path(cluster_name, cluster)


def _check_token_path(cluster_name: str, cluster: Mapping[str, Any]) -> None:
    """A token the action makes takes no path the kubeconfig chooses: no proxy of its
    own (the proxy, trusting the kubeconfig's CA, would read it), TLS verified."""
    proxy = str(cluster.get("proxy-url") or "")
    try:
        proxy_host = urlsplit(proxy).hostname or ""
    except ValueError:
        proxy_host = ""
    where = f"cluster '{cluster_name[:60]}'"
    if proxy and not is_loopback(proxy_host):
        raise ValueError(
            f"{where} sets proxy-url, and a token the action makes would pass through "
            "that proxy, which the kubeconfig chooses; remove proxy-url (a proxy on the "
            "runner's loopback address is accepted)"
        )
    if cluster.get("insecure-skip-tls-verify") is True:
        raise ValueError(
            f"{where} turns TLS verification off (insecure-skip-tls-verify: true), and a "
            "token the action makes would go to whoever answers; put the cluster's CA in "
            "certificate-authority-data instead"
        )


def check_input_kubeconfig(text: str) -> Kubeconfig:
    """The ``kubeconfig`` input, parsed and checked: no file references, no unknown plugin,
    no TLS flag that is not a boolean, no credential where it must not go."""
    from deployer.cloud.plugins import plugin_for_user

    config = parse_kubeconfig(text)
    _check_no_files(config)
    check_tls_flags(config)
    name, user = config.current_user()
    try:
        plugin_for_user(user)
    except ValueError as e:
        raise ValueError(f"user '{name[:60]}' {e}") from None
    check_destination(config)
    return config


def _walk_secrets(node: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk_secrets(v, str(k))
    elif isinstance(node, list):
        for item in node:
            # exec env entries are {name, value}: every value may be a credential.
            if isinstance(item, Mapping) and "value" in item and "name" in item:
                yield str(item["value"])
            else:
                yield from _walk_secrets(item, key)
    elif key in _SECRET_KEYS and node is not None:
        yield str(node)
        if key.endswith("-data"):
            with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
                yield base64.b64decode(str(node)).decode()


def credentials_in(text: str) -> list[str]:
    """Every credential in a kubeconfig input, for masking before anything prints.

    Best effort on purpose: called before validation, it never raises. A base64
    input is a credential as a whole.
    """
    found: list[str] = []
    try:
        _decoded, was_base64 = _decode(text)
    except ValueError:
        return [text.strip()] if text.strip() else []
    if was_base64:
        found.append(text.strip())
    try:
        config = parse_kubeconfig(text)
    except ValueError:
        return found
    return [s for s in [*found, *config.credentials()] if s.strip()]


def server_userinfo(server: str) -> list[str]:
    """``user:password`` and the password of a server URL that carries them."""
    try:
        parts = urlsplit(server)
        password = parts.password
    except ValueError:
        return []
    if not password:
        return []
    return [f"{parts.username or ''}:{password}", password]


def _exec_arg_secrets(user: Any) -> list[str]:
    entry = user.get("exec") if isinstance(user, Mapping) else None
    args = entry.get("args") if isinstance(entry, Mapping) else None
    if not isinstance(args, list):
        return []
    found = []
    for i, arg in enumerate(str(a) for a in args):
        if arg == "--client-secret" and i + 1 < len(args):
            found.append(str(args[i + 1]))
        elif arg.startswith("--client-secret="):
            found.append(arg.partition("=")[2])
    return found
