"""Status logic: what Ready/ModelServing say for each Deployment state."""

from __future__ import annotations

from mlmodel_operator import builders
from mlmodel_operator.spec import parse_spec
from mlmodel_operator.status import Observed, compute_status, status_differs

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="u", generation=2)
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def dep(
    version="2.0.0",
    *,
    replicas=2,
    ready=2,
    updated=2,
    total=2,
    available=2,
    gen=5,
    observed=5,
    progressing=None,
):
    raw = {
        "model": {"framework": "sklearn", "version": version, "uri": "https://h/m"},
        "serving": {"replicas": replicas},
    }
    d = builders.build_deployment(OWNER, parse_spec(raw), "img")
    d["metadata"]["generation"] = gen
    d["status"] = {
        "observedGeneration": observed,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": [],
    }
    if progressing:
        d["status"]["conditions"].append({"type": "Progressing", **progressing})
    return d


def status(d, *, version="2.0.0", previous=None, error=None, reason="ReconcileFailed", now=NOW):
    return compute_status(
        Observed(
            "fraud", "team-a", 2, version, d, previous or {}, error=error, error_reason=reason
        ),
        now=now,
    )


def cond(st, ctype):
    return next(c for c in st["conditions"] if c["type"] == ctype)


def test_ready_when_every_pod_of_the_current_template_is_ready():
    st = status(dep())
    r, s = cond(st, "Ready"), cond(st, "ModelServing")
    assert (r["status"], r["reason"], r["observedGeneration"]) == ("True", "AllReplicasReady", 2)
    assert (s["status"], s["reason"]) == ("True", "Serving")
    assert st["phase"] == "Ready"
    assert st["servedVersion"] == "2.0.0"
    assert (st["replicas"], st["readyReplicas"], st["readyReplicasText"]) == (2, 2, "2/2")
    assert st["url"] == "http://fraud.team-a.svc.cluster.local:8000"
    assert st["observedGeneration"] == 2
    assert (
        st["selector"] == "app.kubernetes.io/instance=fraud,app.kubernetes.io/name=n1v1-ml-serving"
    )


def test_rollout_in_progress_is_not_ready_but_old_pods_still_serve():
    prev = status(dep(version="1.0.0"), version="1.0.0")
    st = status(dep(ready=2, updated=1, total=3, available=2), previous=prev, now=LATER)
    r, s = cond(st, "Ready"), cond(st, "ModelServing")
    assert (r["status"], r["reason"]) == ("False", "RolloutInProgress")
    assert r["lastTransitionTime"] == LATER
    assert (s["status"], s["reason"]) == ("True", "ServingDuringRollout")
    assert s["lastTransitionTime"] == NOW  # still True: no transition
    assert "1.0.0" in s["message"]
    assert st["servedVersion"] == "1.0.0"  # only a finished rollout proves the new version


def test_stuck_rollout_is_never_ready():
    prev = status(dep(version="1.0.0"), version="1.0.0")
    st = status(
        dep(
            ready=2,
            updated=1,
            total=3,
            available=2,
            progressing={"status": "False", "reason": "ProgressDeadlineExceeded"},
        ),
        previous=prev,
    )
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("False", "RolloutStuck")
    assert st["phase"] == "RolloutStuck"
    assert st["servedVersion"] == "1.0.0"


def test_pods_refused_by_admission_say_why():
    d = dep(ready=0, updated=0, total=0, available=0)
    d["status"]["conditions"].append(
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'pods "fraud-x" is forbidden: violates PodSecurity "restricted:latest"',
        }
    )
    st = status(d)
    r = cond(st, "Ready")
    assert (r["status"], r["reason"]) == ("False", "ReplicaFailure")
    assert "violates PodSecurity" in r["message"]


def test_controller_not_caught_up_is_pending_even_if_counts_look_fine():
    st = status(dep(gen=6, observed=5))
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("False", "RolloutPending")


def test_template_of_another_version_is_pending():
    st = status(dep(version="1.0.0"), version="2.0.0")
    assert cond(st, "Ready")["reason"] == "RolloutPending"
    assert "2.0.0" in cond(st, "Ready")["message"]


def test_no_ready_pods():
    st = status(dep(ready=0, available=0))
    assert cond(st, "Ready")["status"] == "False"
    assert (cond(st, "ModelServing")["status"], cond(st, "ModelServing")["reason"]) == (
        "False",
        "NoReadyPods",
    )
    assert st["servedVersion"] is None


def test_scaled_to_zero():
    st = status(dep(replicas=0, ready=0, updated=0, total=0, available=0))
    assert cond(st, "Ready")["reason"] == "ScaledToZero"
    assert cond(st, "ModelServing")["reason"] == "ScaledToZero"
    assert st["readyReplicasText"] == "0/0"


def test_missing_deployment_and_errors():
    assert cond(status(None), "Ready")["reason"] == "DeploymentMissing"
    st = status(dep(), error="spec.model.uri: bad", reason="InvalidSpec")
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("False", "InvalidSpec")
    assert cond(st, "Ready")["message"] == "spec.model.uri: bad"
    assert cond(st, "ModelServing")["status"] == "True"  # the old pods still answer


def test_transition_time_only_moves_on_a_status_change():
    first = status(dep())
    again = status(dep(), previous=first, now=LATER)
    assert cond(again, "Ready")["lastTransitionTime"] == NOW
    assert not status_differs(first, again)
    broken = status(dep(ready=1, available=1), previous=first, now=LATER)
    assert cond(broken, "Ready")["lastTransitionTime"] == LATER
    assert status_differs(first, broken)


def test_status_differs_sees_removed_keys():
    assert status_differs({"servedVersion": "1"}, {"servedVersion": None})
    assert not status_differs({}, {"servedVersion": None})
