"""One level-triggered reconcile of one MLModel: read it, apply its children, write status.

Always starts from the live MLModel (never from a possibly stale event body), so it can be
called from any trigger (create/update, a child's watch event, the resync timer, a restart)
with the same result. No kopf here: handlers.py calls this.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import builders, metrics, pod_health, rollout
from .apply import Kube, NotOwnedError, describe_api_error
from .names import (
    ALERT_RULES_KEY,
    POD_MONITOR_API_VERSION,
    POD_MONITOR_KIND,
    POD_MONITOR_PLURAL,
    PROMETHEUS_RULE_API_VERSION,
    PROMETHEUS_RULE_KIND,
    PROMETHEUS_RULE_PLURAL,
    SCALED_OBJECT_API_VERSION,
    SCALED_OBJECT_KIND,
    SCALED_OBJECT_PLURAL,
)
from .network_policy import Access, build_network_policy
from .pod_diagnosis import current_pods
from .spec import MLModelSpec, SpecError, check_name, parse_spec
from .status import (
    READY,
    Autoscaler,
    Observed,
    Verdict,
    compute_status,
    status_differs,
    utc_now,
)

log = logging.getLogger(__name__)

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(namespace: str, name: str) -> threading.Lock:
    # The WorkQueue never hands one MLModel to two threads; the lock keeps that true for
    # callers outside it (tests, tools) and keeps status writes ordered.
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


class ReconcileError(RuntimeError):
    """A reconcile failed; the message says which call and why (already in an Event)."""


def reconcile(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    runtime_image: str,
    trigger: str,
    monitoring: builders.Monitoring | None = None,
    access: Access | None = None,
) -> dict[str, Any] | None:
    """Reconcile one MLModel; returns the status written (None when the MLModel is gone)."""
    start = time.monotonic()
    result = "ok"
    try:
        with _lock_for(namespace, name):
            return _reconcile(
                kube, namespace, name, runtime_image=runtime_image,
                monitoring=monitoring or builders.Monitoring(),
                access=access or Access(),
            )
    except SpecError:
        result = "invalid"
        raise
    except Exception:
        result = "error"
        raise
    finally:
        metrics.RECONCILES.labels(trigger, result).inc()
        metrics.DURATION.labels(trigger).observe(time.monotonic() - start)


def _reconcile(
    kube: Kube, namespace: str, name: str, *, runtime_image: str,
    monitoring: builders.Monitoring, access: Access,
) -> dict[str, Any] | None:
    body = kube.get_mlmodel(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        _forget(namespace, name)
        return None  # garbage collection removes the children through their ownerReferences
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    owner = builders.Owner(name=name, namespace=namespace, uid=meta["uid"], generation=generation)

    try:
        check_name(name)
        spec = parse_spec(body.get("spec"))
    except SpecError as exc:
        # Nothing is applied from a spec the operator cannot read; existing children stay.
        metrics.ERRORS.labels("InvalidSpec").inc()
        if previous.get("observedGeneration") != generation:
            kube.event(body, "Warning", "InvalidSpec", str(exc))
        _write_error_status(kube, body, owner, None, previous, str(exc), "InvalidSpec")
        raise

    rolled_back = rollout.rolled_back_record(spec, previous)
    changes = Changes()
    try:
        dep, alert_rules, autoscaler = _apply_children(
            kube, body, owner, spec, runtime_image, monitoring, access, changes,
            challenger=rolled_back is None,
        )
    except (ApiException, NotOwnedError) as exc:
        msg = describe_api_error(exc) if isinstance(exc, ApiException) else str(exc)
        reason = "ChildNotOwned" if isinstance(exc, NotOwnedError) else "ReconcileFailed"
        metrics.ERRORS.labels(reason).inc()
        kube.event(body, "Warning", reason, msg)
        try:
            _write_error_status(kube, body, owner, spec.model.version, previous, msg, reason)
        except ApiException as status_exc:
            # One line naming the API server's answer, as for Events (apply.py): a traceback
            # adds nothing, and a namespace being deleted is no failure worth a warning.
            detail = describe_api_error(status_exc)
            log.log(logging.DEBUG if "being terminated" in detail else logging.WARNING,
                    "could not write status of %s/%s: %s", namespace, name, detail)
        raise ReconcileError(f"{namespace}/{name}: {msg}") from exc
    finally:
        changes.post(kube, body)  # what was written before a failure is told too

    try:
        pods = _read_pods(kube, namespace, name)
        challenger = None
        if spec.challenger is not None:
            dep, challenger = _check_challenger(
                kube, body, owner, spec, runtime_image, dep, pods, rolled_back)
        return _write_status(
            kube,
            body,
            Observed(
                name,
                namespace,
                generation,
                spec.model.version,
                dep,
                previous,
                alert_rules=alert_rules,
                autoscaler=autoscaler,
                pods=pods,
                served_model=spec.served_name(name),
                challenger=challenger,
                url_scheme=builders.runtime_scheme(spec),
            ),
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        # Deleted while we applied: what was just created goes with it (ownerReferences).
        _forget(namespace, name)
        log.info("%s/%s was deleted during its reconcile", namespace, name)
        return None


def _ready_current_pods(pods: list[dict[str, Any]] | None,
                        dep: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, IP) of the ready pods of the Deployment's current template."""
    out = []
    for p in current_pods(pods or [], dep):
        st = p.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in st.get("conditions") or [])
        if ready and st.get("podIP") and not p["metadata"].get("deletionTimestamp"):
            out.append((p["metadata"]["name"], st["podIP"]))
    return out


