"""Thin kopf handlers: every trigger ends in reconcile.reconcile() for one MLModel.

Triggers: the MLModel's create/update/resume, watch events of its children (a deleted or
hand-edited child is put back at once), and a resync timer as the level-triggered backstop
(it also covers the PrometheusRule, which is not watched because its CRD may be missing).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import reconcile as rec
from .apply import Kube
from .settings import OperatorSettings
from .spec import GROUP, KIND, PLURAL, VERSION, SpecError

log = logging.getLogger(__name__)

MANAGED = {"app.kubernetes.io/managed-by": "n1v1-mlmodel-operator"}


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


def _run(namespace: str, name: str, trigger: str) -> None:
    assert STATE.kube is not None, "handlers.configure() was not called"
    rec.reconcile(
        STATE.kube, namespace, name, runtime_image=STATE.settings.runtime_image, trigger=trigger
    )


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
    settings.watching.server_timeout = 300
    if STATE.settings.namespace_list():
        # Exact namespace names: kopf's namespace (and CRD) scanning would only add a
        # cluster-wide list/watch the operator does not need; __main__ checks at start that
        # the MLModel CRD is served instead.
        settings.scanning.disabled = True
    settings.execution.max_workers = 8


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
