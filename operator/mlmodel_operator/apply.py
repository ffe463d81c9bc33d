"""Talking to the API server: idempotent apply, owned deletes, events, discovery.

Every call made here is listed in operator/RBAC.md. Objects are written with server-side
apply (one PATCH with fieldManager n1v1-mlmodel-operator and force): the same call creates
a missing object and puts back every field the operator owns after a hand edit, and a
no-op apply leaves resourceVersion alone, which is how "unchanged" is detected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .names import (
    API_VERSION,
    FIELD_MANAGER,
    GROUP,
    HANDOVER_MANAGER,
    KIND,
    PLURAL,
    POD_MONITOR_API_VERSION,
    POD_MONITOR_KIND,
    POD_MONITOR_PLURAL,
    PROMETHEUS_RULE_API_VERSION,
    PROMETHEUS_RULE_KIND,
    PROMETHEUS_RULE_PLURAL,
    SCALED_OBJECT_API_VERSION,
    SCALED_OBJECT_KIND,
    SCALED_OBJECT_PLURAL,
    VERSION,
)
from .written import (
    Written,
    WrittenMemory,
    changed_by_write,
    key_of,
    live_before,
)

log = logging.getLogger(__name__)

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# kind -> (api prefix, plural). Only the kinds the operator writes.
_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        "/apis/autoscaling/v2",
        "horizontalpodautoscalers",
    ),
    (PROMETHEUS_RULE_API_VERSION, PROMETHEUS_RULE_KIND): (
        f"/apis/{PROMETHEUS_RULE_API_VERSION}",
        PROMETHEUS_RULE_PLURAL,
    ),
    (POD_MONITOR_API_VERSION, POD_MONITOR_KIND): (
        f"/apis/{POD_MONITOR_API_VERSION}",
        POD_MONITOR_PLURAL,
    ),
    (SCALED_OBJECT_API_VERSION, SCALED_OBJECT_KIND): (
        f"/apis/{SCALED_OBJECT_API_VERSION}",
        SCALED_OBJECT_PLURAL,
    ),
    (API_VERSION, KIND): (f"/apis/{GROUP}/{VERSION}", PLURAL),
}


def owns_field(obj: dict[str, Any], manager: str, *path: str) -> bool:
    """Whether `manager` (by server-side apply) owns the field at `path` of `obj`."""
    for entry in obj.get("metadata", {}).get("managedFields", []) or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        node = entry.get("fieldsV1") or {}
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, dict) else None
            if node is None:
                break
        else:
            return True
    return False


def needs_replicas_handover(manifest: dict[str, Any], live: dict[str, Any]) -> bool:
    """A Deployment apply without spec.replicas while we still own the live replicas."""
    return (
        manifest.get("kind") == "Deployment"
        and "replicas" not in manifest.get("spec", {})
        and live.get("spec", {}).get("replicas") is not None
        and owns_field(live, FIELD_MANAGER, "spec", "replicas")
    )


class NotOwnedError(RuntimeError):
    """A child's name is taken by an object this MLModel does not control."""


class NotLeaderError(RuntimeError):
    """A write was refused because this replica lost its leader lease."""


@dataclass(frozen=True)
class ApplyResult:
    action: str  # created | updated | unchanged
    obj: dict[str, Any]


