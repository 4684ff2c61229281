"""Talking to the Kubernetes API: the client from the Config, and one error boundary.

:func:`connect` builds the :class:`ApiClient` from the ``kubeconfig`` input, else the
``KUBECONFIG`` file, else the in-cluster ServiceAccount. :class:`Kube` is the only
place that sends requests: it speaks plain JSON (dicts, not generated models),
retries 429/5xx and dropped connections with a capped backoff inside the caller's
deadline, and turns every other failure into :class:`ClusterError` or
:class:`AccessDenied` naming the verb and resource. No message here ever contains
a credential: requests carry them in headers, and loader errors are redacted.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import quote, urlsplit, urlunsplit

import urllib3
from kubernetes import config as _kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from deployer.actions import ActionsIO
from deployer.buildcontext import job_credential_file
from deployer.clock import SYSTEM_CLOCK, Clock
from deployer.config import Config
from deployer.errors import AccessDenied, Cancelled, ClusterError, DeployerError, NoCredentials
from deployer.kubeconfig import (
    RUNNER_TEMP_MOUNT,
    Kubeconfig,
    check_destination,
    check_input_kubeconfig,
    check_tls_flags,
    credentials_in,
    inline_files,
    parse_kubeconfig,
    read_kubeconfig_files,
)
from deployer.markdown import code

__all__ = [
    "ANALYSISRUNS",
    "CANARIES",
    "CONTROLLERREVISIONS",
    "DAEMONSETS",
    "DEPLOYMENTS",
    "EVENTS",
    "JOBS",
    "PODS",
    "REPLICASETS",
    "ROLLOUTS",
    "SSAR",
    "STATEFULSETS",
    "Kube",
    "Resource",
    "Response",
    "Watch",
    "WatchEvent",
    "cluster_server",
    "connect",
    "default_namespace",
    "describe",
    "discover",
    "label_selector",
]

kube_config: Any = _kube_config  # the loaders are untyped
_SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_POOL_SIZE = 64  # one connection per concurrent watch; 20 deployments need 40
_MAX_ATTEMPTS = 6
_BACKOFF_START = 0.25
_BACKOFF_CAP = 4.0
_REQUEST_TIMEOUT = 30.0
_RETRIED = frozenset({429, 500, 502, 503, 504})
_MAX_EVENT_BYTES = 32 * 1024 * 1024  # one watch event (an object and its envelope)
_HTTP_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _redacted(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _tls_problem(error: BaseException) -> str | None:
    """What is wrong with the API server's certificate, if that is why a request failed."""
    seen: BaseException | None = error
    for _ in range(8):  # urllib3 nests: MaxRetryError.reason → SSLError → ssl's own error
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            why = seen.verify_message or seen.reason or "verification failed"
            return (
                f"the API server's TLS certificate is not trusted ({why}); check the "
                "kubeconfig's certificate-authority-data is the CA of this cluster"
            )
        if isinstance(seen, ssl.SSLError):
            return f"the TLS handshake with the API server failed ({seen.reason or seen})"
        reason = getattr(seen, "reason", None)
        seen = reason if isinstance(reason, BaseException) else seen.__cause__ or seen.__context__
    return None


def _read_namespace_file() -> str | None:
    try:
        text = _SERVICEACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return None
    return text or None


def _file_context_namespace(path: str) -> str | None:
    try:
        kubeconfig, _ = read_kubeconfig_files(path)
    except ValueError:
        return None
    return kubeconfig.context_namespace()


def default_namespace(config: Config) -> str:
    """The namespace to deploy to: the input, else the kubeconfig context's, else ``default``."""
    if config.namespace:
        return config.namespace
    if config.kubeconfig is not None:
        try:
            found = parse_kubeconfig(config.kubeconfig.get_secret_value()).context_namespace()
        except ValueError:
            found = None
        return found or "default"
    if config.kubeconfig_path:
        return _file_context_namespace(config.kubeconfig_path) or "default"
    return _read_namespace_file() or "default"


def cluster_server(config: Config) -> str:
    """The API server URL of the kubeconfig in effect, without credentials ("" in-cluster)."""
    try:
        if config.kubeconfig is not None:
            kubeconfig = parse_kubeconfig(config.kubeconfig.get_secret_value())
        elif config.kubeconfig_path:
            kubeconfig, _ = read_kubeconfig_files(config.kubeconfig_path)
        else:
            return ""
    except ValueError:
        return ""
    _, cluster = kubeconfig.current_cluster()
    return _without_userinfo(str(cluster.get("server") or ""))


