"""Pure status logic: observed Deployment state in, MLModel .status out.

Conditions (each with status, reason, message, observedGeneration, lastTransitionTime):
- Ready: every desired replica runs the CURRENT pod template and is ready, i.e. the
  Deployment controller has seen the latest template, every pod is updated and available,
  no pod of an older template is left, and the Deployment is not stuck.
- ModelServing: at least one pod is ready, i.e. the model answers on the Service (a ready
  pod means the runtime's /v2/health/ready said the model is loaded). During a rollout this
  can be True while Ready is False: the previous version still serves.

While a rollout is not complete, Ready names the pod-level cause when pods of the current
template show one (pod_diagnosis.py: Unschedulable, ImagePullFailed, CrashLoopBackOff,
OOMKilled, Fetch*, ...) instead of a bare RolloutInProgress; a stuck rollout keeps the reason
RolloutStuck and carries the cause in its message. Pods of older templates are never blamed,
and a complete rollout is Ready whatever they do.

LatencyAutoscaling (only with a latency target): True when KEDA's ScaledObject is Ready;
False with the reason when KEDA or the Prometheus address is missing (the CPU/memory HPA
scales instead) or KEDA has not accepted the ScaledObject.

compute_status puts together: rollout_state (what the Deployment says), _diagnosis (what the
pods say), ready_verdict and serving_from_rollout (the two decisions) and _condition (a
decision as a condition, its lastTransitionTime kept unless the status flips).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .builders import selector_string, service_url
from .names import ENV_MODEL_VERSION
from .pod_diagnosis import Diagnosis, current_pods, diagnose
from .rollout import ChallengerView

READY = "Ready"
SERVING = "ModelServing"
# Only when spec.serving.autoscaling.targetLatencyMilliseconds is set: does KEDA scale on it?
LATENCY_AUTOSCALING = "LatencyAutoscaling"
# Only with spec.canary or spec.shadow: does the challenger serve (or get evaluated)?
CHALLENGER = "Challenger"


@dataclass(frozen=True)
class Verdict:
    """One condition's decision, before it becomes a condition dict."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Autoscaler:
    """What scales the Deployment and, with a latency target, whether latency counts."""

    object: str | None  # "ScaledObject/<name>", "HorizontalPodAutoscaler/<name>", None
    latency: Verdict | None  # None: no latency target


@dataclass(frozen=True)
class Observed:
    """What a reconcile saw: the MLModel and its Deployment (None when missing)."""

    name: str
    namespace: str
    generation: int
    spec_version: str | None  # None when the spec did not parse
    deployment: dict[str, Any] | None
    previous_status: dict[str, Any]
    error: str | None = None  # spec or reconcile failure, already naming the field/call
    error_reason: str = "ReconcileFailed"
    alert_rules: str | None = None
    autoscaler: Autoscaler | None = None  # None: not applied (an error before)
    # The MLModel's pods (all templates; status picks the current ones). None: not read.
    pods: list[dict[str, Any]] | None = None
    # the name requests and metrics use (spec.model.name or metadata.name); None: no spec
    served_model: str | None = None
    # the canary's or shadow's state (rollout.py); None: no challenger in the spec
    challenger: ChallengerView | None = None
    # http or https (spec.serving.auth.tlsSecret); None: no spec read, keep the last URL
    url_scheme: str | None = None


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _template_version(dep: dict[str, Any]) -> str | None:
    # The builders put the version into the runtime's env (rolling the pods on a change).
    for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for e in c.get("env", []) or []:
            if e.get("name") == ENV_MODEL_VERSION:
                return e.get("value")
    return None


