"""A canary in the runtime pods the operator made, through the Service (docs/rollouts.md).

Every load loop is bounded (e2e/realpods/load.py) and goes only to the Service's ClusterIP
on the suite's own bridge.
"""

from __future__ import annotations

import json
import time

import httpx

from e2e.helpers import wait_for
from e2e.realpods.cluster import (
    cluster_url,
    ready_endpoints,
    wait_old_pods_gone,
    wait_service_answers,
)
from e2e.realpods.load import KeepAliveLoad
from e2e.realpods.models import ROW, body, example, versioned_configmap
from serving_runtime.server.rollout import SPLIT_BUCKETS, split_bucket
from tests.support.metrics_text import metric_sum

N_IDS = 2000


def pod_metric(ip: str, name: str, **labels: str) -> float:
    return metric_sum(httpx.get(f"http://{ip}:8000/metrics", timeout=5).text, name, **labels)


def test_ten_percent_canary_through_the_service(realpods, on_real_node):
    """Two pods, a 10% canary: the status shows both versions and the split; requests with
    ids through the Service meet exactly the version the id's hash names, whichever pod
    answers; the pods' per-version counters add up to the answers."""
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    realpods.apply(versioned_configmap(configmap, "tiny-xgb-model-v110", "1.1.0"))
    mlmodel["spec"]["serving"]["replicas"] = 2
    mlmodel["spec"]["canary"] = {"version": "1.1.0", "uri": "configmap://tiny-xgb-model-v110",
                                 "weight": 10}
    realpods.apply(on_real_node(mlmodel, cpu="100m"))
    realpods.wait_ready("tiny-xgb", timeout=150)
    st = realpods.wait_condition("tiny-xgb", "Challenger", "True", "Serving",
                                 timeout=60)["status"]
    assert st["versions"] == [
        {"version": "1.0.0", "role": "champion", "weight": 90, "serving": True},
        {"version": "1.1.0", "role": "canary", "weight": 10, "serving": True}], st
    assert st["challenger"]["pods"] == "2/2", st["challenger"]
    wait_for(lambda: len(ready_endpoints(realpods, "tiny-xgb")) == 2, timeout=30,
             describe="2 ready endpoints")
    url = cluster_url(realpods, "tiny-xgb")
    wait_service_answers(url)
    time.sleep(2)

    ids = [f"e2e-{i}" for i in range(N_IDS)]
    wrong, canary = [], 0
    with httpx.Client(base_url=url, timeout=10) as c:
        for cid in ids:
            r = c.post("/predict", json=body(), headers={"X-Correlation-ID": cid})
            assert r.status_code == 200, r.text
            version = r.json()["model_version"]
            expected = "1.1.0" if split_bucket(cid) < SPLIT_BUCKETS // 10 else "1.0.0"
            canary += version == "1.1.0"
            if version != expected:
                wrong.append((cid, version))
        pinned = c.post("/predict", json=body(), headers={"X-Model-Version": "1.1.0"})
    sd = (N_IDS * 0.1 * 0.9) ** 0.5
    print(f"10% canary through the Service: {canary}/{N_IDS} answers from 1.1.0")
    assert wrong == [], wrong[:10]
    assert abs(canary - N_IDS * 0.1) < 5 * sd, canary
    assert pinned.json()["model_version"] == "1.1.0"

    ips = ready_endpoints(realpods, "tiny-xgb")
    per_version = {v: sum(pod_metric(ip, "rollout_requests_total", version=v,
                                     status="success") for ip in ips)
                   for v in ("1.0.0", "1.1.0")}
    print(f"per-version answers counted by the pods: {per_version}")
    assert per_version == {"1.0.0": N_IDS - canary, "1.1.0": canary + 1}


def test_broken_canary_is_rolled_back_without_a_failed_request(realpods, on_real_node):
    """A canary whose golden sample fails, under keep-alive load: the runtime never lets it
    answer, the operator rolls it back (Event, Challenger=False RolledBack, status.rolledBack,
    the pods back to the champion alone), and no request fails."""
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    realpods.apply(versioned_configmap(configmap, "tiny-xgb-model-broken", "2.0.0",
                                       break_sample=True))
    mlmodel["spec"]["serving"]["replicas"] = 1
    realpods.apply(on_real_node(mlmodel, cpu="100m"))
    realpods.wait_ready("tiny-xgb", timeout=120)
    url = cluster_url(realpods, "tiny-xgb")
    wait_service_answers(url)
    with KeepAliveLoad(url, body(), connections=2) as load:
        time.sleep(1)
        t0 = time.monotonic()
        realpods.patch_spec("tiny-xgb", {"canary": {
            "version": "2.0.0", "uri": "configmap://tiny-xgb-model-broken", "weight": 50}})
        rolled = realpods.wait_condition("tiny-xgb", "Challenger", "False", "RolledBack",
                                         timeout=150)
        rolled_s = time.monotonic() - t0
        realpods.wait_ready("tiny-xgb", timeout=120)
        wait_old_pods_gone(realpods, "tiny-xgb")
        back_s = time.monotonic() - t0
        time.sleep(1)
        result = load.stop()
    st = rolled["status"]
    print(f"broken canary: rolled back {rolled_s:.1f}s after the patch, champion alone "
          f"{back_s:.1f}s after; {result.sent} requests, {result.failed} failed, versions "
          f"{dict(result.versions)}; reason: {st['rolledBack']['reason']}")
    assert result.failed == 0, result.errors
    assert set(result.versions) == {"1.0.0"}, result.versions
    assert st["rolledBack"]["version"] == "2.0.0"
    assert st["rolledBack"]["cause"] == "LoadFailed"
    assert "golden check failed" in st["rolledBack"]["reason"], st["rolledBack"]
    events = realpods.kubectl("get", "events", "--field-selector",
                              "reason=ChallengerRolledBack", "-o", "json").stdout
    assert "tiny-xgb" in events and "2.0.0" in events
    dep = realpods.get("deploy", "tiny-xgb")
    inits = [c["name"] for c in dep["spec"]["template"]["spec"]["initContainers"]]
    assert inits == ["fetch-model"], inits
    # the rollback holds while the spec names that version (the operator's resync or a
    # restart brings nothing back) ...
    assert realpods.mlm("tiny-xgb")["status"]["versions"][1]["serving"] is False
    # ... and a new canary version starts a new experiment
    realpods.apply(versioned_configmap(configmap, "tiny-xgb-model-v201", "2.0.1"))
    realpods.patch_spec("tiny-xgb", {"canary": {
        "version": "2.0.1", "uri": "configmap://tiny-xgb-model-v201", "weight": 50}})
    st = realpods.wait_condition("tiny-xgb", "Challenger", "True", "Serving",
                                 timeout=150)["status"]
    assert st.get("rolledBack") is None and st["versions"][1]["weight"] == 50
    realpods.wait_ready("tiny-xgb", timeout=120)  # no pod of the rolled-back template left
    wait_old_pods_gone(realpods, "tiny-xgb")
    r = httpx.post(f"{url}/predict", json={"model_name": "tiny-xgb", **ROW},
                   headers={"X-Model-Version": "2.0.1"}, timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == "2.0.1", r.text
    updates = [e["message"] for e in json.loads(realpods.kubectl(
        "get", "events", "--field-selector", "reason=Updated", "-o", "json").stdout)["items"]]
    print("Deployment updates:", updates)