def _without_userinfo(server: str) -> str:
    """``https://user:password@host`` → ``https://host`` (for messages and the client)."""
    parts = urlsplit(server)
    if "@" not in parts.netloc:
        return server
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _file_roots(config: Config) -> list[Path]:
    """Where a KUBECONFIG file's key files may be: the workspace, the runner's temp dir."""
    roots = [config.workspace, RUNNER_TEMP_MOUNT]
    if config.runner_temp is not None:
        roots.append(config.runner_temp)
    return roots


_INSECURE = {
    "TLS verification is off": (
        "The kubeconfig's cluster {} sets insecure-skip-tls-verify: true: the API server's "
        "certificate is not checked, so whoever sits between the runner and the cluster can "
        "read the credentials and change what is deployed. Put the cluster's CA in "
        "certificate-authority-data instead."
    ),
    "Plain HTTP to the API server": (
        "The kubeconfig's cluster {} is reached over plain http://: the credentials and "
        "everything deployed travel unencrypted, and whoever sits between the runner and the "
        "cluster can read and change them. Use the API server's https:// address."
    ),
}


def _warn_insecure(kubeconfig: Kubeconfig, host: str, io: ActionsIO | None) -> None:
    """A warning in the log and the summary for each way the connection is not protected."""
    if io is None:
        return
    name, cluster = kubeconfig.current_cluster()
    found = []
    if cluster.get("insecure-skip-tls-verify") is True:
        found.append("TLS verification is off")
    if host.lower().startswith("http://"):
        found.append("Plain HTTP to the API server")
    for title in found:
        io.warning(_INSECURE[title].format(f"'{name[:60]}'"), title=title)
        shown = code(io.redact(name), limit=120)  # a name from the kubeconfig: inert
        io.append_summary(f"> [!WARNING]\n> {_INSECURE[title].format(shown)}")


def _warn_ignored_env(user_name: str, names: tuple[str, ...], io: ActionsIO | None) -> None:
    if names and io is not None:
        io.warning(
            f"The kubeconfig's exec entry of user '{user_name[:60]}' sets "
            f"{', '.join(names[:10])} in its env: ignored. A kubeconfig never chooses where a "
            "credential is sent or which one; set what the job needs in the job's "
            "environment (env: at the job or the step)",
            title="Kubeconfig exec env ignored",
        )


def _load(
    kubeconfig: Kubeconfig,
    configuration: Configuration,
    base_path: str,
    from_input: bool,
    config: Config,
    io: ActionsIO | None,
) -> None:
    """Fill ``configuration`` from a checked kubeconfig; no command is ever run."""
    from deployer.cloud.plugins import plugin_for_user, token_source

    if from_input:
        check_input_kubeconfig(kubeconfig.raw)
    else:  # a KUBECONFIG file: its files are read here, checked, never by the client
        check_tls_flags(kubeconfig)
        refused = partial(job_credential_file, config)
        for secret in inline_files(kubeconfig, Path(base_path), _file_roots(config), refused):
            if io is not None:
                io.mask(secret)
        check_destination(kubeconfig)
    user_name, user = kubeconfig.current_user()
    try:
        plugin = plugin_for_user(user)
    except ValueError as e:
        raise ValueError(f"user '{user_name[:60]}' {e}") from None
    from kubernetes.config import kube_config as loaders

    loader = cast(Any, loaders).KubeConfigLoader(
        config_dict=kubeconfig.without_commands(), config_base_path=base_path
    )
    loader.load_and_set(configuration)
    configuration.host = _without_userinfo(str(configuration.host))
    _warn_insecure(kubeconfig, str(configuration.host), io)
    if plugin is not None:
        _warn_ignored_env(user_name, plugin.ignored_env, io)
        mask = io.mask if io is not None else (lambda _secret: None)
        token_source(plugin, config, mask).install(configuration)


