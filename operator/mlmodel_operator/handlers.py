"""Thin kopf handlers: every trigger ends in reconcile.reconcile() for one MLModel.

Triggers: the MLModel's create/update/resume, watch events of its children (a deleted or
hand-edited child is put back at once; the echo of the operator's own write and status
updates nobody reads are dropped, see written.py), its pods (so Ready names why they are not
ready within seconds), and one operator-wide resync loop as the level-triggered backstop
(resync.py; it also covers the PrometheusRule, which is not watched because its CRD may be
missing). No handler needs a finalizer, so deleting an MLModel or its namespace never waits
for the operator; kopf removes the finalizer that older versions put on MLModels.

State lives in kopf's memo, not in module globals: __main__ passes the operator memo
(operator_memo: settings, the Kube client, the pods' last diagnoses) to kopf.run, and every
resource handler's memo is a shallow copy of it, so they all share those objects.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from . import metrics
from . import reconcile as rec
from .apply import Kube, NotLeaderError
from .names import (
    FINALIZER,
    GROUP,
    KIND,
    KOPF_ANNOTATION_PREFIX,
    KOPF_DIFFBASE_KEY,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_LABEL,
    PLURAL,
    VERSION,
)
from .pod_diagnosis import Diagnosis, diagnose_pod
from .resync import Resync
from .settings import OperatorSettings
from .spec import SpecError
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}
# Pods are watched with this server-side selector: only the runtime pods of MLModels reach
# the operator, not every pod of the cluster.
POD_SELECTOR = ",".join([*(f"{k}={v}" for k, v in MANAGED.items()), MODEL_LABEL])
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())


# --- pods' memory (defined first: the operator memo holds one) ----------------------------
# Pods are owned by ReplicaSets, not by the MLModel: they are mapped to it by their
# serving.n1v1.io/model label (from the pod template). A pod changes status many times on
# its way to ready (scheduled, init running, started, ready) and again on every restart of a
# crash loop; only a change of what the pod alone says is wrong (pod_diagnosis.diagnose_pod)
# can change the MLModel's status — readiness itself arrives through the Deployment watch —
# so every other pod event is dropped (_pod_event), and the rest are coalesced per MLModel.
# On a cluster where pods simply become ready (kwok) pod events cause no reconcile at all.
_POD_MEMORY_MAX = 10_000  # uids remembered; beyond that start afresh (only costs reconciles)


class PodMemory:
    """The last diagnosis seen of each runtime pod, by uid (shared by all pod handlers)."""

    def __init__(self, max_pods: int = _POD_MEMORY_MAX) -> None:
        self._seen: dict[str, Diagnosis | None] = {}
        self._max = max_pods
        # Handlers run in kopf's thread pool: pod events of different pods race here.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def changed(self, uid: str, event_type: str, diagnosis: Diagnosis | None) -> bool:
        """Remember the pod's diagnosis; True when it differs from the last one seen (a pod
        seen for the first time counts as having had none)."""
        with self._lock:
            if event_type == "DELETED":
                return self._seen.pop(uid, None) is not None
            before = self._seen.get(uid)
            if uid not in self._seen and len(self._seen) >= self._max:
                self._seen.clear()
            self._seen[uid] = diagnosis
            return diagnosis != before


# --- the operator memo ---------------------------------------------------------------------


def operator_memo(settings: OperatorSettings, kube: Kube) -> kopf.Memo:
    """The memo to pass as kopf.run(memo=...): what every handler reads."""
    memo = kopf.Memo(settings=settings, kube=kube, pods=PodMemory())
    memo.queue = _work_queue(memo, settings)
    return memo


def _work_queue(memo: kopf.Memo, settings: OperatorSettings) -> WorkQueue:
    return WorkQueue(lambda key, trigger: _process(memo, key, trigger),
                     workers=settings.reconcile_workers)


RETRY_SECONDS = 10.0  # a reconcile that failed on the API is tried again after this


def _process(memo: kopf.Memo, key: tuple[str, str], trigger: str) -> None:
    """One queued reconcile (in a WorkQueue thread)."""
    namespace, name = key
    try:
        _run(memo, namespace, name, trigger)
    except SpecError:
        pass  # the status and an Event say what is wrong; only a spec change can fix it
    except NotLeaderError:
        pass  # this replica is stopping; the new leader reconciles everything at its start
    except Exception as exc:  # noqa: BLE001 - an API error, or a bug: retried either way
        # ReconcileError's message names the call (its Event and status are written); other
        # errors were not expected, so their traceback goes to the log.
        log.warning("reconcile of %s/%s failed, retrying in %.0f s: %s", namespace, name,
                    RETRY_SECONDS, exc, exc_info=not isinstance(exc, rec.ReconcileError))
        memo.queue.add_after(key, RETRY_SECONDS, "retry")


def _enqueue(memo: kopf.Memo, namespace: str, name: str, trigger: str) -> None:
    if not memo.queue.add((namespace, name), trigger):
        metrics.RECONCILES.labels(trigger, "coalesced").inc()


def _resync_one(memo: kopf.Memo, namespace: str, name: str, verify: bool) -> None:
    if verify:
        # Forget what was written, so this reconcile reads and applies every child for real.
        memo.kube.written.forget_children(namespace, rec.child_names(name))
    _enqueue(memo, namespace, name, "resync-verify" if verify else "resync")


@kopf.on.startup()
def _start_workers(memo: kopf.Memo, **_: Any) -> None:
    kube, operator = memo.get("kube"), memo.get("settings")
    if kube is None or operator is None or memo.get("queue") is None:
        return  # `kopf run handlers.py` without __main__: no client to reconcile with
    memo.queue.start()
    stop = threading.Event()
    memo.resync_stop = stop
    Resync(
        lambda: kube.list_mlmodels(operator.namespace_list()),
        lambda ns, name, verify: _resync_one(memo, ns, name, verify),
        period=operator.resync_seconds,
        verify_every=operator.resync_verify_every,
    ).start(stop)


@kopf.on.cleanup()
def _stop_workers(memo: kopf.Memo, **_: Any) -> None:
    if (stop := memo.get("resync_stop")) is not None:
        stop.set()
    if (queue := memo.get("queue")) is not None:
        queue.stop()


def _namespace(namespace: str | None) -> str:
    """kopf types `namespace` for cluster-scoped resources too; an MLModel always has one."""
    if namespace is None:
        raise kopf.PermanentError("an MLModel without a namespace (the CRD is namespaced)")
    return namespace


def _run(memo: kopf.Memo, namespace: str, name: str, trigger: str) -> None:
    kube = memo.get("kube")
    assert kube is not None, "no Kube client in the memo: kopf.run(memo=operator_memo(...))"
    rec.reconcile(
        kube,
        namespace,
        name,
        runtime_image=memo.settings.runtime_image,
        monitoring=memo.settings.monitoring(),
        access=memo.settings.access(),
        trigger=trigger,
    )


WATCH_CLIENT_MARGIN_SECONDS = 15


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Run without __main__ (`kopf run handlers.py`): settings from the env, no Kube client
    # (reconciles then fail, as before), a fresh pods' memory.
    operator: OperatorSettings = memo.setdefault("settings", OperatorSettings())
    memo.setdefault("pods", PodMemory())
    if memo.get("queue") is None:
        memo.queue = _work_queue(memo, operator)
    # Keep kopf's bookkeeping out of .status (the operator writes status itself) and under
    # our own annotation prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key=KOPF_DIFFBASE_KEY
    )
    settings.persistence.finalizer = FINALIZER
    # Only problems become kopf's own Events; ours say what was done.
    settings.posting.level = logging.WARNING
    # The API server ends each watch after server_timeout; a stream that goes silent without
    # closing (a dead proxy, a half-open TCP connection) is dropped by the client a little
    # later and re-established, so no change waits longer than about that.
    watch = operator.watch_timeout_seconds
    settings.watching.server_timeout = watch
    settings.watching.client_timeout = watch + WATCH_CLIENT_MARGIN_SECONDS
    settings.watching.connect_timeout = 10
    if operator.namespace_list():
        # Exact namespace names: kopf's namespace (and CRD) scanning would only add a
        # cluster-wide list/watch the operator does not need; __main__ checks at start that
        # the MLModel CRD is served instead.
        settings.scanning.disabled = True
    settings.execution.max_workers = 8
    settings.watching.label_selectors["", "v1", "pods"] = POD_SELECTOR
    # Server-side: only the operator's children reach it, not every ConfigMap of the cluster.
    for group, version, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group, version, plural] = MANAGED_SELECTOR


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def mlmodel_changed(
    *, namespace: str | None, name: str, reason: str, memo: kopf.Memo, **_: Any
) -> None:
    # Queued, not run here: the reconcile (and its retries) happen in the WorkQueue.
    _enqueue(memo, _namespace(namespace), name, getattr(reason, "value", str(reason)))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def mlmodel_deleted(*, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    # optional=True: no finalizer; children go through garbage collection.
    rec._forget(_namespace(namespace), name)
    if (kube := memo.get("kube")) is not None:
        kube.written.forget_children(_namespace(namespace), rec.child_names(name))


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if (
            ref.get("kind") == KIND
            and ref.get("apiVersion", "").startswith(f"{GROUP}/")
            and ref.get("controller")
        ):
            return ref.get("name")
    return None


def _child_event(
    body: kopf.Body, type: str | None, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    owner = _owner_name(body)
    if not owner or not namespace or type is None:
        return  # type None: the initial listing; the MLModel's resume handler covers it
    kube = memo.get("kube")
    if kube is not None and not kube.written.observe(type, dict(body)):
        metrics.CHILD_EVENTS_DROPPED.labels(body.get("kind", "?")).inc()
        return  # our own write coming back, or a status change nothing reads
    _enqueue(memo, namespace, owner, f"child:{body.get('kind', '?')}")


CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("", "v1", "configmaps"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)
for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels=MANAGED, id=f"child-{_plural}")(_child_event)


# --- pods (why most pod events are dropped: see PodMemory) ---------------------------------
@kopf.on.event("", "v1", "pods", labels={**MANAGED, MODEL_LABEL: kopf.PRESENT}, id="pods")
def _pod_event(
    body: kopf.Body, type: str | None, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    meta = body.get("metadata", {})
    model = (meta.get("labels") or {}).get(MODEL_LABEL)
    uid = meta.get("uid")
    if not model or not uid or not namespace or type is None:
        return  # type None: the initial listing; the MLModel's resume handler covers it
    diagnosis = None if type == "DELETED" else diagnose_pod(dict(body))
    if not memo.pods.changed(uid, type, diagnosis):
        return
    _enqueue(memo, namespace, model, "pod")