def _check_challenger(
    kube: Kube, body: dict[str, Any], owner: builders.Owner, spec: MLModelSpec,
    runtime_image: str, dep: dict[str, Any], pods: list[dict[str, Any]] | None,
    rolled_back: dict[str, Any] | None,
) -> tuple[dict[str, Any], rollout.ChallengerView | None]:
    """Ask the ready pods how the challenger does; on a pod's failure or rollback, record
    it in the status first (so a restart or a failed write later cannot bring it back),
    then an Event, then the Deployment without it."""
    served = spec.served_name(owner.name)
    reports = [] if rolled_back is not None else [
        rollout.health_report(
            pod, pod_health.read_health(ip, scheme=builders.runtime_scheme(spec)), served)
        for pod, ip in _ready_current_pods(pods, dep)
    ]
    view = rollout.decide(spec, reports, rolled_back, utc_now())
    if view is None or view.rolled_back is None or rolled_back is not None:
        return dep, view
    kube.patch_status(owner.namespace, owner.name, {"rolledBack": view.rolled_back})
    metrics.ERRORS.labels("ChallengerRolledBack").inc()
    kube.event(body, "Warning", "ChallengerRolledBack",
               f"{view.reason}; the pods go back to version {spec.model.version} alone")
    res = kube.apply(builders.build_deployment(owner, spec, runtime_image, challenger=False),
                     owner.uid)
    changes = Changes()
    changes.record("Deployment", owner.name, res.action, " (challenger rolled back)")
    changes.post(kube, body)
    return res.obj, view


def _read_pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]] | None:
    """The MLModel's pods, for the status to say why they are not ready. A failed read only
    costs that detail (None), never the reconcile or the rest of the status."""
    try:
        return kube.list_pods(namespace, builders.selector_string(name))
    except ApiException as exc:
        log.warning("could not list pods of %s/%s: %s", namespace, name, describe_api_error(exc))
        return None


def _write_error_status(
    kube: Kube,
    body: dict[str, Any],
    owner: builders.Owner,
    version: str | None,
    previous: dict[str, Any],
    error: str,
    reason: str,
) -> None:
    """Status of a failed reconcile: the live Deployment as it is, plus the error."""
    dep = kube.get(f"/apis/apps/v1/namespaces/{owner.namespace}/deployments/{owner.name}")
    _write_status(
        kube,
        body,
        Observed(
            owner.name,
            owner.namespace,
            owner.generation,
            version,
            dep,
            previous,
            error=error,
            error_reason=reason,
        ),
    )


