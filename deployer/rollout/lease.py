"""One run at a time per namespace: a ``coordination.k8s.io/v1`` Lease, held while it changes it.

The Lease ``deployer`` in each namespace the run changes names the run that holds
it (``holderIdentity``: the run's URL and attempt, e.g.
``https://github.com/acme/web/actions/runs/42/attempts/1``). It is taken before the
checks (so what the run reads as "before" is not another run's half-way state),
renewed every :data:`RENEW_SECONDS` by a thread, and released on every exit path.

- A second run waits, printing who holds it every :data:`PROGRESS_SECONDS`, up to
  its own ``timeout``; then it fails naming the holder.
- A run that was killed (SIGKILL, a lost runner) stops renewing: its Lease expires
  :data:`DURATION_SECONDS` after the last renewal and the next run takes it over,
  saying which run was interrupted and what it had started to change (recorded in
  the Lease's annotations when the change starts).
- Credentials that may not use Leases get a warning, and the run goes on unlocked.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deployer.cluster import Kube, Resource, Response
from deployer.errors import AccessDenied, Cancelled, ClusterError, NamespaceLocked
from deployer.rollout.context import ANNOTATION_PREFIX, Context

__all__ = ["DURATION_SECONDS", "LEASES", "Lease", "holder_identity"]

LEASES = Resource("coordination.k8s.io", "v1", "leases")
NAME = "deployer"
DURATION_SECONDS = 30  # a killed run's Lease is free this long after its last renewal
RENEW_SECONDS = 10.0
PROGRESS_SECONDS = 15.0
_POLL_SECONDS = 2.0
_REQUEST_SECONDS = 5.0  # one renewal may take this long
_RELEASE_SECONDS = 2.0  # a release (after a cancel, the driver gives it less)
_NONCE = ANNOTATION_PREFIX + "holder-nonce"  # tells two jobs of one run apart
CHANGING = ANNOTATION_PREFIX + "changing"
_CHANGING_CHARS = 8192
_Change = Callable[[Mapping[str, Any]], dict[str, Any]]


def holder_identity(ctx: Context) -> str:
    """The run's URL and attempt; outside Actions, a local description."""
    github = ctx.config.github
    if github.run_url:
        attempt = f"/attempts/{github.run_attempt}" if github.run_attempt else ""
        return github.run_url + attempt
    return "a run outside GitHub Actions"


def _shown(text: Any, limit: int = 200) -> str:
    """Text from the cluster (another run's Lease), made inert for the log: one short line."""
    return re.sub(r"[^\w:/.@()+, >=-]", "?", str(text))[:limit]


def _micro_time(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(text: Any) -> float | None:
    for form in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            moment = datetime.datetime.strptime(str(text), form)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.UTC).timestamp()
    return None


@dataclass
class _Held:
    """What we know of one namespace's Lease."""

    namespace: str
    obj: dict[str, Any] | None = None  # the Lease as last read or written
    seen_rv: str = ""  # someone else's record, and when we first saw it (our clock)
    seen_at: float = 0.0
    mine: bool = False


