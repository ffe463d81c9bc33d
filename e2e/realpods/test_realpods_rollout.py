"""Rollouts and pod loss under keep-alive load through the Service, on real pods.

Every load loop is bounded (e2e/realpods/load.py: 120 s, 60,000 requests) and goes only to
the Service's ClusterIP on the suite's own bridge.
"""

from __future__ import annotations

import time

from e2e.helpers import wait_for
from e2e.realpods.cluster import (
    cluster_url,
    ready_endpoints,
    wait_old_pods_gone,
    wait_service_answers,
)
from e2e.realpods.load import KeepAliveLoad
from e2e.realpods.models import body, example, versioned_configmap


def serve_tiny_xgb(realpods, on_real_node, replicas: int) -> dict:
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    mlmodel["spec"]["serving"]["replicas"] = replicas
    realpods.apply(on_real_node(mlmodel, cpu="100m"))
    realpods.wait_ready("tiny-xgb", timeout=120)
    wait_for(lambda: len(ready_endpoints(realpods, "tiny-xgb")) == replicas, timeout=30,
             describe=f"{replicas} ready endpoints")
    # kube-proxy programs new endpoints a moment after the EndpointSlice: connections opened
    # before that all land on the first pod.
    wait_service_answers(cluster_url(realpods, "tiny-xgb"))
    time.sleep(2)
    return configmap


def test_rolling_update_under_load(realpods, on_real_node):
    """Version 1.0.0 -> 1.1.0 under load: 0 failed requests, each answer from one version,
    the switch visible in model_version, and only 1.1.0 at the end."""
    base = serve_tiny_xgb(realpods, on_real_node, replicas=2)
    realpods.apply(versioned_configmap(base, "tiny-xgb-model-v110", "1.1.0"))
    url = cluster_url(realpods, "tiny-xgb")
    with KeepAliveLoad(url, body()) as load:
        time.sleep(2)
        t0 = time.monotonic()
        realpods.patch_spec("tiny-xgb", {"model": {"version": "1.1.0",
                                                   "uri": "configmap://tiny-xgb-model-v110"}})
        realpods.wait_ready("tiny-xgb", timeout=120)
        rollout_s = time.monotonic() - t0
        # Ready counts the new pods; the old ones answer their kept-alive connections until
        # their drain says `Connection: close` (preStop + first answer after SIGTERM).
        wait_old_pods_gone(realpods, "tiny-xgb")
        drained_s = time.monotonic() - t0
        time.sleep(1)
        result = load.stop()
    print(f"rolling update: {result.sent} requests, {result.failed} failed, versions "
          f"{dict(result.versions)}, {result.closes} Connection: close, Ready {rollout_s:.1f}s, "
          f"old pods gone {drained_s:.1f}s after the patch")
    assert result.failed == 0, result.errors
    assert set(result.versions) == {"1.0.0", "1.1.0"}, result.versions
    assert set(result.last_versions) == {"1.1.0"}, result.last_versions
    assert realpods.mlm("tiny-xgb")["status"]["servedVersion"] == "1.1.0"


def test_broken_version_never_serves_and_old_pods_keep_serving(realpods, on_real_node):
    """A new version whose golden sample fails: its pods never become ready (the runtime exits
    3 with the reason), old pods answer every request, the status says why; fixing the spec
    completes the rollout."""
    base = serve_tiny_xgb(realpods, on_real_node, replicas=1)
    realpods.apply(versioned_configmap(base, "tiny-xgb-model-broken", "2.0.0",
                                       break_sample=True))
    realpods.apply(versioned_configmap(base, "tiny-xgb-model-fixed", "2.0.1"))
    url = cluster_url(realpods, "tiny-xgb")
    with KeepAliveLoad(url, body(), connections=2) as load:
        realpods.patch_spec("tiny-xgb", {"model": {"version": "2.0.0",
                                                   "uri": "configmap://tiny-xgb-model-broken"}})
        t0 = time.monotonic()
        stuck = realpods.wait_condition("tiny-xgb", "Ready", "False", "CrashLoopBackOff",
                                        timeout=90)
        said_s = time.monotonic() - t0
        ready = next(c for c in stuck["status"]["conditions"] if c["type"] == "Ready")
        serving = next(c for c in stuck["status"]["conditions"] if c["type"] == "ModelServing")
        assert "golden check failed" in ready["message"], ready
        assert serving["status"] == "True", serving  # the old version still serves
        assert len(ready_endpoints(realpods, "tiny-xgb")) == 1
        time.sleep(2)
        during = load.stop()
    print(f"broken version: status said CrashLoopBackOff {said_s:.1f}s after the patch; "
          f"{during.sent} requests, {during.failed} failed, versions {dict(during.versions)}")
    assert during.failed == 0, during.errors
    assert set(during.versions) == {"1.0.0"}, during.versions

    realpods.patch_spec("tiny-xgb", {"model": {"version": "2.0.1",
                                               "uri": "configmap://tiny-xgb-model-fixed"}})
    realpods.wait_ready("tiny-xgb", timeout=120)
    assert realpods.mlm("tiny-xgb")["status"]["servedVersion"] == "2.0.1"


