"""Status with pods: Ready names the pod-level cause of the current template only."""

from __future__ import annotations

from typing import Any

from mlmodel_operator.status import Observed, compute_status, status_differs

from tests.operator.pod_fixtures import (
    crashloop_waiting,
    deployment,
    fetch_failing,
    ready_pod,
    runtime_state,
    terminated,
    unschedulable_pod,
)

NOW = "2026-03-02T09:20:00Z"
LATER = "2026-03-02T09:21:00Z"
GOLDEN = "model fraud failed to load: golden check failed: probabilities differ from sample.json"


def with_status(
    dep: dict[str, Any],
    *,
    ready: int,
    updated: int,
    total: int,
    available: int,
    stuck: bool = False,
) -> dict[str, Any]:
    dep["metadata"]["generation"] = 3
    conditions = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
        },
        {
            "type": "Progressing",
            "status": "False" if stuck else "True",
            "reason": "ProgressDeadlineExceeded" if stuck else "ReplicaSetUpdated",
            "message": f'ReplicaSet "fraud-6d4f9c8b7" '
            f"{'has timed out progressing' if stuck else 'is progressing'}.",
        },
    ]
    dep["status"] = {
        "observedGeneration": 3,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
        "conditions": conditions,
    }
    return dep


def status(
    dep: dict[str, Any] | None,
    pods: list[dict[str, Any]] | None,
    *,
    version: str = "2.0.0",
    previous: dict[str, Any] | None = None,
    now: str = NOW,
) -> dict[str, Any]:
    return compute_status(
        Observed("fraud", "team-a", 2, version, dep, previous or {}, pods=pods), now=now
    )


def cond(st: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == ctype)


def old_ready(i: int) -> dict[str, Any]:
    return ready_pod(deployment("1.0.0"), name=f"fraud-5c7b8d9f4-old{i}", template_hash="5c7b8d9f4")


def old_version_oom_pod(name: str) -> dict:
    """A pod of the previous template (version 1.0.0), crash-looping after an OOM kill."""
    return runtime_state(
        crashloop_waiting("runtime"),
        terminated(137, "OOMKilled"),
        dep=deployment("1.0.0"),
        name=name,
        template_hash="5c7b8d9f4",
    )


def test_unschedulable_surge_pod_is_named_while_old_pods_serve():
    dep = with_status(deployment(), ready=2, updated=1, total=3, available=2)
    pods = [old_ready(0), old_ready(1), unschedulable_pod(dep)]
    prev = {"servedVersion": "1.0.0"}
    st = status(dep, pods, previous=prev)
    r, s = cond(st, "Ready"), cond(st, "ModelServing")
    assert (r["status"], r["reason"]) == ("False", "Unschedulable")
    assert st["phase"] == "Unschedulable"
    assert "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity" in r["message"]
    assert "version 2.0.0" in r["message"]
    # ModelServing is unchanged: the old version still answers.
    assert (s["status"], s["reason"]) == ("True", "ServingDuringRollout")
    assert st["servedVersion"] == "1.0.0"


def test_stuck_rollout_carries_the_pod_cause():
    dep = with_status(deployment(), ready=2, updated=1, total=3, available=2, stuck=True)
    crash = runtime_state(crashloop_waiting("runtime"), terminated(3, message=GOLDEN), dep=dep)
    st = status(dep, [old_ready(0), old_ready(1), crash])
    r = cond(st, "Ready")
    assert (r["status"], r["reason"]) == ("False", "RolloutStuck")
    assert st["phase"] == "RolloutStuck"
    assert r["message"].startswith("rollout of version 2.0.0 stuck: CrashLoopBackOff: ")
    assert "exit code 3" in r["message"] and GOLDEN in r["message"]
    assert cond(st, "ModelServing")["status"] == "True"


def test_stuck_rollout_without_a_pod_cause_keeps_the_old_message():
    dep = with_status(deployment(), ready=2, updated=1, total=3, available=2, stuck=True)
    loading = runtime_state({"running": {"startedAt": "2026-03-02T09:15:00Z"}}, dep=dep)
    r = cond(status(dep, [old_ready(0), loading]), "Ready")
    assert r["reason"] == "RolloutStuck" and "made no progress" in r["message"]


