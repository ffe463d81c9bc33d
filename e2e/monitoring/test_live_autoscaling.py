"""Latency autoscaling for real: KEDA (built from its Go module) scales a slow model's
Deployment on the p95 that Prometheus computes from the runtime pods' histograms.

Path under test: MLModel (targetLatencyMilliseconds) -> operator -> ScaledObject -> KEDA
operator -> HPA keda-hpa-<name> -> kube-controller-manager asks external.metrics.k8s.io ->
KEDA's metrics API server -> KEDA operator -> Prometheus query -> Deployment replicas.
"""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

from e2e.monitoring.live import deploy, predict_body
from e2e.monitoring.prometheus import wait_seconds
from e2e.realpods.load import KeepAliveLoad

TARGET_MS = 25


def replicas(k8s: Any, ns: str, name: str) -> int:
    return int(k8s.apps.read_namespaced_deployment(name, ns).spec.replicas or 0)


def external_metric(k8s: Any, ns: str, hpa: str) -> tuple[float, float] | None:
    """(current value, target value) of the HPA's external (KEDA) metric, if it has one."""
    h = k8s.autoscaling.read_namespaced_horizontal_pod_autoscaler(hpa, ns)
    targets = [m.external.target.value for m in h.spec.metrics or [] if m.type == "External"]
    current = [m.external.current.value for m in (h.status.current_metrics or [])
               if m.type == "External" and m.external.current.value is not None]
    if not targets or not current:
        return None
    return float(parse_quantity(current[0])), float(parse_quantity(targets[0]))


def test_keda_scales_a_slow_model_out_on_p95_latency_and_back_in(
    monitored, real_node, model_site, tmp_path, prometheus, k8s
):
    ns, name = monitored.ns, "slow-keda"
    url, names = deploy(monitored, model_site, tmp_path, name, slow=True, serving={
        "autoscaling": {
            "enabled": True, "minReplicas": 1, "maxReplicas": 2,
            "targetLatencyMilliseconds": TARGET_MS,
            # request = limit: utilization cannot pass 100 %, so neither scales the model
            "targetCPUUtilizationPercentage": 100, "targetMemoryUtilizationPercentage": 100,
            "scaleDownStabilizationSeconds": 10}})
    mlm = monitored.wait_condition(name, "LatencyAutoscaling", "True", "ScaledByKEDA", 120)
    assert mlm["status"]["autoscaler"] == f"ScaledObject/{name}"
    assert monitored.get("hpa", name) is None  # the operator's own HPA gave way to KEDA's
    hpa = f"keda-hpa-{name}"
    wait_seconds(lambda: external_metric(k8s, ns, hpa), 120, f"{hpa} reading the p95", 2)
    idle, target = external_metric(k8s, ns, hpa)
    assert target == TARGET_MS / 1000 and idle < target, (idle, target)
    assert replicas(k8s, ns, name) == 1

    peak: list[tuple[float, float]] = []
    with KeepAliveLoad(url, predict_body(name, names), connections=4) as load:
        def scaled_out() -> bool:
            m = external_metric(k8s, ns, hpa)
            if m:
                peak.append(m)
            return replicas(k8s, ns, name) >= 2
        up = wait_seconds(scaled_out, 110, f"{name} scaled to 2 replicas", interval=1)
        monitored.wait_ready(name, timeout=120)  # the second pod serves too
    result = load.stop()
    seen = max(v for v, _ in peak)
    print(f"scaled 1 -> 2 {up:.1f}s after the load began (p95 seen by the HPA {seen * 1000:.0f}"
          f" ms, target {TARGET_MS} ms; {result.sent} requests, {result.failed} shed)")
    assert seen > target, peak  # it was the latency that scaled it
    # overloaded until the second pod is ready: only the runtime's own 503 shedding
    assert all(e.startswith("HTTP 503") and "overloaded" in e for e in result.errors), \
        result.errors

    down = wait_seconds(lambda: replicas(k8s, ns, name) == 1, 240,
                        f"{name} back to 1 replica after the load", interval=2)
    print(f"scaled 2 -> 1 {down:.1f}s after the load stopped")
    assert external_metric(k8s, ns, hpa)[0] < target


def test_without_a_prometheus_address_latency_autoscaling_is_reported_unavailable(
    run_operator, mlmodels, namespace, base_mlmodel, k8s
):
    """The default chart (no keda.enabled): the CPU/memory HPA, and status says why."""
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("no-keda", serving={"autoscaling": {
        "enabled": True, "targetLatencyMilliseconds": 20}}))
    mlm = mlmodels.wait_condition("no-keda", "LatencyAutoscaling", "False", "KEDANotEnabled", 60)
    cond = mlmodels.condition("no-keda", "LatencyAutoscaling")
    assert "CPU and memory only" in cond["message"] and "keda.enabled" in cond["message"]
    assert mlm["status"]["autoscaler"] == "HorizontalPodAutoscaler/no-keda"
    hpa = k8s.autoscaling.read_namespaced_horizontal_pod_autoscaler("no-keda", namespace)
    assert sorted(m.resource.name for m in hpa.spec.metrics) == ["cpu", "memory"]
    assert mlmodels.get("scaledobject", "no-keda") is None