def connect(config: Config, io: ActionsIO | None = None) -> tuple[ApiClient, str]:
    """The API client and namespace for ``config``; raises :class:`ClusterError`.

    No command the kubeconfig names is run: a cloud plugin's token is made in-process
    (:mod:`deployer.cloud.plugins`). ``io`` masks those tokens and gets the warning
    for a kubeconfig that turns TLS verification off.
    """
    configuration = Configuration()
    if config.kubeconfig is not None or config.kubeconfig_path:
        from_input = config.kubeconfig is not None
        where = "The 'kubeconfig' input" if from_input else f"KUBECONFIG ({config.kubeconfig_path})"
        text = config.kubeconfig.get_secret_value() if config.kubeconfig is not None else ""
        secrets = credentials_in(text)
        try:
            if from_input:
                kubeconfig, base_path = parse_kubeconfig(text), ""
            else:
                kubeconfig, base = read_kubeconfig_files(config.kubeconfig_path or "")
                secrets, base_path = kubeconfig.credentials(), str(base)  # paths: as kubectl
            _load(kubeconfig, configuration, base_path, from_input, config, io)
        except DeployerError:
            raise
        except Exception as e:
            problem = _redacted(str(e), secrets) or type(e).__name__
            raise ClusterError(f"{where} could not be loaded: {problem}") from None
    else:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except Exception:
            raise NoCredentials(
                "No Kubernetes credentials: set the 'kubeconfig' input "
                "(e.g. kubeconfig: ${{ secrets.KUBECONFIG }}), or KUBECONFIG, "
                "or run inside a pod with a ServiceAccount"
            ) from None
    configuration.connection_pool_maxsize = _POOL_SIZE
    return ApiClient(configuration=configuration), default_namespace(config)


@dataclass(frozen=True)
class Resource:
    """One API resource: where it lives and how to name it in a message."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True

    @property
    def display(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if sub:
            base += f"/{sub}"
        return base


DEPLOYMENTS = Resource("apps", "v1", "deployments")
REPLICASETS = Resource("apps", "v1", "replicasets")
STATEFULSETS = Resource("apps", "v1", "statefulsets")
DAEMONSETS = Resource("apps", "v1", "daemonsets")
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
SSAR = Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", namespaced=False)
# Progressive delivery controllers' resources (served only where their CRDs are installed).
ROLLOUTS = Resource("argoproj.io", "v1alpha1", "rollouts")
ANALYSISRUNS = Resource("argoproj.io", "v1alpha1", "analysisruns")
CANARIES = Resource("flagger.app", "v1beta1", "canaries")


@dataclass(frozen=True)
class Response:
    """An answer the caller asked to handle itself (e.g. 404 or 409)."""

    status: int
    body: dict[str, Any]


def _status_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, dict):
        return str(data.get("message") or "")[:500]
    return ""


def label_selector(selector: Mapping[str, Any]) -> str:
    """A LabelSelector object as the ``labelSelector`` query string."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def describe(verb: str, resource: Resource, namespace: str | None, name: str | None) -> str:
    """``patch deployments.apps web in namespace prod``."""
    text = f"{verb} {resource.display}"
    if name:
        text += f" {name}"
    if namespace and resource.namespaced:
        text += f" in namespace {namespace}"
    return text


class Stream(Protocol):
    """An open streaming answer (a watch)."""

    status: int

    def read(self) -> bytes:
        """The whole body (for an answer that is not 200)."""
        ...

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; ends when the server ends it or :meth:`interrupt` is called."""
        ...

    def interrupt(self) -> None:
        """End a read in progress; safe from any thread, also after the stream ended."""
        ...

    def release(self, finished: bool) -> None:
        """Give the connection back (``finished``) or drop it (left mid-stream)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Where requests go: the API server (:class:`ApiTransport`) or a test's fake cluster.

    Connection failures raise :class:`OSError` or urllib3's ``HTTPError``; a refused
    TLS handshake raises ``ApiException`` with status 0, as the kubernetes client does.
    """

    host: str

    def send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        body: object,
        content_type: str | None,
        timeout: tuple[float, float],
    ) -> tuple[int, bytes]:
        """One request; its status and body."""
        ...

    def open_stream(
        self, path: str, query: Sequence[tuple[str, Any]], timeout: tuple[float, float]
    ) -> Stream:
        """A GET whose body is read as it arrives."""
        ...


class _ApiStream:
    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status = int(resp.status)
        self._raw: urllib3.BaseHTTPResponse = resp.response

    def read(self) -> bytes:
        data: bytes = self._resp.read()
        return data

    def chunks(self) -> Iterator[bytes]:
        yield from self._raw.stream(65536, decode_content=True)

    def interrupt(self) -> None:
        with contextlib.suppress(Exception):  # the read may already be over
            self._raw.shutdown()

    def release(self, finished: bool) -> None:
        if not finished:
            # A watch left mid-stream must not go back to the pool: the next
            # request on that connection would queue behind the endless response.
            self._raw.close()
        self._raw.release_conn()


class ApiTransport:
    """Requests through the kubernetes client's ``ApiClient`` (auth, TLS, pool)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.host = str(getattr(api.configuration, "host", ""))

    def _call(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        body: object,
        content_type: str | None,
        timeout: tuple[float, float],
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(*request, _request_timeout=timeout)

    def send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        body: object,
        content_type: str | None,
        timeout: tuple[float, float],
    ) -> tuple[int, bytes]:
        resp = self._call(method, path, query, body, content_type, timeout)
        data: bytes = resp.read()
        return int(resp.status), data

    def open_stream(
        self, path: str, query: Sequence[tuple[str, Any]], timeout: tuple[float, float]
    ) -> Stream:
        return _ApiStream(self._call("GET", path, query, None, None, timeout))

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]