def child_names(name: str) -> set[str]:
    """The names of an MLModel's children (every kind is named after it but the alert
    rules' ConfigMap)."""
    return {name, builders.alert_configmap_name(name)}


def _forget(namespace: str, name: str) -> None:
    """Drop per-model state of a deleted MLModel (its gauge series)."""
    with contextlib.suppress(KeyError):
        metrics.MODEL_READY.remove(namespace, name)


class Changes:
    """The children one reconcile created, updated or deleted: counted at once, and told in
    one Event per verb ("Created Deployment m, Service m, ConfigMap m-alert-rules") rather
    than one per child - at scale Events were a third of the operator's writes."""

    def __init__(self) -> None:
        self._by_verb: dict[str, list[str]] = {}

    def record(self, kind: str, obj_name: str, action: str, why: str = "") -> None:
        if action == "unchanged":
            return
        metrics.CHILD_WRITES.labels(kind, action).inc()
        verb = {"created": "Created", "updated": "Updated", "deleted": "Deleted"}[action]
        self._by_verb.setdefault(verb, []).append(f"{kind} {obj_name}{why}")

    def post(self, kube: Kube, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        for verb, items in self._by_verb.items():
            kube.event(body, "Normal", verb, f"{verb} {', '.join(items)}")
            log.info("%s %s in %s", verb.lower(), ", ".join(items), ns)
        self._by_verb.clear()


def _apply_children(
    kube: Kube,
    body: dict[str, Any],
    owner: builders.Owner,
    spec: MLModelSpec,
    runtime_image: str,
    monitoring: builders.Monitoring,
    access: Access,
    changes: Changes,
    *,
    challenger: bool = True,
) -> tuple[dict[str, Any], str | None, Autoscaler]:
    name, uid = owner.name, owner.uid
    drift = " (spec changed or the live object drifted from it)"

    # The policy first: pods must never run before it exists (an apply that fails below
    # leaves them closed, not open).
    _apply_network_policy(kube, owner, spec, access, changes)
    dep = kube.apply(
        builders.build_deployment(owner, spec, runtime_image, challenger=challenger), uid)
    changes.record("Deployment", name, dep.action, drift if dep.action == "updated" else "")
    svc = kube.apply(builders.build_service(owner, spec), uid)
    changes.record("Service", name, svc.action, drift if svc.action == "updated" else "")
    autoscaler = _apply_autoscaling(kube, body, owner, spec, monitoring, changes)
    if kube.has_resource(POD_MONITOR_API_VERSION, POD_MONITOR_PLURAL):
        res = kube.apply(builders.build_pod_monitor(owner, spec), uid)
        changes.record(POD_MONITOR_KIND, name, res.action)
    return dep.obj, _apply_alert_rules(kube, body, owner, spec, changes), autoscaler


def _apply_network_policy(kube: Kube, owner: builders.Owner, spec: MLModelSpec,
                          access: Access, changes: Changes) -> None:
    policy = build_network_policy(owner, spec, access)
    if policy is None:
        if kube.delete_owned("networking.k8s.io/v1", "NetworkPolicy", owner.namespace,
                             owner.name, owner.uid):
            changes.record("NetworkPolicy", owner.name, "deleted",
                           " (spec.serving.networkPolicy.enabled is false)")
        return
    res = kube.apply(policy, owner.uid)
    changes.record("NetworkPolicy", owner.name, res.action,
                   " (spec changed or the live object drifted from it)"
                   if res.action == "updated" else "")


def _latency_unavailable(
    kube: Kube, spec: MLModelSpec, monitoring: builders.Monitoring
) -> tuple[bool, Verdict | None]:
    """(whether the operator may use KEDA here, why latency autoscaling cannot run or None).
    KEDA counts only with a Prometheus address: the chart sets one (and grants the RBAC for
    ScaledObjects) only with keda.enabled, so without it ScaledObjects are never touched."""
    use_keda = bool(monitoring.prometheus_url) and kube.has_resource(
        SCALED_OBJECT_API_VERSION, SCALED_OBJECT_PLURAL
    )
    a = spec.serving.autoscaling
    if not a.enabled or a.targetLatencyMilliseconds is None:
        return use_keda, None
    fallback = "; the HorizontalPodAutoscaler scales on CPU and memory only"
    if not monitoring.prometheus_url:
        return use_keda, Verdict(
            False, "KEDANotEnabled",
            "targetLatencyMilliseconds needs KEDA and the operator's Prometheus address "
            f"(chart values keda.enabled, keda.prometheusUrl; none is set){fallback}",
        )
    if not use_keda:
        return use_keda, Verdict(
            False, "KEDAUnavailable",
            f"targetLatencyMilliseconds needs KEDA ({SCALED_OBJECT_API_VERSION} "
            f"{SCALED_OBJECT_KIND}), which is not installed in this cluster{fallback}",
        )
    return use_keda, None


def _keda_verdict(scaled_object: dict[str, Any], target_ms: int) -> Verdict:
    """LatencyAutoscaling from KEDA's own Ready condition on the ScaledObject."""
    name = scaled_object["metadata"]["name"]
    for c in (scaled_object.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return Verdict(True, "ScaledByKEDA", f"KEDA scales on p95 latency (target "
                           f"{target_ms} ms), CPU and memory: ScaledObject/{name}")
        if c.get("type") == "Ready" and c.get("status") == "False":
            why = c.get("message") or c.get("reason")
            return Verdict(False, "ScaledObjectNotReady", f"KEDA: {why}")
    return Verdict(False, "WaitingForKEDA", f"KEDA has not accepted ScaledObject/{name} yet")


def _apply_autoscaling(
    kube: Kube,
    body: dict[str, Any],
    owner: builders.Owner,
    spec: MLModelSpec,
    monitoring: builders.Monitoring,
    changes: Changes,
) -> Autoscaler:
    """A KEDA ScaledObject when latency autoscaling can run, else the CPU/memory HPA (or
    neither); only one of them ever scales the Deployment."""
    ns, name, uid = owner.namespace, owner.name, owner.uid
    hpa_kind = "HorizontalPodAutoscaler"
    use_keda, unavailable = _latency_unavailable(kube, spec, monitoring)
    scaled = builders.build_scaled_object(owner, spec, monitoring) if unavailable is None else None
    if scaled is not None:
        # KEDA makes its own HPA (keda-hpa-<name>); two HPAs on one Deployment would fight.
        if kube.delete_owned("autoscaling/v2", hpa_kind, ns, name, uid):
            changes.record(hpa_kind, name, "deleted", " (KEDA scales this model)")
        res = kube.apply(scaled, uid)
        changes.record(SCALED_OBJECT_KIND, name, res.action)
        target = spec.serving.autoscaling.targetLatencyMilliseconds or 0
        return Autoscaler(f"{SCALED_OBJECT_KIND}/{name}", _keda_verdict(res.obj, target))
    so_kind = (SCALED_OBJECT_API_VERSION, SCALED_OBJECT_KIND)
    if use_keda and kube.delete_owned(*so_kind, ns, name, uid):
        changes.record(SCALED_OBJECT_KIND, name, "deleted", " (no latency target)")
    hpa = builders.build_hpa(owner, spec)
    if hpa is None:
        if kube.delete_owned("autoscaling/v2", hpa_kind, ns, name, uid):
            changes.record(hpa_kind, name, "deleted", " (autoscaling disabled)")
        return Autoscaler(None, None)
    res = kube.apply(hpa, uid)
    changes.record(hpa_kind, name, res.action)
    if unavailable is not None and res.action == "created":
        kube.event(body, "Warning", unavailable.reason, unavailable.message)
    return Autoscaler(f"{hpa_kind}/{name}", unavailable)


def _apply_alert_rules(
    kube: Kube, body: dict[str, Any], owner: builders.Owner, spec: MLModelSpec,
    changes: Changes,
) -> str | None:
    ns, name, uid = owner.namespace, owner.name, owner.uid
    cm_name = builders.alert_configmap_name(name)
    have_crd = kube.has_resource(PROMETHEUS_RULE_API_VERSION, PROMETHEUS_RULE_PLURAL)
    alert_rules: str | None
    if not spec.alerting.enabled:
        alert_rules = ""
        if have_crd and kube.delete_owned(
            PROMETHEUS_RULE_API_VERSION, PROMETHEUS_RULE_KIND, ns, name, uid
        ):
            changes.record(PROMETHEUS_RULE_KIND, name, "deleted", " (alerting disabled)")
        if kube.delete_owned("v1", "ConfigMap", ns, cm_name, uid):
            changes.record("ConfigMap", cm_name, "deleted", " (alerting disabled)")
    elif have_crd:
        res = kube.apply(builders.build_prometheus_rule(owner, spec), uid)
        changes.record(PROMETHEUS_RULE_KIND, name, res.action)
        alert_rules = f"{PROMETHEUS_RULE_KIND}/{name}"
        if kube.delete_owned("v1", "ConfigMap", ns, cm_name, uid):
            changes.record(
                "ConfigMap", cm_name, "deleted", " (PrometheusRule CRD now installed)"
            )
    else:
        res = kube.apply(builders.build_alert_configmap(owner, spec), uid)
        if res.action == "created":
            kube.event(
                body,
                "Normal",
                "PrometheusRuleCRDMissing",
                f"{PROMETHEUS_RULE_API_VERSION} {PROMETHEUS_RULE_KIND} is not installed in this "
                f"cluster; the alert rules are in ConfigMap {cm_name} (key {ALERT_RULES_KEY}) "
                "for a Prometheus rule_files mount. They move to a PrometheusRule once the CRD "
                "exists.",
            )
        changes.record("ConfigMap", cm_name, res.action)
        alert_rules = f"ConfigMap/{cm_name}"
    return alert_rules


def _write_status(kube: Kube, body: dict[str, Any], obs: Observed) -> dict[str, Any]:
    status = compute_status(obs)
    previous = body.get("status") or {}
    # Skip no-op writes: lastTransitionTime only moves on a transition, so an unchanged
    # state compares equal and the MLModel's resourceVersion stays put.
    if status_differs(previous, status):
        kube.patch_status(obs.namespace, obs.name, status)
        _note_transition(kube, body, previous, status)
    ready = next(c for c in status["conditions"] if c["type"] == READY)
    metrics.MODEL_READY.labels(obs.namespace, obs.name).set(1 if ready["status"] == "True" else 0)
    return status


def _note_transition(
    kube: Kube, body: dict[str, Any], previous: dict[str, Any], status: dict[str, Any]
) -> None:
    """An Event whenever Ready flips or its reason changes (what a user wants to see)."""

    def ready_of(st: dict[str, Any]) -> tuple[str, str] | None:
        for c in st.get("conditions") or []:
            if c.get("type") == READY:
                return c.get("status"), c.get("reason")
        return None

    before, after = ready_of(previous), ready_of(status)
    if before == after or after is None:
        return
    if before is None and after[1] in ("RolloutInProgress", "RolloutPending"):
        return  # a new MLModel starting up: its "Created ..." Event already says so
    cond = next(c for c in status["conditions"] if c["type"] == READY)
    type_ = (
        "Normal"
        if after[0] == "True" or after[1] in ("RolloutInProgress", "RolloutPending")
        else "Warning"
    )
    kube.event(body, type_, after[1], cond["message"])
