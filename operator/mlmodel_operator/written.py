"""What the operator last wrote to each watched child, so that unchanged work costs nothing.

Every reconcile used to send a GET and a server-side apply PATCH per child, and every watch
event of a child (including the echo of the operator's own write and each Deployment status
update) ran a whole reconcile: about 2 MLModels a second converged at scale. This memory
keeps, per child the operator applied:

- the digest of the manifest it sent and the resourceVersion the API server gave back, so a
  reconcile whose desired manifest is unchanged skips the child entirely, and the watch event
  echoing that very write is recognised and dropped;
- the generation, and the labels and annotations the operator sets plus the owners, so a
  later event that changed none of them (a Deployment's status, an HPA's status, a
  controller's own annotation) is not mistaken for a hand edit;
- for Deployments, the part of the live object the MLModel's status is computed from
  (`slim`), kept fresh from the watch;
- children known to be absent (a 404 or our delete), so "delete if present" asks nothing.

Only kinds the operator watches are remembered: for them every change reaches `observe`, so
an entry is never silently stale; a hand edit or delete drops the entry and the next
reconcile applies for real. The operator-wide resync bypasses the memory every few rounds
(`verify`), in case a watch event was ever lost. No kopf and no API calls here.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

# apiVersion/kind of the children that are watched (handlers.py registers the same list).
WATCHED_KINDS = frozenset({
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
})
_KEEP_BODY = frozenset({("apps/v1", "Deployment")})
_MAX_ENTRIES = 50_000  # beyond that start afresh: it only costs real applies


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.blake2b(
        json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), digest_size=16
    ).hexdigest()


def changed_by_write(before: Written, after: dict[str, Any]) -> bool:
    """Whether an apply changed the object: its generation (spec) or its labels,
    annotations or owners moved. Not the resourceVersion, which a controller's status write
    in between moves too."""
    meta = after.get("metadata") or {}
    if before.generation is None or meta.get("generation") is None:
        return meta.get("resourceVersion") != before.resource_version
    return meta.get("generation") != before.generation or _meta_digest(
        after, before.meta_keys) != before.meta


MetaKeys = tuple[tuple[str, ...], tuple[str, ...]]  # the label and annotation keys we set


def meta_keys(manifest: dict[str, Any]) -> MetaKeys:
    meta = manifest.get("metadata") or {}
    return (tuple(sorted(meta.get("labels") or {})), tuple(sorted(meta.get("annotations") or {})))


def _meta_digest(obj: dict[str, Any], keys: MetaKeys) -> str:
    """The labels and annotations the operator sets, as `obj` has them, and its owners.
    Only ours: controllers add their own (a Deployment's revision annotation moves on every
    rollout) and that is no drift."""
    meta = obj.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return manifest_digest({"l": [labels.get(k) for k in keys[0]],
                            "a": [annotations.get(k) for k in keys[1]],
                            "o": meta.get("ownerReferences")})


def live_before(manifest: dict[str, Any], live: dict[str, Any]) -> Written:
    """What an object read just before an apply says, to tell afterwards whether the apply
    changed it."""
    meta = live.get("metadata") or {}
    keys = meta_keys(manifest)
    return Written(digest=None, resource_version=meta.get("resourceVersion"),
                   generation=meta.get("generation"), meta=_meta_digest(live, keys),
                   meta_keys=keys)


_STATUS_FIELDS = ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas",
                  "availableReplicas")


def _status_digest(obj: dict[str, Any]) -> str:
    """What status.py reads of a Deployment's status: counts and each condition's type,
    status, reason and message - not the timestamps the controller moves on every write."""
    st = obj.get("status") or {}
    conditions = sorted(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        for c in st.get("conditions") or [])
    return manifest_digest({"f": [st.get(k) for k in _STATUS_FIELDS], "c": conditions})


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the MLModel's status is computed from (status.py, pod_diagnosis.current_pods):
    a Deployment's identity, replicas, pod template labels and container env, and status.
    A whole Deployment with its managedFields is ten times that, kept for every MLModel."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation",
                                          "resourceVersion", "labels") if k in meta},
        "spec": {
            **({"replicas": spec["replicas"]} if "replicas" in spec else {}),
            "template": {
                "metadata": {"labels": (template.get("metadata") or {}).get("labels") or {}},
                "spec": {"containers": [
                    {"name": c.get("name"), "env": [
                        {"name": e.get("name"), "value": e.get("value")}
                        for e in c.get("env") or [] if "value" in e]}
                    for c in (template.get("spec") or {}).get("containers") or []]},
            },
        },
        "status": obj.get("status") or {},
    }


@dataclass(frozen=True)
class Written:
    digest: str | None  # None: known absent
    resource_version: str | None = None
    uid: str | None = None
    generation: int | None = None
    meta: str | None = None
    body: dict[str, Any] | None = None
    owns_replicas: bool = False  # our apply owns spec.replicas (the HPA hand-over needs it)
    meta_keys: MetaKeys = ((), ())

    def matches(self, manifest: dict[str, Any]) -> bool:
        """`manifest` is exactly what was last applied (never for an absent child)."""
        return self.digest is not None and self.digest == manifest_digest(manifest)


ABSENT = Written(digest=None)

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])


class WrittenMemory:
    """Thread-safe: kopf's handler threads and the WorkQueue's reconcile threads use it."""

    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._entries: dict[Key, Written] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Written | None:
        with self._lock:
            return self._entries.get(key)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def forget_children(self, namespace: str, names: set[str]) -> None:
        """Drop every entry of the children named `names` in `namespace` (one MLModel's)."""
        with self._lock:
            for api_version, kind in WATCHED_KINDS:
                for name in names:
                    self._entries.pop((api_version, kind, namespace, name), None)

    def _put(self, key: Key, entry: Written) -> None:
        if key[:2] not in WATCHED_KINDS:
            return
        with self._lock:
            if key not in self._entries and len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = entry

    def wrote(self, manifest: dict[str, Any], live: dict[str, Any], owns_replicas: bool) -> None:
        """Remember an apply: the manifest sent and the object the API server returned."""
        meta = live.get("metadata") or {}
        key = key_of(manifest)
        self._put(key, Written(
            digest=manifest_digest(manifest),
            resource_version=meta.get("resourceVersion"),
            uid=meta.get("uid"),
            generation=meta.get("generation"),
            meta=_meta_digest(live, meta_keys(manifest)),
            meta_keys=meta_keys(manifest),
            body=slim(live) if key[:2] in _KEEP_BODY else None,
            owns_replicas=owns_replicas,
        ))

    def absent(self, key: Key) -> None:
        """Remember that the child does not exist (a 404, or the operator deleted it)."""
        self._put(key, ABSENT)

    def unchanged(self, manifest: dict[str, Any]) -> Written | None:
        """The entry when `manifest` is exactly what was last applied and nobody changed the
        object since (else None: apply for real)."""
        entry = self.get(key_of(manifest))
        return entry if entry is not None and entry.matches(manifest) else None

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> bool:
        """A watch event of a child; True when it may change what the operator does or
        reports (a reconcile is needed), False for the echo of our own write or a status
        change that the MLModel's status does not read."""
        try:
            key = key_of(obj)
        except KeyError:
            return True
        meta = obj.get("metadata") or {}
        if event_type == "DELETED":
            self.forget(key)
            return True
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.digest is None or entry.uid != meta.get("uid"):
                # Never written by this process, believed absent, or replaced: look.
                self._entries.pop(key, None)
                return True
            if meta.get("resourceVersion") == entry.resource_version:
                return False  # our own write coming back
            generation = meta.get("generation")
            if generation is not None and entry.generation is not None and (
                    generation < entry.generation):
                return False  # an event from before our last write, delivered late
            same_spec = (
                entry.generation is not None
                and meta.get("generation") == entry.generation
                and _meta_digest(obj, entry.meta_keys) == entry.meta
            )
            if not same_spec:
                # A hand edit (or a scale by the HPA): the next reconcile applies for real.
                del self._entries[key]
                return True
            status_moved = entry.body is not None and _status_digest(entry.body) != _status_digest(
                obj)
            self._entries[key] = Written(
                digest=entry.digest,
                resource_version=meta.get("resourceVersion"),
                uid=entry.uid,
                generation=entry.generation,
                meta=entry.meta,
                meta_keys=entry.meta_keys,
                body=slim(obj) if entry.body is not None else None,
                owns_replicas=entry.owns_replicas,
            )
            return status_moved