def _dep_condition(dep: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in dep.get("status", {}).get("conditions", []) or []:
        if c.get("type") == ctype:
            return c
    return None


@dataclass(frozen=True)
class Rollout:
    desired: int
    ready: int
    updated: int
    total: int
    available: int
    complete: bool
    stuck: bool
    pending: str | None  # why the controller has not acted on the latest template yet
    replica_failure: str | None = None  # e.g. pods refused by admission (PodSecurity, quota)


def rollout_state(dep: dict[str, Any], spec_version: str | None) -> Rollout:
    spec = dep.get("spec", {})
    st = dep.get("status", {}) or {}
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    pending = None
    if spec_version is not None and _template_version(dep) != spec_version:
        pending = (
            f"Deployment template has version {_template_version(dep)!r}, not {spec_version!r}"
        )
    elif int(st.get("observedGeneration") or 0) < int(
        dep.get("metadata", {}).get("generation") or 0
    ):
        pending = "the Deployment controller has not observed the latest template yet"
    progressing = _dep_condition(dep, "Progressing")
    stuck = bool(
        progressing
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    )
    complete = (
        pending is None
        and updated >= desired
        and total == updated
        and available >= desired
        and ready >= desired
    )
    failure = _dep_condition(dep, "ReplicaFailure")
    replica_failure = (
        failure.get("message") or failure.get("reason") or "ReplicaFailure"
        if failure and failure.get("status") == "True"
        else None
    )
    return Rollout(
        desired,
        ready,
        updated,
        total,
        available,
        complete,
        stuck and not complete,
        pending,
        replica_failure,
    )


def _condition(
    ctype: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: list[dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    last = now
    for p in previous:
        if p.get("type") == ctype and p.get("status") == status and p.get("lastTransitionTime"):
            last = p["lastTransitionTime"]  # only a status change is a transition
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": last,
    }


def _diagnosis(obs: Observed, dep: dict[str, Any]) -> Diagnosis | None:
    """Why the current template's pods are not ready, from the pods read (None: no cause)."""
    return diagnose(current_pods(obs.pods, dep)) if obs.pods else None


@dataclass(frozen=True)
class ServingState:
    """ModelServing's decision and the version it proves."""

    verdict: Verdict
    served: str | None  # the version known to serve (only meaningful when verdict.ok)


NO_READY_PODS = Verdict(False, "NoReadyPods", "no runtime pod is ready")


def serving_from_rollout(obs: Observed, r: Rollout) -> ServingState:
    """ModelServing: does any pod answer, and which version is that known to be?"""
    served_prev = (obs.previous_status or {}).get("servedVersion")
    if r.ready > 0:
        if r.complete:
            return ServingState(
                Verdict(True, "Serving", f"{r.ready} pod(s) serve version {obs.spec_version}"),
                obs.spec_version,
            )
        # Old and new pods may both be ready; only a finished rollout proves the version.
        return ServingState(
            Verdict(
                True,
                "ServingDuringRollout",
                f"{r.ready} pod(s) ready while the rollout to version "
                f"{obs.spec_version} is not complete"
                + (f"; version {served_prev} was served before" if served_prev else ""),
            ),
            served_prev,
        )
    if r.desired == 0:
        return ServingState(Verdict(False, "ScaledToZero", "replicas is 0"), None)
    return ServingState(NO_READY_PODS, None)


def stuck_message(obs: Observed, r: Rollout, diag: Diagnosis | None) -> str:
    # The pods say why a rollout is stuck; without a pod cause, the counts are all we have.
    if diag:
        return f"rollout of version {obs.spec_version} stuck: {diag.reason}: {diag.message}"
    return (
        f"rollout of version {obs.spec_version} made no progress for the "
        f"progress deadline: {r.updated} updated, {r.ready}/{r.desired} ready "
        "(check the pods' events and logs)"
    )


def ready_from_rollout(obs: Observed, r: Rollout, dep: dict[str, Any]) -> Verdict:
    """Ready, from the Deployment's rollout and (while it is not complete) the pods.

    The order is the precedence: a template the controller has not acted on yet says
    nothing about the pods, and a complete rollout is Ready whatever old pods do.
    """
    v = obs.spec_version
    if r.pending:
        return Verdict(False, "RolloutPending", r.pending)
    if r.desired == 0:
        return Verdict(False, "ScaledToZero", "replicas is 0: nothing serves the model")
    if r.complete:
        return Verdict(
            True, "AllReplicasReady", f"{r.ready}/{r.desired} pod(s) of version {v} ready"
        )
    if r.replica_failure:
        # The ReplicaSet cannot even create pods: say why (admission's own message).
        return Verdict(
            False, "ReplicaFailure", f"pods of version {v} cannot be created: {r.replica_failure}"
        )
    if r.stuck:
        # The Deployment's verdict stays the reason (what `kubectl wait`/alerts key on);
        # the pods say why.
        return Verdict(False, "RolloutStuck", stuck_message(obs, r, _diagnosis(obs, dep)))
    return ready_from_pods(obs, r, _diagnosis(obs, dep))


def ready_from_pods(obs: Observed, r: Rollout, diag: Diagnosis | None) -> Verdict:
    """Ready while a rollout moves: the pods' own cause when they show one, else progress."""
    if diag:
        return Verdict(
            False, diag.reason, f"version {obs.spec_version} is not ready: {diag.message}"
        )
    return Verdict(
        False,
        "RolloutInProgress",
        f"{r.updated}/{r.desired} pod(s) updated to version {obs.spec_version}, "
        f"{r.available} available, {r.total - r.updated} old pod(s) left",
    )


def ready_verdict(obs: Observed, r: Rollout | None) -> Verdict:
    """Ready: a failed reconcile first (its message names the cause), then the rollout."""
    if obs.error:
        return Verdict(False, obs.error_reason, obs.error)
    if r is None or obs.deployment is None:
        return Verdict(False, "DeploymentMissing", f"Deployment {obs.name} does not exist yet")
    return ready_from_rollout(obs, r, obs.deployment)


def compute_status(obs: Observed, now: str | None = None) -> dict[str, Any]:
    """The full .status to write (keys set to None are removed by a merge patch)."""
    now = now or utc_now()
    prev = obs.previous_status or {}
    prev_conds = prev.get("conditions") or []
    dep = obs.deployment
    r = rollout_state(dep, obs.spec_version) if dep is not None else None
    serving = serving_from_rollout(obs, r) if r is not None else ServingState(NO_READY_PODS, None)
    ready = ready_verdict(obs, r)
    replicas, ready_count, updated = (r.desired, r.ready, r.updated) if r else (0, 0, 0)

    def condition(ctype: str, v: Verdict) -> dict[str, Any]:
        return _condition(ctype, v.ok, v.reason, v.message, obs.generation, prev_conds, now)

    return {
        "observedGeneration": obs.generation,
        "phase": "Ready" if ready.ok else ready.reason,
        "replicas": replicas,
        "readyReplicas": ready_count,
        "updatedReplicas": updated,
        "readyReplicasText": f"{ready_count}/{replicas}",
        "selector": selector_string(obs.name),
        "url": (service_url(obs.name, obs.namespace, obs.url_scheme) if obs.url_scheme
                else prev.get("url") or service_url(obs.name, obs.namespace)),
        "servedModel": obs.served_model,
        "servedVersion": serving.served if serving.verdict.ok else None,
        "alertRules": obs.alert_rules if obs.alert_rules is not None else prev.get("alertRules"),
        "autoscaler": obs.autoscaler.object if obs.autoscaler else prev.get("autoscaler"),
        "conditions": [
            condition(READY, ready),
            condition(SERVING, serving.verdict),
            *_latency_condition(obs, prev_conds, condition),
            *_challenger_condition(obs, prev_conds, condition),
        ],
        **_challenger_fields(obs, prev, serving.served if serving.verdict.ok else None),
    }


def _challenger_fields(obs: Observed, prev: dict[str, Any],
                       served: str | None) -> dict[str, Any]:
    """challenger, versions and rolledBack (each None, i.e. removed, without a challenger;
    kept as they were when nothing was observed: a failed reconcile)."""
    if obs.error:
        return {k: prev.get(k) for k in ("challenger", "versions", "rolledBack")}
    view = obs.challenger
    if view is None:
        return {"challenger": None, "versions": None, "rolledBack": None}
    return {
        "challenger": {
            "mode": view.mode, "version": view.version, "weight": view.weight,
            "state": view.state, "reason": view.reason,
            "pods": f"{view.pods_serving}/{view.pods_reporting}",
        },
        "versions": versions_of(obs, view, served),
        "rolledBack": view.rolled_back,
    }


def versions_of(obs: Observed, view: ChallengerView, served: str | None) -> list[dict[str, Any]]:
    champion: dict[str, Any] = {"version": obs.spec_version, "role": "champion",
                                "weight": 100, "serving": served is not None}
    active = view.state == "Serving"
    challenger: dict[str, Any] = {"version": view.version, "role": view.mode, "weight": 0,
                                  "serving": active}
    if view.mode == "canary" and active and view.weight is not None:
        champion["weight"], challenger["weight"] = 100 - view.weight, view.weight
    return [champion, challenger]


def _challenger_condition(
    obs: Observed, prev_conds: list[dict[str, Any]], condition: Any
) -> list[dict[str, Any]]:
    if obs.error:
        return [c for c in prev_conds if c.get("type") == CHALLENGER]
    view = obs.challenger
    if view is None:
        return []
    reason = {"Serving": "Serving" if view.mode == "canary" else "Evaluated",
              "RolledBack": "RolledBack", "Loading": "Loading",
              "Unknown": "NotReported"}[view.state]
    return [condition(CHALLENGER, Verdict(view.state == "Serving", reason, view.reason))]


def _latency_condition(
    obs: Observed, prev_conds: list[dict[str, Any]], condition: Any
) -> list[dict[str, Any]]:
    """LatencyAutoscaling when a latency target is set; kept as it was when nothing was
    applied (a failed reconcile), absent otherwise."""
    if obs.autoscaler is None:
        return [c for c in prev_conds if c.get("type") == LATENCY_AUTOSCALING]
    if obs.autoscaler.latency is None:
        return []
    return [condition(LATENCY_AUTOSCALING, obs.autoscaler.latency)]


def status_differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True when writing `desired` would change something (skip no-op status writes)."""
    for k, v in desired.items():
        if v is None:
            if current.get(k) is not None:
                return True
        elif current.get(k) != v:
            return True
    return False