def test_fetch_failure_of_a_new_model():
    dep = with_status(deployment(), ready=0, updated=2, total=2, available=0)
    tail = "fetch: error: model.joblib: sha256 is 9f86d08188 but the pin is 2c26b46b68\n"
    st = status(dep, [fetch_failing(4, tail)])
    r = cond(st, "Ready")
    assert (r["reason"], st["phase"]) == ("FetchSha256Mismatch", "FetchSha256Mismatch")
    assert "sha256 is 9f86d08188" in r["message"]
    assert (cond(st, "ModelServing")["status"], cond(st, "ModelServing")["reason"]) == (
        "False",
        "NoReadyPods",
    )


def test_old_version_crash_does_not_fail_a_complete_rollout():
    dep = with_status(deployment(), ready=2, updated=2, total=2, available=2)
    new = [ready_pod(dep, name=f"fraud-6d4f9c8b7-new{i}") for i in range(2)]
    # An old pod still terminating, crash-looping on its way out, and one not yet deleted.
    dying = runtime_state(
        crashloop_waiting("runtime"),
        terminated(3, message="model fraud failed to load: version 1"),
        dep=deployment("1.0.0"),
        name="fraud-5c7b8d9f4-old0",
        template_hash="5c7b8d9f4",
    )
    old_oom = old_version_oom_pod("fraud-5c7b8d9f4-old1")
    dying["metadata"]["deletionTimestamp"] = NOW
    st = status(dep, [*new, dying, old_oom])
    r = cond(st, "Ready")
    assert (r["status"], r["reason"]) == ("True", "AllReplicasReady")
    assert st["servedVersion"] == "2.0.0"


def test_old_version_crash_is_not_blamed_on_a_rolling_new_version():
    dep = with_status(deployment(), ready=1, updated=1, total=2, available=1)
    old_crash = old_version_oom_pod("fraud-5c7b8d9f4-old0")
    new_loading = runtime_state({"running": {"startedAt": "2026-03-02T09:15:00Z"}}, dep=dep)
    r = cond(status(dep, [old_crash, new_loading, old_ready(1)]), "Ready")
    assert r["reason"] == "RolloutInProgress"


def test_new_version_cause_is_not_blamed_on_the_old_one_after_a_revert():
    # 1.0.0 -> 2.0.0 (crash-loops) -> back to 1.0.0: the 2.0.0 pods are the old ones now.
    v1 = with_status(deployment("1.0.0"), ready=2, updated=2, total=3, available=2)
    broken_v2 = runtime_state(
        crashloop_waiting("runtime"), terminated(3, message=GOLDEN), dep=deployment("2.0.0")
    )
    r = cond(status(v1, [old_ready(0), old_ready(1), broken_v2], version="1.0.0"), "Ready")
    assert r["reason"] == "RolloutInProgress"


def test_the_status_does_not_churn_through_a_crash_loop():
    dep = with_status(deployment(), ready=0, updated=2, total=2, available=0)
    last = terminated(3, message=GOLDEN)
    first = status(dep, [runtime_state(crashloop_waiting("runtime", "10s"), last, dep=dep)])
    again = status(
        dep,
        [runtime_state({"running": {"startedAt": LATER}}, last, dep=dep, restarts=7)],
        previous=first,
        now=LATER,
    )
    assert cond(first, "Ready")["reason"] == "CrashLoopBackOff"
    assert not status_differs(first, again)


def test_pending_template_and_missing_pods_keep_their_reasons():
    dep = with_status(deployment("1.0.0"), ready=0, updated=0, total=1, available=0)
    st = status(dep, [unschedulable_pod(deployment("2.0.0"))], version="2.0.0")
    assert cond(st, "Ready")["reason"] == "RolloutPending"
    dep2 = with_status(deployment(), ready=0, updated=1, total=1, available=0)
    assert cond(status(dep2, None), "Ready")["reason"] == "RolloutInProgress"
    assert cond(status(dep2, []), "Ready")["reason"] == "RolloutInProgress"
    assert cond(status(None, [unschedulable_pod()]), "Ready")["reason"] == "DeploymentMissing"