def path_for(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = _PATHS[(api_version, kind)]
    base = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


def _controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    # The API server allows at most one controller reference per object.
    refs = obj.get("metadata", {}).get("ownerReferences", []) or []
    return next((r for r in refs if r.get("controller")), None)


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    ref = _controller(obj)
    return ref is not None and ref.get("uid") == uid


def left_by_predecessor(live: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """True when `live` and `manifest` are controlled by MLModels of the same kind and name
    but another uid: one of them was deleted and the name created again. Which one is
    current is for the caller to check (Kube._owner_is_current)."""
    old, new = _controller(live), _controller(manifest)
    if not old or not new or old.get("uid") == new.get("uid"):
        return False
    group = lambda ref: str(ref.get("apiVersion", "")).split("/")[0]  # noqa: E731
    return (old.get("kind"), old.get("name"), group(old)) == (
        new.get("kind"),
        new.get("name"),
        group(new),
    )


class Kube:
    """A thin JSON client over the kubernetes ApiClient (no generated models)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or client.ApiClient()
        self._discovery: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        # What was last written to each watched child (written.py); the child watch handlers
        # feed it through written.observe().
        self.written = WrittenMemory()
        # Consulted before every write (leader election's fence); None: always allowed.
        self.may_write: Callable[[], bool] | None = None
        # Which replica wrote an Event (the Lease identity with leader election).
        self.instance = FIELD_MANAGER

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
        fenced: bool = True,
    ) -> dict[str, Any]:
        """One API call; writes are refused once this replica lost the leader lease
        (`fenced=False` only for the Lease itself)."""
        if fenced and method != "GET" and self.may_write is not None and not self.may_write():
            raise NotLeaderError(f"{method} {path}: this replica no longer holds the lease")
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        req = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*req, _request_timeout=30)
        resp.read()
        text = resp.data.decode("utf-8") if resp.data else ""
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=text, data=None)
        return json.loads(text) if text else {}

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    # --- children -----------------------------------------------------------------------

    def apply(
        self, manifest: dict[str, Any], owner_uid: str, *, verify: bool = False
    ) -> ApplyResult:
        """Create or update one child. Unless `verify`, a manifest identical to the one last
        applied to an object nobody changed since is not sent at all (written.py)."""
        meta = manifest["metadata"]
        path = path_for(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        known = None if verify else self.written.get(key_of(manifest))
        if known is not None and known.digest is not None:
            if known.matches(manifest):
                return ApplyResult("unchanged", known.body or {})
            # Ours and untouched since our last write (else the watch would have dropped the
            # entry): no need to read it before the apply, unless replicas change hands.
            handover = known.owns_replicas and "replicas" not in manifest.get("spec", {})
            return self._apply(manifest, path, known, self.get(path) if handover else None)
        live = self.get(path)
        if (
            live is not None
            and left_by_predecessor(live, manifest)
            and self._owner_is_current(meta["namespace"], manifest)
        ):
            # Deleted and re-created faster than the garbage collector (which lagged minutes
            # after an API server restart): adopt the old child. The apply below replaces
            # its ownerReferences (ours, by server-side apply) and brings it to this spec;
            # the collector re-checks owners before deleting, so it leaves it alone.
            log.info(
                "adopting %s %s/%s left by a deleted MLModel of the same name",
                manifest["kind"],
                meta["namespace"],
                meta["name"],
            )
            live = {
                **live,
                "metadata": {**live["metadata"], "ownerReferences": meta.get("ownerReferences")},
            }
        if live is not None and not controlled_by(live, owner_uid):
            raise NotOwnedError(
                f"{manifest['kind']} {meta['namespace']}/{meta['name']} exists and is not "
                "controlled by this MLModel; rename or delete it"
            )
        return self._apply(
            manifest,
            path,
            None if live is None else live_before(manifest, live),
            live if live is not None and needs_replicas_handover(manifest, live) else None,
        )

    def _apply(
        self, manifest: dict[str, Any], path: str, before: Written | None,
        handover_from: dict[str, Any] | None,
    ) -> ApplyResult:
        """The server-side apply itself; `handover_from`: the live object whose replicas a
        second field manager keeps (autoscaling was just switched on)."""
        meta = manifest["metadata"]
        live = handover_from
        if live is not None and live.get("spec", {}).get("replicas") is not None:
            # Autoscaling was just switched on. Dropping spec.replicas from our apply would
            # delete the field (we are its only owner) and the Deployment would fall back to
            # 1 replica until the HPA reacts; a second manager keeps the current count.
            self.request(
                "PATCH",
                path,
                body={
                    "apiVersion": manifest["apiVersion"],
                    "kind": manifest["kind"],
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                    "spec": {"replicas": live["spec"]["replicas"]},
                },
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", HANDOVER_MANAGER), ("force", "true")],
            )
        try:
            out = self.request(
                "PATCH",
                path,
                body=manifest,
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            )
        except ApiException:
            self.written.forget(key_of(manifest))
            raise
        self.written.wrote(
            manifest, out, manifest.get("kind") == "Deployment"
            and owns_field(out, FIELD_MANAGER, "spec", "replicas"))
        if before is None:
            action = "created"
        elif changed_by_write(before, out):
            action = "updated"
        else:
            action = "unchanged"
        return ApplyResult(action, out)

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str,
        *, verify: bool = False,
    ) -> bool:
        """Delete a child only if this MLModel controls it; True when something was deleted.
        Unless `verify`, a child remembered as absent is not looked up."""
        key = (api_version, kind, namespace, name)
        if not verify and (known := self.written.get(key)) is not None and known.digest is None:
            return False
        path = path_for(api_version, kind, namespace, name)
        live = self.get(path)
        if live is None:
            self.written.absent(key)
            return False
        if not controlled_by(live, owner_uid):
            return False
        try:
            self.request(
                "DELETE",
                path,
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                    # Only the object we looked at, never a same-named newcomer.
                    "preconditions": {"uid": live["metadata"]["uid"]},
                },
            )
        except ApiException as e:
            if e.status in (404, 409):
                return False
            raise
        self.written.absent(key)
        return True

    def _owner_is_current(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """The manifest's controller is the MLModel that exists now (a reconcile holding a
        stale body must never take a successor's children)."""
        ref = _controller(manifest) or {}
        current = self.get_mlmodel(namespace, str(ref.get("name", "")))
        return current is not None and current["metadata"].get("uid") == ref.get("uid")

    # --- pods (read only) ------------------------------------------------------------------

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The pods matching `label_selector` in `namespace` (status reads their conditions
        and container states; the operator never writes pods)."""
        out = self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            query=[("labelSelector", label_selector)],
        )
        return list(out.get("items") or [])

    # --- the MLModel ----------------------------------------------------------------------

    def list_mlmodels(self, namespaces: list[str], page: int = 500) -> list[tuple[str, str]]:
        """(namespace, name) of every MLModel in `namespaces` (all when empty): metadata only
        (PartialObjectMetadataList), `page` at a time, so one listing of thousands is a few
        small requests."""
        prefix = f"/apis/{GROUP}/{VERSION}"
        paths = [f"{prefix}/namespaces/{ns}/{PLURAL}" for ns in namespaces] or [
            f"{prefix}/{PLURAL}"]
        out: list[tuple[str, str]] = []
        for path in paths:
            token = ""
            while True:
                query = [("limit", str(page))] + ([("continue", token)] if token else [])
                doc = self.request("GET", path, query=query, accept=METADATA_LIST)
                for item in doc.get("items") or []:
                    meta = item.get("metadata") or {}
                    out.append((meta.get("namespace", ""), meta.get("name", "")))
                token = (doc.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
        return out

    def get_mlmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(path_for(API_VERSION, KIND, namespace, name))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.request(
            "PATCH",
            path_for(API_VERSION, KIND, namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # --- discovery --------------------------------------------------------------------------

    def has_resource(self, group_version: str, plural: str, ttl: float = 30.0) -> bool:
        """Whether the API serves group_version/plural (discovery; cached for ttl seconds)."""
        key = f"{group_version}/{plural}"
        with self._lock:
            hit = self._discovery.get(key)
            if hit and time.monotonic() - hit[0] < ttl:
                return hit[1]
        try:
            doc = self.request("GET", f"/apis/{group_version}")
            found = any(r.get("name") == plural for r in doc.get("resources", []))
        except ApiException as e:
            if e.status not in (404, 503):
                raise
            found = False
        with self._lock:
            self._discovery[key] = (time.monotonic(), found)
        return found

    # --- events -----------------------------------------------------------------------------

    def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on the MLModel; never let a failed Event fail a reconcile."""
        meta = owner["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
        except ApiException as e:
            detail = describe_api_error(e)
            # A namespace being deleted refuses new objects with 403; that is not a
            # permission problem, and the MLModel is about to go with it.
            level = logging.DEBUG if "being terminated" in detail else logging.WARNING
            log.log(
                level,
                "could not record event %s on %s/%s: %s",
                reason,
                meta["namespace"],
                meta["name"],
                detail,
            )


def describe_api_error(e: ApiException) -> str:
    """`HTTP <status>: <the API server's Status message>` (its reason if the body is not
    a Status), for logs, Events and conditions."""
    reason = e.reason or ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):  # body is not always JSON
        reason = json.loads(e.body or "").get("message", reason)
    return f"HTTP {e.status}: {reason}"
