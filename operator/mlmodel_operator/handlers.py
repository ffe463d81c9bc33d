"""Thin kopf handlers: every trigger ends in reconcile.reconcile() for one MLModel.

Triggers: the MLModel's create/update/resume, watch events of its children (a deleted or
hand-edited child is put back at once), its pods (so Ready names why they are not ready
within seconds), and a resync timer as the level-triggered backstop (it also covers the
PrometheusRule, which is not watched because its CRD may be missing).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from . import reconcile as rec
from .apply import Kube
from .pod_diagnosis import Diagnosis, diagnose_pod
from .settings import OperatorSettings
from .spec import GROUP, KIND, PLURAL, VERSION, SpecError

log = logging.getLogger(__name__)

MANAGED = {"app.kubernetes.io/managed-by": "n1v1-mlmodel-operator"}
MODEL_LABEL = "serving.n1v1.io/model"
# Pods are watched with this server-side selector: only the runtime pods of MLModels reach
# the operator, not every pod of the cluster.
POD_SELECTOR = ",".join([*(f"{k}={v}" for k, v in MANAGED.items()), MODEL_LABEL])


class _State:
    settings = OperatorSettings()
    kube: Kube | None = None


STATE = _State()


def configure(settings: OperatorSettings, kube: Kube) -> None:
    """Set the runtime state and register the resync timer (its period is a setting)."""
    STATE.settings = settings
    STATE.kube = kube
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        id="resync",
        interval=settings.resync_seconds,
        initial_delay=min(settings.resync_seconds, 30.0),
    )(mlmodel_resync)


def _run(namespace: str, name: str, trigger: str, *, coalesce: bool = False) -> None:
    assert STATE.kube is not None, "handlers.configure() was not called"
    rec.reconcile(
        STATE.kube,
        namespace,
        name,
        runtime_image=STATE.settings.runtime_image,
        trigger=trigger,
        coalesce=coalesce,
    )


WATCH_CLIENT_MARGIN_SECONDS = 15


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping out of .status (the operator writes status itself) and under
    # our own annotation prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    # Only problems become kopf's own Events; ours say what was done.
    settings.posting.level = logging.WARNING
    # The API server ends each watch after server_timeout; a stream that goes silent without
    # closing (a dead proxy, a half-open TCP connection) is dropped by the client a little
    # later and re-established, so no change waits longer than about that.
    watch = STATE.settings.watch_timeout_seconds
    settings.watching.server_timeout = watch
    settings.watching.client_timeout = watch + WATCH_CLIENT_MARGIN_SECONDS
    settings.watching.connect_timeout = 10
    if STATE.settings.namespace_list():
        # Exact namespace names: kopf's namespace (and CRD) scanning would only add a
        # cluster-wide list/watch the operator does not need; __main__ checks at start that
        # the MLModel CRD is served instead.
        settings.scanning.disabled = True
    settings.execution.max_workers = 8
    settings.watching.label_selectors["", "v1", "pods"] = POD_SELECTOR


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def mlmodel_changed(namespace: str, name: str, reason: str, **_: Any) -> None:
    try:
        _run(namespace, name, getattr(reason, "value", str(reason)))
    except SpecError as exc:
        # Status and an Event already say what is wrong; retrying cannot fix the manifest.
        raise kopf.PermanentError(str(exc)) from exc
    except rec.ReconcileError as exc:
        raise kopf.TemporaryError(str(exc), delay=10) from exc


def mlmodel_resync(namespace: str, name: str, **_: Any) -> None:
    try:
        _run(namespace, name, "timer")
    except (SpecError, rec.ReconcileError) as exc:
        log.warning("resync of %s/%s failed: %s", namespace, name, exc)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def mlmodel_deleted(namespace: str, name: str, **_: Any) -> None:
    # optional=True: no finalizer; children go through garbage collection.
    rec._forget(namespace, name)


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if (
            ref.get("kind") == KIND
            and ref.get("apiVersion", "").startswith(f"{GROUP}/")
            and ref.get("controller")
        ):
            return ref.get("name")
    return None


def _child_event(body: kopf.Body, type: str | None, namespace: str | None, **_: Any) -> None:
    owner = _owner_name(body)
    if not owner or not namespace or type is None:
        return  # type None: the initial listing; the MLModel's resume handler covers it
    try:
        _run(namespace, owner, f"child:{body.get('kind', '?')}")
    except (SpecError, rec.ReconcileError) as exc:
        log.warning(
            "reconcile of %s/%s after a %s event failed: %s",
            namespace,
            owner,
            body.get("kind"),
            exc,
        )


for _group, _version, _plural in (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("", "v1", "configmaps"),
):
    kopf.on.event(_group, _version, _plural, labels=MANAGED, id=f"child-{_plural}")(_child_event)


# --- pods -------------------------------------------------------------------------------
# Pods are owned by ReplicaSets, not by the MLModel: they are mapped to it by their
# serving.n1v1.io/model label (from the pod template). A pod changes status many times on
# its way to ready (scheduled, init running, started, ready) and again on every restart of a
# crash loop; only a change of what the pod alone says is wrong (pod_diagnosis.diagnose_pod)
# can change the MLModel's status — readiness itself arrives through the Deployment watch —
# so every other pod event is dropped here, and the rest are coalesced per MLModel. On a
# cluster where pods simply become ready (kwok) pod events cause no reconcile at all.
_POD_MEMORY_MAX = 10_000  # uids remembered; beyond that start afresh (only costs reconciles)
_pod_seen: dict[str, Diagnosis | None] = {}
_pod_seen_guard = threading.Lock()


def pod_changed(uid: str, event_type: str, diagnosis: Diagnosis | None) -> bool:
    """Remember the pod's diagnosis; True when it differs from the last one seen (a pod
    seen for the first time counts as having had none)."""
    with _pod_seen_guard:
        if event_type == "DELETED":
            return _pod_seen.pop(uid, None) is not None
        before = _pod_seen.get(uid)
        if uid not in _pod_seen and len(_pod_seen) >= _POD_MEMORY_MAX:
            _pod_seen.clear()
        _pod_seen[uid] = diagnosis
        return diagnosis != before


@kopf.on.event("", "v1", "pods", labels={**MANAGED, MODEL_LABEL: kopf.PRESENT}, id="pods")
def _pod_event(body: kopf.Body, type: str | None, namespace: str | None, **_: Any) -> None:
    meta = body.get("metadata", {})
    model = (meta.get("labels") or {}).get(MODEL_LABEL)
    uid = meta.get("uid")
    if not model or not uid or not namespace or type is None:
        return  # type None: the initial listing; the MLModel's resume handler covers it
    diagnosis = None if type == "DELETED" else diagnose_pod(dict(body))
    if not pod_changed(uid, type, diagnosis):
        return
    try:
        _run(namespace, model, "pod", coalesce=True)
    except (SpecError, rec.ReconcileError) as exc:
        log.warning("reconcile of %s/%s after a pod event failed: %s", namespace, model, exc)
