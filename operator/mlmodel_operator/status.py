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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .builders import selector_string, service_url
from .pod_diagnosis import Diagnosis, current_pods, diagnose

READY = "Ready"
SERVING = "ModelServing"


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
    # The MLModel's pods (all templates; status picks the current ones). None: not read.
    pods: list[dict[str, Any]] | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _template_version(dep: dict[str, Any]) -> str | None:
    for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for e in c.get("env", []) or []:
            if e.get("name") == "MODEL_VERSION":
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


def compute_status(obs: Observed, now: str | None = None) -> dict[str, Any]:
    """The full .status to write (keys set to None are removed by a merge patch)."""
    now = now or _now()
    prev = obs.previous_status or {}
    prev_conds = prev.get("conditions") or []
    dep = obs.deployment
    served_prev = prev.get("servedVersion")

    ready_reason: str
    ready_msg: str
    ready_ok = False
    serving_ok = False
    serving_reason = "NoReadyPods"
    serving_msg = "no runtime pod is ready"
    replicas = ready = updated = 0
    served: str | None = None

    if dep is not None:
        r = rollout_state(dep, obs.spec_version)
        replicas, ready, updated = r.desired, r.ready, r.updated
        if r.ready > 0:
            serving_ok = True
            if r.complete:
                served = obs.spec_version
                serving_reason = "Serving"
                serving_msg = f"{r.ready} pod(s) serve version {served}"
            else:
                # Old and new pods may both be ready; only a finished rollout proves the version.
                served = served_prev
                serving_reason = "ServingDuringRollout"
                serving_msg = (
                    f"{r.ready} pod(s) ready while the rollout to version "
                    f"{obs.spec_version} is not complete"
                    + (f"; version {served_prev} was served before" if served_prev else "")
                )
        elif r.desired == 0:
            serving_reason, serving_msg = "ScaledToZero", "replicas is 0"

        if obs.error:
            ready_reason, ready_msg = obs.error_reason, obs.error
        elif r.pending:
            ready_reason, ready_msg = "RolloutPending", r.pending
        elif r.desired == 0:
            ready_reason, ready_msg = "ScaledToZero", "replicas is 0: nothing serves the model"
        elif r.complete:
            ready_ok = True
            ready_reason = "AllReplicasReady"
            ready_msg = f"{r.ready}/{r.desired} pod(s) of version {obs.spec_version} ready"
        elif r.replica_failure:
            # The ReplicaSet cannot even create pods: say why (admission's own message).
            ready_reason = "ReplicaFailure"
            ready_msg = f"pods of version {obs.spec_version} cannot be created: {r.replica_failure}"
        elif r.stuck:
            # The Deployment's verdict stays the reason (what `kubectl wait`/alerts key on);
            # the pods say why.
            ready_reason = "RolloutStuck"
            diag = _diagnosis(obs, dep)
            ready_msg = (
                f"rollout of version {obs.spec_version} stuck: {diag.reason}: {diag.message}"
                if diag
                else f"rollout of version {obs.spec_version} made no progress for the "
                f"progress deadline: {r.updated} updated, {r.ready}/{r.desired} ready "
                "(check the pods' events and logs)"
            )
        elif diag := _diagnosis(obs, dep):
            ready_reason = diag.reason
            ready_msg = f"version {obs.spec_version} is not ready: {diag.message}"
        else:
            ready_reason = "RolloutInProgress"
            ready_msg = (
                f"{r.updated}/{r.desired} pod(s) updated to version {obs.spec_version}, "
                f"{r.available} available, {r.total - r.updated} old pod(s) left"
            )
    elif obs.error:
        ready_reason, ready_msg = obs.error_reason, obs.error
    else:
        ready_reason, ready_msg = "DeploymentMissing", f"Deployment {obs.name} does not exist yet"

    conditions = [
        _condition(READY, ready_ok, ready_reason, ready_msg, obs.generation, prev_conds, now),
        _condition(
            SERVING, serving_ok, serving_reason, serving_msg, obs.generation, prev_conds, now
        ),
    ]
    return {
        "observedGeneration": obs.generation,
        "phase": "Ready" if ready_ok else ready_reason,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "readyReplicasText": f"{ready}/{replicas}",
        "selector": selector_string(obs.name),
        "url": service_url(obs.name, obs.namespace),
        "servedVersion": served if serving_ok else None,
        "alertRules": obs.alert_rules if obs.alert_rules is not None else prev.get("alertRules"),
        "conditions": conditions,
    }


def status_differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True when writing `desired` would change something (skip no-op status writes)."""
    for k, v in desired.items():
        if v is None:
            if current.get(k) is not None:
                return True
        elif current.get(k) != v:
            return True
    return False