def test_pod_deleted_under_keepalive_load(realpods, on_real_node):
    """Deleting a serving pod under keep-alive load fails no request: its readiness drops,
    it answers `Connection: close` while draining, and the clients reconnect to the other."""
    serve_tiny_xgb(realpods, on_real_node, replicas=2)
    url = cluster_url(realpods, "tiny-xgb")
    pods = realpods.list("pods", "app.kubernetes.io/instance=tiny-xgb")
    victim = pods[0]["metadata"]["name"]
    # 12 connections spread at random over 2 pods by kube-proxy: all on the survivor has a
    # chance of 2**-12, so the victim's drain is seen.
    with KeepAliveLoad(url, body(), connections=12) as load:
        time.sleep(2)
        t0 = time.monotonic()
        realpods.kubectl("delete", "pod", victim, "--wait=false")
        wait_for(lambda: realpods.get("pod", victim) is None, timeout=60,
                 describe=f"pod {victim} gone")
        gone_s = time.monotonic() - t0
        realpods.wait_ready("tiny-xgb", timeout=60)
        time.sleep(1)
        result = load.stop()
    print(f"pod deleted: {result.sent} requests, {result.failed} failed, {result.closes} "
          f"answered Connection: close, pod gone after {gone_s:.1f}s")
    assert result.failed == 0, result.errors
    assert result.closes >= 1, "no answer said Connection: close: the drain was not seen"


def test_hpa_scales_on_real_cpu(realpods, on_real_node):
    """metrics-server reads the pods' real CPU; load through the Service makes the HPA scale
    the MLModel from 1 to 2 replicas, and back to 1 once the load stops (the MLModel's
    scale-down stabilisation shortened from the HPA's 5 minutes to 15 s)."""
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    mlmodel["spec"]["serving"].pop("replicas", None)
    mlmodel["spec"]["serving"]["autoscaling"] = {
        "enabled": True, "minReplicas": 1, "maxReplicas": 2,
        "targetCPUUtilizationPercentage": 20, "targetMemoryUtilizationPercentage": 95,
        "scaleDownStabilizationSeconds": 15}
    realpods.apply(on_real_node(mlmodel, cpu="100m"))
    realpods.wait_ready("tiny-xgb", timeout=120)
    url = cluster_url(realpods, "tiny-xgb")
    wait_service_answers(url)
    t0 = time.monotonic()
    with KeepAliveLoad(url, body(), connections=6) as load:
        hpa = wait_for(lambda: (h := realpods.get("hpa", "tiny-xgb"))
                       and (h.get("status") or {}).get("desiredReplicas", 0) >= 2 and h,
                       timeout=110, describe="HPA desires 2 replicas",
                       observe=lambda: realpods.kubectl("get", "hpa", "-o", "wide").stdout)
        scaled_s = time.monotonic() - t0
        wait_for(lambda: len(ready_endpoints(realpods, "tiny-xgb")) == 2, timeout=60,
                 describe="2 ready endpoints")
        ready_s = time.monotonic() - t0
        result = load.stop()
    cpu = next(m for m in hpa["status"]["currentMetrics"] if m["resource"]["name"] == "cpu")
    print(f"HPA: desired 2 after {scaled_s:.1f}s, 2 ready endpoints after {ready_s:.1f}s, "
          f"cpu {cpu['resource']['current']}; {result.sent} requests, {result.failed} failed")
    assert cpu["resource"]["current"]["averageUtilization"] > 20, cpu
    assert result.failed == 0, result.errors
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 15
    t1 = time.monotonic()
    wait_for(lambda: (realpods.get("deploy", "tiny-xgb")["status"].get("replicas") == 1
                      and len(ready_endpoints(realpods, "tiny-xgb")) == 1),
             timeout=180, describe="back to 1 replica after the load stopped",
             observe=lambda: realpods.kubectl("get", "hpa", "-o", "wide").stdout)
    print(f"HPA: back to 1 replica {time.monotonic() - t1:.1f}s after the load stopped")
