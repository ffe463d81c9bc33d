"""Which autoscaler a reconcile applies, and what the status says about latency: KEDA's
ScaledObject only when the operator has a Prometheus address and KEDA's CRD is served, else
the CPU/memory HPA with LatencyAutoscaling=False naming what is missing. (A fake API client:
the same paths run against real KEDA in e2e/monitoring.)"""

from __future__ import annotations

from typing import Any

from mlmodel_operator import builders
from mlmodel_operator.apply import ApplyResult

from tests.operator.test_operator_reconcile_pods import OWNER, FakeKube, run

KEDA = ("keda.sh/v1alpha1", "scaledobjects")
PODMONITORS = ("monitoring.coreos.com/v1", "podmonitors")
PROM = builders.Monitoring("http://prometheus.monitoring.svc:9090", "30s", 5)


class AutoscalingKube(FakeKube):
    def __init__(self, served: set[tuple[str, str]], keda_ready: str | None = None) -> None:
        super().__init__([])
        self.served = served
        self.keda_ready = keda_ready
        self.discovered: list[tuple[str, str]] = []
        self.applied: list[str] = []
        self.deletes: list[tuple[str, str]] = []  # (kind, name) asked to delete

    def has_resource(self, group_version: str, plural: str, ttl: float = 30.0) -> bool:
        self.discovered.append((group_version, plural))
        return (group_version, plural) in self.served

    def apply(self, manifest: dict[str, Any], owner_uid: str) -> ApplyResult:
        self.applied.append(manifest["kind"])
        res = super().apply(manifest, owner_uid)
        if manifest["kind"] == "ScaledObject" and self.keda_ready is not None:
            res.obj["status"] = {"conditions": [
                {"type": "Ready", "status": self.keda_ready, "reason": "ScaledObjectReady",
                 "message": "ScaledObject is defined correctly and is ready for scaling"
                 if self.keda_ready == "True" else "Triggers defined in ScaledObject are not "
                 "working correctly"}]}
        return res

    def delete_owned(self, api_version: str, kind: str, ns: str, name: str, uid: str) -> bool:
        self.deletes.append((kind, name))
        return True  # as if the other autoscaler existed: the switch must remove it


def latency_spec(kube: FakeKube, **autoscaling: Any) -> None:
    kube.body["spec"]["serving"]["autoscaling"] = {
        "enabled": True, "targetLatencyMilliseconds": 20, **autoscaling}


def latency_condition(st: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in st["conditions"] if c["type"] == "LatencyAutoscaling"), None)


def test_keda_scales_when_it_is_served_and_prometheus_is_configured():
    kube = AutoscalingKube({KEDA}, keda_ready="True")
    latency_spec(kube)
    st = run(kube, monitoring=PROM)
    assert "ScaledObject" in kube.applied and "HorizontalPodAutoscaler" not in kube.applied
    assert ("HorizontalPodAutoscaler", OWNER.name) in kube.deletes  # never two autoscalers
    assert st["autoscaler"] == f"ScaledObject/{OWNER.name}"
    cond = latency_condition(st)
    assert (cond["status"], cond["reason"]) == ("True", "ScaledByKEDA")
    assert "20 ms" in cond["message"]


def test_keda_not_yet_ready_is_not_reported_as_working():
    for ready, reason in ((None, "WaitingForKEDA"), ("False", "ScaledObjectNotReady")):
        kube = AutoscalingKube({KEDA}, keda_ready=ready)
        latency_spec(kube)
        cond = latency_condition(run(kube, monitoring=PROM))
        assert (cond["status"], cond["reason"]) == ("False", reason)
    assert "not working correctly" in cond["message"]  # KEDA's own words


def test_without_keda_the_hpa_scales_on_cpu_and_memory_and_status_says_why():
    kube = AutoscalingKube(set())
    latency_spec(kube)
    st = run(kube, monitoring=PROM)
    assert "ScaledObject" not in kube.applied and "HorizontalPodAutoscaler" in kube.applied
    assert st["autoscaler"] == f"HorizontalPodAutoscaler/{OWNER.name}"
    cond = latency_condition(st)
    assert (cond["status"], cond["reason"]) == ("False", "KEDAUnavailable")
    assert "not installed" in cond["message"] and "CPU and memory only" in cond["message"]
    assert ("Warning", "KEDAUnavailable") in {(t, r) for t, r, _ in kube.events}


def test_without_a_prometheus_address_scaled_objects_are_never_touched():
    # The chart grants ScaledObject RBAC only with keda.enabled, which also sets the address.
    kube = AutoscalingKube({KEDA})
    latency_spec(kube)
    st = run(kube, monitoring=builders.Monitoring())
    assert KEDA not in kube.discovered
    assert all(kind != "ScaledObject" for kind, _ in kube.deletes)
    assert "ScaledObject" not in kube.applied
    assert latency_condition(st)["reason"] == "KEDANotEnabled"


def test_no_latency_target_removes_our_scaled_object_and_has_no_latency_condition():
    kube = AutoscalingKube({KEDA})
    kube.body["spec"]["serving"]["autoscaling"] = {"enabled": True}
    st = run(kube, monitoring=PROM)
    assert ("ScaledObject", OWNER.name) in kube.deletes
    assert kube.applied.count("HorizontalPodAutoscaler") == 1
    assert latency_condition(st) is None


def test_autoscaling_off_removes_the_hpa_and_reports_no_autoscaler():
    kube = AutoscalingKube(set())
    st = run(kube, monitoring=PROM)
    assert ("HorizontalPodAutoscaler", OWNER.name) in kube.deletes
    assert st.get("autoscaler") is None and latency_condition(st) is None


def test_a_pod_monitor_only_where_prometheus_operator_serves_them():
    with_crd = AutoscalingKube({PODMONITORS})
    run(with_crd, monitoring=PROM)
    assert "PodMonitor" in with_crd.applied
    without = AutoscalingKube(set())
    run(without, monitoring=PROM)
    assert "PodMonitor" not in without.applied
