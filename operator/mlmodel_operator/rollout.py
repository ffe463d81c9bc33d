"""Pure rollout logic: the challenger's state in each pod in, its status and the rollback
decision out (docs/rollouts.md).

The runtime already stops using a challenger inside the pod the moment it fails its load,
its golden sample or its limits (serving_runtime/server/rollout.py), so no request waits for
the operator. The operator makes that durable for the MLModel: it records the rollback in
`.status.rolledBack` (which survives operator restarts, being in the object), writes an
Event and builds the Deployment without the challenger until the spec names another one.
Promotion is the user's one spec change: the canary's source becomes spec.model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import MLModelSpec

# the runtime's challenger states (serving_runtime/server/rollout.py)
RT_SERVING, RT_FAILED, RT_ROLLED_BACK = "serving", "failed", "rolled_back"


@dataclass(frozen=True)
class PodReport:
    """One ready pod's /health view of the model's challenger; state None: no answer."""

    pod: str
    state: str | None
    version: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ChallengerView:
    """What the status says about the challenger."""

    mode: str
    version: str
    weight: int | None
    state: str  # Serving | Loading | RolledBack | Unknown
    reason: str
    pods_serving: int
    pods_reporting: int
    rolled_back: dict[str, Any] | None  # the record to keep in .status.rolledBack


def rolled_back_record(spec: MLModelSpec, previous: dict[str, Any]) -> dict[str, Any] | None:
    """The earlier rollback of the spec's current challenger, if any: a record for another
    version or mode (the spec moved on) no longer applies."""
    rb = previous.get("rolledBack")
    ch = spec.challenger
    if not rb or ch is None:
        return None
    if rb.get("version") == ch.version and rb.get("mode") == ch.mode:
        return rb
    return None


def health_report(pod: str, doc: Any, served_name: str) -> PodReport:
    """A pod's /health document -> its report on the model's challenger."""
    if not isinstance(doc, dict):
        return PodReport(pod, None, reason="no /health answer")
    for m in doc.get("models") or []:
        if isinstance(m, dict) and m.get("name") == served_name:
            ch = m.get("challenger")
            if isinstance(ch, dict):
                return PodReport(pod, str(ch.get("state")), ch.get("version"), ch.get("reason"))
            return PodReport(pod, None, reason="the runtime reports no challenger")
    return PodReport(pod, None, reason=f"the runtime does not serve {served_name}")


def decide(spec: MLModelSpec, reports: list[PodReport], rolled_back: dict[str, Any] | None,
           now: str) -> ChallengerView | None:
    """The challenger's view for the status, and a new rollback record when a pod
    reports the challenger failed or rolled back. None without a challenger in the spec."""
    ch = spec.challenger
    if ch is None:
        return None
    weight = spec.canary.weight if spec.canary is not None else None

    def view(state: str, reason: str, record: dict[str, Any] | None,
             serving: int = 0) -> ChallengerView:
        return ChallengerView(ch.mode, ch.version, weight, state, reason, serving,
                              len(reports), record)

    if rolled_back is not None:
        return view("RolledBack", str(rolled_back.get("reason", "")), rolled_back)
    for r in reports:
        if r.state in (RT_FAILED, RT_ROLLED_BACK):
            what = "failed to load" if r.state == RT_FAILED else "was rolled back"
            reason = f"{ch.mode} {ch.version} {what} in pod {r.pod}: {r.reason}"
            record = {"mode": ch.mode, "version": ch.version, "reason": reason, "at": now,
                      "cause": "LoadFailed" if r.state == RT_FAILED else "LimitExceeded"}
            return view("RolledBack", reason, record)
    serving = sum(1 for r in reports if r.state == RT_SERVING)
    if not reports:
        return view("Unknown", "no ready pod of the current template has reported yet", None)
    # A pod that did not answer this time (a busy worker, a timeout) says nothing new: the
    # state follows the pods that did, so one slow answer does not flip the condition.
    answered = [r for r in reports if r.state is not None]
    if answered and serving == len(answered):
        doing = f"answers {weight}% of requests" if weight is not None else "is evaluated"
        return view("Serving", f"{ch.mode} {ch.version} {doing} in {serving} pod(s)", None,
                    serving)
    if not answered:
        return view("Unknown", f"no pod answered /health ({reports[0].pod}: "
                    f"{reports[0].reason})", None)
    waiting = [r for r in answered if r.state != RT_SERVING]
    return view("Loading", f"{len(waiting)} pod(s) not reporting it serving yet"
                f" ({waiting[0].pod}: {waiting[0].state or waiting[0].reason})", None, serving)
