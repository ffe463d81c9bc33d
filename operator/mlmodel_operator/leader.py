"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

kopf's peering only pauses a second operator while it sees another one's keep-alive; it is
not an election (both may act in the gap, and nothing fences a paused one). Here exactly one
replica holds the Lease and reconciles; the others wait and take it over when it stops being
renewed:

- A candidate writes the Lease only through an update carrying the resourceVersion it read,
  so of two candidates at most one succeeds (the API server refuses the other with 409).
- Expiry is judged by the candidate's own clock: a Lease counts as expired when its record
  (holder, renewTime, resourceVersion) has not changed for leaseDurationSeconds since this
  replica first saw it, so clock skew between nodes does not matter.
- The leader renews every `retry` seconds. It may write only while its last renewal is less
  than `renew_deadline` old (`may_write`, the fence every write of Kube checks); a leader that
  cannot renew for that long stops acting and exits, before any other replica may take over
  (renew_deadline < lease duration).
- On a clean stop the leader releases the Lease (holder emptied, duration 1 s), so a standby
  takes over at its next try instead of waiting for the expiry.

The functions that decide are pure (`claim`, `release_body`); `LeaderElector` does the I/O.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

LEASE_API = "/apis/coordination.k8s.io/v1"


@dataclass(frozen=True)
class Timings:
    # Kill the leader: a standby holds the Lease after at most duration + retry seconds.
    duration: float = 10.0
    renew_deadline: float = 7.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError(
                "leader election needs 0 < retry < renew deadline < lease duration, got "
                f"{self.retry} / {self.renew_deadline} / {self.duration}"
            )


def micro_time(t: float) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"{LEASE_API}/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def claim(
    lease: dict[str, Any] | None,
    *,
    namespace: str,
    name: str,
    identity: str,
    duration: float,
    now: float,
    expired: bool,
) -> dict[str, Any] | None:
    """The Lease to write to hold (or keep holding) it, or None when another replica
    holds it and it has not expired. `lease` None: it does not exist yet (create it)."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    if lease is not None and holder and holder != identity and not expired:
        return None
    ours = holder == identity
    new_spec = {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(duration)),
        "renewTime": micro_time(now),
        "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else
        micro_time(now),
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        if lease is not None else 0,
    }
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease is not None:
        meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": new_spec}


def release_body(lease: dict[str, Any], identity: str, now: float) -> dict[str, Any] | None:
    """The Lease that hands leadership back at once (None when we do not hold it)."""
    spec = lease.get("spec") or {}
    if spec.get("holderIdentity") != identity:
        return None
    return {**lease, "spec": {**spec, "holderIdentity": None, "leaseDurationSeconds": 1,
                              "renewTime": micro_time(now)}}


class _Api(Protocol):
    def request(
        self, method: str, path: str, *, body: Any = None, fenced: bool = True
    ) -> dict[str, Any]: ...


class LeaderElector:
    def __init__(
        self,
        api: _Api,
        namespace: str,
        name: str,
        identity: str,
        timings: Timings = Timings(),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.t = timings
        self._clock, self._wall = clock, wall
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # monotonic time of our last successful write
        self._lock = threading.Lock()

    # --- state ------------------------------------------------------------------------------

    def may_write(self) -> bool:
        """Whether this replica holds the Lease with margin: renewed less than the renew
        deadline ago (every write of the operator checks this)."""
        with self._lock:
            return self._renewed_at is not None and (
                self._clock() - self._renewed_at < self.t.renew_deadline)

    # --- one attempt ------------------------------------------------------------------------

    def _expired(self, lease: dict[str, Any]) -> bool:
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"),
                  lease["metadata"].get("resourceVersion"))
        now = self._clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.t.duration)
        return now - self._observed_at >= duration

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        started = self._clock()
        try:
            lease: dict[str, Any] | None = self.api.request(
                "GET", lease_path(self.namespace, self.name), fenced=False)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("leader election: reading Lease %s/%s: HTTP %s", self.namespace,
                            self.name, exc.status)
                return False
            lease = None
        body = claim(lease, namespace=self.namespace, name=self.name, identity=self.identity,
                     duration=self.t.duration, now=self._wall(),
                     expired=lease is not None and self._expired(lease))
        if body is None:
            return False
        try:
            if lease is None:
                self.api.request("POST", lease_path(self.namespace), body=body, fenced=False)
            else:
                self.api.request("PUT", lease_path(self.namespace, self.name), body=body,
                                 fenced=False)
        except ApiException as exc:
            if exc.status not in (409, 422):  # 409: another replica wrote first
                log.warning("leader election: writing Lease %s/%s: HTTP %s", self.namespace,
                            self.name, exc.status)
            return False
        with self._lock:
            # The write was sent at `started`: count the lease from then, not from its answer.
            self._renewed_at = started
        return True

    # --- loops --------------------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or `stop` is set (False)."""
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log.info("leader election: %s holds Lease %s/%s", self.identity,
                         self.namespace, self.name)
                return True
            stop.wait(self.t.retry)
        return False

    def keep(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew every `retry` seconds until `stop`; call `on_lost` once renewal has failed
        for the renew deadline (the fence has closed by then)."""
        while not stop.wait(self.t.retry):
            if self.try_acquire_or_renew():
                continue
            if not self.may_write():
                log.error("leader election: %s could not renew Lease %s/%s for %.0f s; "
                          "stopping", self.identity, self.namespace, self.name,
                          self.t.renew_deadline)
                on_lost()
                return

    def release(self) -> None:
        """Hand the Lease back (a clean stop), so a standby need not wait for the expiry."""
        with self._lock:
            held, self._renewed_at = self._renewed_at is not None, None
        if not held:
            return
        try:
            lease = self.api.request("GET", lease_path(self.namespace, self.name), fenced=False)
            body = release_body(lease, self.identity, self._wall())
            if body is not None:
                self.api.request("PUT", lease_path(self.namespace, self.name), body=body,
                                 fenced=False)
                log.info("leader election: %s released Lease %s/%s", self.identity,
                         self.namespace, self.name)
        except ApiException as exc:
            log.warning("leader election: releasing Lease %s/%s: HTTP %s", self.namespace,
                        self.name, exc.status)