class Kube:
    """JSON requests to the API server with retries, translated errors and deadlines.

    ``deadline`` is a :func:`time.monotonic` value shared by the whole stage; retries
    stop at it. ``cancel`` makes waits between retries end early.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        backoff: float = _BACKOFF_START,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.transport = transport
        self.backoff = backoff
        self.cancel = cancel or threading.Event()
        self.clock = clock
        self.deadline = deadline if deadline is not None else clock.monotonic() + 3600
        self.host = transport.host

    def with_deadline(self, deadline: float) -> Kube:
        """The same client, cancel and clock with another deadline."""
        return Kube(
            self.transport,
            cancel=self.cancel,
            deadline=deadline,
            backoff=self.backoff,
            clock=self.clock,
        )

    # -- one request --------------------------------------------------------------

    def _pause(self, attempt: int) -> None:
        delay = min(_BACKOFF_CAP, self.backoff * 2**attempt)
        delay = max(0.0, min(delay, self.deadline - self.clock.monotonic()))
        if self.clock.wait(self.cancel, delay):
            raise Cancelled("cancelled")

    def request(
        self,
        method: str,
        resource: Resource,
        *,
        verb: str,
        namespace: str | None = None,
        name: str | None = None,
        sub: str = "",
        query: Sequence[tuple[str, Any]] | None = None,
        body: object = None,
        content_type: str | None = None,
        expect: frozenset[int] = frozenset(),
        raw: bool = False,
    ) -> Any:
        """Send one request; return the JSON body (or text if ``raw``).

        A status in ``expect`` is returned as a :class:`Response` instead of raised.
        """
        return self.request_path(
            method,
            resource.path(namespace, name, sub),
            what=describe(verb, resource, namespace, name),
            query=query,
            body=body,
            content_type=content_type,
            expect=expect,
            raw=raw,
            refused=(verb, resource, namespace, name),
        )

    def request_path(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Sequence[tuple[str, Any]] | None = None,
        body: object = None,
        content_type: str | None = None,
        expect: frozenset[int] = frozenset(),
        raw: bool = False,
        refused: tuple[str, Resource, str | None, str | None] | None = None,
    ) -> Any:
        """:meth:`request` for a path; ``refused`` names the request in errors.

        429, 5xx and dropped connections are tried again, at most :data:`_MAX_ATTEMPTS`
        times and never past the deadline; every other failure raises at once.
        """
        attempt = 0
        while True:
            remaining = self.deadline - self.clock.monotonic()
            if remaining <= 0:
                raise ClusterError(f"Timed out before the API server answered: {what}")
            timeout = (min(10.0, remaining), min(_REQUEST_TIMEOUT, remaining))
            try:
                status, data = self.transport.send(
                    method, path, list(query or []), body, content_type, timeout
                )
            except (urllib3.exceptions.HTTPError, OSError) as e:
                tls = _tls_problem(e)
                if tls:  # a wrong CA does not get better by retrying
                    raise ClusterError(f"Cannot {what}: {tls}") from None
                problem = f"cannot reach the API server at {self.host}: {type(e).__name__}"
            except ApiException as e:  # TLS problems arrive as status 0
                reason = _tls_problem(e) or str(e.reason).splitlines()[0]
                raise ClusterError(f"Cannot {what}: {reason} ({self.host})") from None
            else:
                if status not in _RETRIED:
                    return self._answer(status, data, what, expect, raw, refused)
                problem = f"{status} {_HTTP_REASONS.get(status, '')}: {_status_message(data)}"
            attempt += 1
            if attempt >= _MAX_ATTEMPTS or self.clock.monotonic() >= self.deadline:
                raise ClusterError(f"Cannot {what}: {problem} (gave up after {attempt} tries)")
            self._pause(attempt)

    def _answer(
        self,
        status: int,
        data: bytes,
        what: str,
        expect: frozenset[int],
        raw: bool,
        refused: tuple[str, Resource, str | None, str | None] | None,
    ) -> Any:
        """A final answer: the body, a :class:`Response` the caller expects, or the error."""
        if 200 <= status < 300:
            if raw:
                return data.decode("utf-8", "replace")
            try:
                return json.loads(data) if data else {}
            except ValueError:  # e.g. a proxy's HTML page
                raise ClusterError(
                    f"Cannot {what}: the answer of {self.host} is not JSON"
                ) from None
        if status in expect:
            try:
                parsed = json.loads(data) if data else {}
            except ValueError:
                parsed = {}
            return Response(status, parsed if isinstance(parsed, dict) else {})
        if refused is None:
            raise ClusterError(f"Cannot {what} ({status}): {_status_message(data)}")
        raise self.error(status, _status_message(data), *refused)

    @staticmethod
    def error(
        status: int,
        message: str,
        verb: str,
        resource: Resource,
        namespace: str | None,
        name: str | None = None,
    ) -> ClusterError:
        """The error for a refused request."""
        what = describe(verb, resource, namespace, name)
        code = f"{status} {_HTTP_REASONS.get(status, '')}".strip()
        if status == 401:
            return AccessDenied(
                f"The API server did not accept the credentials ({code}) trying to {what}; "
                "the token or certificate may be expired or for another cluster"
            )
        if status == 403:
            return AccessDenied(
                f"The credentials may not {what} ({code})",
                details=message,
            )
        detail = f": {message}" if message else ""
        return ClusterError(f"Cannot {what} ({code}){detail}")

    # -- streams ------------------------------------------------------------------

    def watch(
        self,
        resource: Resource,
        namespace: str,
        *,
        resource_version: str,
        query: Sequence[tuple[str, Any]],
        timeout_seconds: int,
        on_stream: Callable[[Stream], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One watch request: yields raw watch events until the server ends it.

        Raises :class:`ClusterError` for a refused watch, urllib3/OS errors for a
        dropped connection (the caller re-watches). ``on_stream`` gets the open
        stream so another thread can interrupt the read.
        """
        params = [
            *query,
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        stream = self.transport.open_stream(
            resource.path(namespace), params, (10.0, timeout_seconds + 15.0)
        )
        if stream.status != 200:
            data = stream.read()
            if stream.status == 410:  # resourceVersion too old: the caller lists again
                yield {"type": "ERROR", "object": {"code": 410}}
                return
            if stream.status in _RETRIED:
                raise urllib3.exceptions.ProtocolError(f"watch answered {stream.status}")
            raise self.error(stream.status, _status_message(data), "watch", resource, namespace)
        if on_stream is not None:
            on_stream(stream)
        finished = False
        try:
            yield from _json_lines(stream.chunks())
            finished = True
        finally:
            stream.release(finished)


def _json_lines(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Newline-separated JSON objects; a line over :data:`_MAX_EVENT_BYTES` ends the stream."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
        if len(buffer) > _MAX_EVENT_BYTES:
            raise urllib3.exceptions.ProtocolError("a watch event larger than 32 MiB")


def discover(kube: Kube, api_version: str, kind: str, cache: dict[str, list[Any]]) -> Resource:
    """The resource serving ``kind`` in ``api_version`` (discovery is open to every user)."""
    group, _, version = api_version.rpartition("/")
    if api_version not in cache:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        answer = kube.request_path(
            "GET", path, what=f"discover {api_version}", expect=frozenset({404})
        )
        cache[api_version] = [] if isinstance(answer, Response) else answer.get("resources") or []
    for entry in cache[api_version]:
        if entry.get("kind") == kind and "/" not in str(entry.get("name", "")):
            return Resource(group, version, str(entry["name"]), bool(entry.get("namespaced")))
    raise ClusterError(f"The cluster does not serve kind {kind} in apiVersion {api_version}")


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by a :class:`Watch`.

    ``SYNC`` carries the whole list (after the first list and after every relist);
    ``ADDED``/``MODIFIED``/``DELETED`` carry one object.
    """

    type: str
    objects: tuple[dict[str, Any], ...]


_WATCH_SECONDS = 300


class Watch:
    """List, then watch one collection until stopped or the deadline: an iterator.

    It handles what a caller should never see: it resumes from the last
    resourceVersion after the server ends a watch, lists again on 410 Gone (and
    says so with a fresh ``SYNC``), and retries dropped connections and 5xx with a
    capped backoff until the client's deadline (then a ClusterError).
    :meth:`stop` ends it from another thread, also in the middle of a read.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespace: str,
        query: Sequence[tuple[str, Any]] = (),
        *,
        since: str | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.query = list(query)
        self.stopped = threading.Event()
        self._stream: Stream | None = None
        # None: list (again) before the next watch. ``since``: watch from that version
        # first (what came after a create the caller holds), no list.
        self._rv: str | None = since
        self._relists = 0
        self._failures = 0  # dropped connections in a row
        self._lost = ""  # the last one's error
        self._where = f"{resource.display} in namespace {namespace}"

    def stop(self) -> None:
        """End the iteration (safe from any thread)."""
        self.stopped.set()
        stream = self._stream
        if stream is not None:
            stream.interrupt()

    def _keep(self, stream: Stream) -> None:
        self._stream = stream
        if self.stopped.is_set():
            self.stop()

    def _done(self) -> bool:
        return self.stopped.is_set() or self.kube.cancel.is_set()

    def _pause(self, seconds: float) -> None:
        self.kube.clock.wait(self.stopped, seconds)

    def __iter__(self) -> Iterator[WatchEvent]:
        self._failures = 0
        clock = self.kube.clock
        lost_at = 0.0
        while not self._done():
            try:
                if self._rv is None:
                    listing = self.kube.request(
                        "GET",
                        self.resource,
                        verb="list",
                        namespace=self.namespace,
                        query=self.query,
                    )
                    self._rv = str((listing.get("metadata") or {}).get("resourceVersion", ""))
                    yield WatchEvent("SYNC", tuple(listing.get("items") or []))
                remaining = self.kube.deadline - self.kube.clock.monotonic()
                if remaining <= 0:
                    self._give_up(lost_at)
                    return
                yield from self._follow(max(1, min(_WATCH_SECONDS, int(remaining) + 1)))
                self._failures = 0
            except Cancelled:
                return
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if self._done():
                    return
                if self._failures == 0:
                    lost_at = clock.monotonic()
                self._failures += 1
                self._lost = type(e).__name__
                # An API server restart or a network blip is ridden out: retried (capped
                # backoff) until the caller's deadline, then it is the caller's failure.
                delay = min(_BACKOFF_CAP, _BACKOFF_START * 2 ** min(self._failures, 8))
                self._pause(min(delay, max(0.0, self.kube.deadline - clock.monotonic())))

    def _give_up(self, lost_at: float) -> None:
        """At the deadline: a watch that was failing says so (one that works just ends)."""
        if self._failures:
            raise ClusterError(
                f"Lost the watch on {self._where}: no answer for "
                f"{self.kube.clock.monotonic() - lost_at:.0f} s ({self._failures} tries, "
                f"{self._lost})"
            )

    def _follow(self, seconds: int) -> Iterator[WatchEvent]:
        """One watch request from the last resourceVersion, until the server ends it."""
        began = self.kube.clock.monotonic()
        for event in self.kube.watch(
            self.resource,
            self.namespace,
            resource_version=self._rv or "",
            query=self.query,
            timeout_seconds=seconds,
            on_stream=self._keep,
        ):
            if self._done():
                return
            kind = str(event.get("type", ""))
            obj = event.get("object") or {}
            if kind == "ERROR":
                self._error(obj)
                return
            self._rv = str((obj.get("metadata") or {}).get("resourceVersion") or self._rv)
            self._relists = 0
            self._failures = 0  # the stream works: a later drop starts a new count
            if kind != "BOOKMARK":
                yield WatchEvent(kind, (obj,))
        # A server that ends watches at once must not make us spin.
        if self.kube.clock.monotonic() - began < 1.0:
            self._pause(1.0)

    def _error(self, status: Mapping[str, Any]) -> None:
        """An ERROR event: 410 lists again, a lagging cache retries, the rest fails."""
        code = status.get("code")
        if code == 410:
            self._rv = None
            self._relists += 1
            self._pause(min(4.0, 0.1 * 2**self._relists) if self._relists > 1 else 0)
            return
        if code in (429, 500, 503, 504):
            raise urllib3.exceptions.ProtocolError(
                f"watch error {code}: {status.get('message', '')}"
            )
        raise ClusterError(f"Watching {self._where} failed: {status.get('message', status)}")