class Lease:
    """The run's Leases, one per namespace it changes (see the module docstring)."""

    def __init__(self, ctx: Context, namespaces: list[str]) -> None:
        self.ctx = ctx
        self.identity = holder_identity(ctx)
        self.nonce = secrets.token_hex(8)
        self.held = [_Held(ns) for ns in sorted(set(namespaces))]
        self.notes: list[str] = []  # runs that were interrupted, for the summary
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._renewer_done = threading.Event()  # waited for on the clock (a join is not)
        self._kube = ctx.kube

    # -- taking ------------------------------------------------------------------

    def acquire(self, until: float) -> None:
        """Take every namespace's Lease (in name order), waiting up to ``until``."""
        self._kube = self.ctx.kube.with_deadline(until + _REQUEST_SECONDS)
        for held in self.held:
            self._take(held, until)
        if any(h.mine for h in self.held):
            self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
            self._renewer.start()

    def _take(self, held: _Held, until: float) -> None:
        told: float | None = None
        while True:
            try:
                if self._try(held):
                    return
            except AccessDenied as e:
                self.ctx.io.warning(
                    f"Namespace {held.namespace} is not locked for this run ({e.message}): two "
                    "runs at once are not kept apart. Give the credentials get, create and "
                    "update on leases.coordination.k8s.io (docs/cluster.md)",
                    title="No deploy lock",
                )
                return
            now = self.ctx.now()
            if now >= until:
                raise NamespaceLocked(
                    f"Namespace {held.namespace} is being deployed by {self._holder(held)}; "
                    f"waited {self.ctx.config.timeout:.0f} s (the timeout) for it to finish. "
                    "Run again once it is done"
                )
            if told is None or now - told >= PROGRESS_SECONDS:
                told = now
                self.ctx.io.info(
                    f"Waiting for namespace {held.namespace}: {self._holder(held)} is deploying "
                    f"to it (waiting up to {until - now:.0f} s more)"
                )
            if self.ctx.clock.wait(self.ctx.cancel, min(_POLL_SECONDS, until - now)):
                raise Cancelled("cancelled")

    @staticmethod
    def _holder(held: _Held) -> str:
        spec = (held.obj or {}).get("spec") or {}
        return _shown(spec.get("holderIdentity") or "another run")

    def _try(self, held: _Held) -> bool:
        """One attempt to take ``held``; False while another live run holds it."""
        kube = self._kube
        answer = kube.request(
            "GET", LEASES, verb="get", namespace=held.namespace, name=NAME, expect=frozenset({404})
        )
        if isinstance(answer, Response):
            return self._create(held)
        held.obj = dict(answer)
        spec = answer.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder and not self._is_mine(answer) and not self._expired(held, answer):
            return False
        if holder and not self._is_mine(answer):
            self._interrupted(held, answer)
        return self._write(held, self._taken(answer))

    def _is_mine(self, obj: Mapping[str, Any]) -> bool:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        spec = obj.get("spec") or {}
        return spec.get("holderIdentity") == self.identity and annotations.get(_NONCE) == self.nonce

    def _expired(self, held: _Held, obj: Mapping[str, Any]) -> bool:
        """Not renewed for its duration: by its own renewTime, or as we watched it."""
        spec = obj.get("spec") or {}
        duration = float(spec.get("leaseDurationSeconds") or DURATION_SECONDS)
        renewed = _epoch(spec.get("renewTime") or spec.get("acquireTime"))
        if renewed is not None and renewed + duration < self.ctx.clock.time():
            return True
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if rv != held.seen_rv:
            held.seen_rv, held.seen_at = rv, self.ctx.now()
        return self.ctx.now() - held.seen_at > duration

    def _interrupted(self, held: _Held, obj: Mapping[str, Any]) -> None:
        """Take-over of a dead run's Lease: say which run it was and what it changed."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        try:
            changing = json.loads(str(annotations.get(CHANGING) or "{}"))
        except ValueError:
            changing = {}
        items = changing.get("changes") if isinstance(changing, dict) else None
        # A change names a workload and two image references (each up to 255 characters).
        shown = [_shown(x, 600) for x in items[:20]] if isinstance(items, list) else []
        what = ", ".join(shown)
        note = (
            f"The deploy {self._holder(held)} to namespace {held.namespace} was interrupted "
            "(its lock expired without being released): "
            + (
                f"it had started to change {what}"
                if what
                else "it had not started to change anything"
            )
            + "; this run takes over from what it left"
        )
        self.notes.append(note)
        self.ctx.io.warning(note, title="An earlier deploy was interrupted")

    def _taken(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        now = _micro_time(self.ctx.clock.time())
        spec = dict(obj.get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0) + (
            1 if spec.get("holderIdentity") else 0
        )
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=DURATION_SECONDS,
            acquireTime=now,
            renewTime=now,
            leaseTransitions=transitions,
        )
        meta = dict(obj.get("metadata") or {})
        annotations = dict(meta.get("annotations") or {})
        annotations[_NONCE] = self.nonce
        annotations.pop(CHANGING, None)
        meta["annotations"] = annotations
        return {**obj, "metadata": meta, "spec": spec}

    def _create(self, held: _Held) -> bool:
        body = self._taken(
            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": NAME}}
        )
        answer = self._kube.request(
            "POST",
            LEASES,
            verb="create",
            namespace=held.namespace,
            body=body,
            expect=frozenset({404, 409}),
        )
        if isinstance(answer, Response):
            if answer.status == 404:  # the namespace is made by this run's manifests
                self.ctx.io.info(f"Namespace {held.namespace} does not exist yet: not locked")
                return True
            return False  # another run created it first: look again
        held.obj, held.mine = dict(answer), True
        return True

    def _write(self, held: _Held, body: dict[str, Any], kube: Kube | None = None) -> bool:
        """PUT with the resourceVersion read (a 409: someone was quicker)."""
        meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
        body = {**body, "metadata": meta}
        answer = (kube or self._kube).request(
            "PUT",
            LEASES,
            verb="update",
            namespace=held.namespace,
            name=NAME,
            body=body,
            expect=frozenset({404, 409}),
        )
        if isinstance(answer, Response):
            return False
        held.obj, held.mine = dict(answer), True
        return True

    # -- holding -----------------------------------------------------------------

    def record(self, changes: list[str]) -> None:
        """Write what the run is about to change into its Leases (for a run taking over)."""
        text = json.dumps({"image": self.ctx.image, "changes": changes})
        while len(text) > _CHANGING_CHARS and changes:
            changes = changes[: len(changes) // 2]
            text = json.dumps({"image": self.ctx.image, "changes": [*changes, "…"]})
        self._update(lambda obj: _annotated(obj, text))

    def _renew(self) -> None:
        try:
            self._renew_until_stopped()
        finally:
            self._renewer_done.set()

    def _renew_until_stopped(self) -> None:
        while not self._stop.is_set():
            if self.ctx.clock.wait(self._stop, RENEW_SECONDS):
                return
            self._update(
                functools.partial(_renewed, now=_micro_time(self.ctx.clock.time())), quiet=False
            )

    def _update(self, change: _Change, *, quiet: bool = True) -> None:
        """Apply ``change`` to each Lease we hold (re-read on a conflict, never taken back)."""
        with self._lock:
            for held in self.held:
                if not held.mine or held.obj is None:
                    continue
                kube = self.ctx.kube.with_deadline(self.ctx.now() + _REQUEST_SECONDS)
                try:
                    self._update_one(held, change, kube)
                except (ClusterError, Cancelled) as e:
                    if not quiet:
                        self.ctx.io.info(f"The lock of namespace {held.namespace}: {e}")

    def _update_one(self, held: _Held, change: _Change, kube: Kube) -> None:
        for _ in range(3):
            assert held.obj is not None
            if self._write(held, change(held.obj), kube):
                return
            found = kube.request(
                "GET",
                LEASES,
                verb="get",
                namespace=held.namespace,
                name=NAME,
                expect=frozenset({404}),
            )
            if isinstance(found, Response) or not self._is_mine(found):
                held.mine = False
                self.ctx.io.warning(
                    f"This run lost the lock of namespace {held.namespace} (renewal late by "
                    "more than its duration?); another run may deploy to it now",
                    title="Deploy lock lost",
                )
                return
            held.obj = dict(found)

    def release(self, kube: Kube | None = None, *, within: float | None = None) -> None:
        """Give every Lease back (on every exit path); ``kube`` after a cancel.

        ``within``: seconds for all of it (after a cancel: the runner kills the container
        soon). A renewal still waiting for a stalled API server then is not waited for:
        the Lease is left, and expires :data:`DURATION_SECONDS` after its last renewal.
        """
        self._stop.set()
        until = self.ctx.now() + (within if within is not None else 2 * _REQUEST_SECONDS)
        if self._renewer is not None and not self.ctx.clock.wait(
            self._renewer_done, max(0.0, min(_REQUEST_SECONDS, until - self.ctx.now()))
        ):
            names = ", ".join(h.namespace for h in self.held if h.mine)
            self.ctx.io.info(
                f"The lock of namespace {names} is not released (its renewal still waits for "
                f"the API server): it expires {DURATION_SECONDS} s after its last renewal"
            )
            return
        with self._lock:
            for held in self.held:
                if not held.mine or held.obj is None:
                    continue
                seconds = min(_RELEASE_SECONDS, until - self.ctx.now())
                quick = (kube or self.ctx.kube).with_deadline(self.ctx.now() + seconds)
                with contextlib.suppress(ClusterError, Cancelled):  # else it expires by itself
                    self._write(held, _released(held.obj), quick)
                held.mine = False


def _annotated(obj: Mapping[str, Any], changing: str) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), CHANGING: changing}
    return {**obj, "metadata": meta}


def _renewed(obj: Mapping[str, Any], now: str) -> dict[str, Any]:
    return {**obj, "spec": {**(obj.get("spec") or {}), "renewTime": now}}


def _released(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in ("holderIdentity",)}
    meta = dict(obj.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(CHANGING, None)
    annotations.pop(_NONCE, None)
    meta["annotations"] = annotations
    return {**obj, "metadata": meta, "spec": spec}
