"""The operator's four alerts fire in a real Prometheus from real scrapes, and (where the
rule allows within a test's time) resolve once the cause is gone.

Path under test: MLModel -> operator -> PrometheusRule + PodMonitor -> prometheus-operator
-> Prometheus' rule files and scrape config -> scrapes of the runtime pods -> ALERTS.
Each test prints the seconds from cause to firing (and to resolving) for the note.
"""

from __future__ import annotations

import time

import httpx

from e2e.monitoring.live import (
    deploy,
    model_health,
    not_firing_for,
    predict_body,
    reload,
    run_in_pod,
    wait_rule_loaded,
    wait_scraped,
)
from e2e.monitoring.prometheus import wait_seconds
from e2e.realpods.load import KeepAliveLoad

FOR = "4s"  # short `for:` in the tests; the default stays 5m

BREAK = """
import json, os, pathlib
d = pathlib.Path('/app/models/{name}')
art = d / json.loads((d / 'metadata.json').read_text())['artifact']
os.rename(art, str(art) + '.good')
art.write_bytes(b'not a model')
"""
RESTORE = """
import json, os, pathlib
d = pathlib.Path('/app/models/{name}')
art = d / json.loads((d / 'metadata.json').read_text())['artifact']
os.replace(str(art) + '.good', art)
"""


def test_a_broken_reload_fires_the_load_failure_alert_and_fixing_it_resolves_it(
    monitored, real_node, model_site, tmp_path, prometheus, k8s
):
    ns, name = monitored.ns, "reload-alert"
    url, names = deploy(monitored, model_site, tmp_path, name, alerting={"for": FOR})
    wait_rule_loaded(prometheus, "MLModelLoadFailures", ns)
    wait_scraped(prometheus, ns, name)
    not_firing_for(prometheus, "MLModelLoadFailures", ns, 6)
    selector = f"app.kubernetes.io/instance={name}"
    (pod,) = [p["metadata"]["name"] for p in monitored.list("pods", selector)]

    # The artifact under the running runtime is replaced by garbage, then a reload is asked.
    run_in_pod(monitored, k8s, pod, "break-artifact", BREAK.format(name=name))
    t0 = time.monotonic()
    reload(url, name)
    fired = wait_seconds(lambda: prometheus.firing("MLModelLoadFailures", ns), 90,
                         "MLModelLoadFailures firing")
    print(f"MLModelLoadFailures firing {fired:.1f}s after the broken reload")
    # the old version kept serving and /health says why the new one did not load
    health = model_health(url, name)
    assert health["state"] == "ready" and health["error"], health
    r = httpx.post(f"{url}/predict", json=predict_body(name, names, 5), timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == "1.0.0", r.text
    (alert,) = prometheus.alerts("MLModelLoadFailures", ns)
    assert alert["labels"]["mlmodel"] == name and alert["labels"]["pod"] == pod, alert

    run_in_pod(monitored, k8s, pod, "restore-artifact", RESTORE.format(name=name))
    reload(url, name)
    resolved = wait_seconds(lambda: not prometheus.firing("MLModelLoadFailures", ns), 90,
                            "MLModelLoadFailures resolved after a good reload")
    print(f"MLModelLoadFailures resolved {resolved:.1f}s after the good reload "
          f"({time.monotonic() - t0:.0f}s after the broken one)")
    assert model_health(url, name)["error"] is None


def test_bad_requests_above_the_threshold_fire_the_error_rate_alert(
    monitored, real_node, model_site, tmp_path, prometheus
):
    ns, name = monitored.ns, "errors-alert"
    url, names = deploy(monitored, model_site, tmp_path, name,
                        alerting={"for": FOR, "errorRateThresholdPercent": 10})
    wait_rule_loaded(prometheus, "MLModelHighErrorRate", ns)
    wait_scraped(prometheus, ns, name)
    good = predict_body(name, names, 5)
    bad = {"model_name": name, "features": {names[0]: [1.0]}}  # features missing: a 422
    with httpx.Client(timeout=10) as client:
        for _ in range(20):  # a clean history first: good requests only, no alert
            assert client.post(f"{url}/predict", json=good).status_code == 200
        not_firing_for(prometheus, "MLModelHighErrorRate", ns, 6)
        refused = 0

        def burst_and_check() -> bool:
            nonlocal refused
            for body in (good, bad, bad):  # two of three requests refused, for a few seconds
                r = client.post(f"{url}/predict", json=body)
                if body is bad:
                    assert r.status_code == 422 and names[1] in r.text, r.text
                    refused += 1
            return prometheus.firing("MLModelHighErrorRate", ns)

        fired = wait_seconds(burst_and_check, 120, "MLModelHighErrorRate firing", interval=0.2)
    print(f"MLModelHighErrorRate firing {fired:.1f}s after bad requests began "
          f"({refused} refused)")
    assert refused <= 3000  # bounded: the loop stops as soon as the alert fires
    (alert,) = prometheus.alerts("MLModelHighErrorRate", ns)
    assert float(alert["value"]) > 0.1, alert


def test_the_latency_alert_fires_under_the_slow_models_load(
    monitored, real_node, model_site, tmp_path, prometheus
):
    ns, name = monitored.ns, "slow-alert"
    url, names = deploy(monitored, model_site, tmp_path, name, slow=True,
                        alerting={"for": FOR, "latencyP95ThresholdMilliseconds": 25})
    wait_rule_loaded(prometheus, "MLModelHighLatencyP95", ns)
    wait_scraped(prometheus, ns, name)
    not_firing_for(prometheus, "MLModelHighLatencyP95", ns, 6)
    with KeepAliveLoad(url, predict_body(name, names), connections=4) as load:
        fired = wait_seconds(lambda: prometheus.firing("MLModelHighLatencyP95", ns), 100,
                             "MLModelHighLatencyP95 firing", interval=1)
    result = load.stop()
    print(f"MLModelHighLatencyP95 firing {fired:.1f}s after the load began "
          f"({result.sent} requests, {result.failed} shed)")
    # Four connections on half a core overload it on purpose: the runtime may shed with its
    # 503 (retry-after), never fail otherwise.
    assert all(e.startswith("HTTP 503") and "overloaded" in e for e in result.errors), \
        result.errors
    (alert,) = prometheus.alerts("MLModelHighLatencyP95", ns)
    assert float(alert["value"]) > 0.025, alert


def test_the_service_down_alert_fires_when_every_pod_is_gone(
    monitored, real_node, model_site, tmp_path, prometheus, k8s
):
    ns, name = monitored.ns, "down-alert"
    deploy(monitored, model_site, tmp_path, name, alerting={"for": FOR})
    wait_rule_loaded(prometheus, "MLModelServiceDown", ns)
    wait_scraped(prometheus, ns, name)
    not_firing_for(prometheus, "MLModelServiceDown", ns, 6)

    monitored.patch_spec(name, {"serving": {"replicas": 0}})
    gone = wait_seconds(lambda: not monitored.list("pods", f"app.kubernetes.io/instance={name}"),
                        90, "every pod gone")
    fired = wait_seconds(lambda: prometheus.firing("MLModelServiceDown", ns), 90,
                         "MLModelServiceDown firing")
    print(f"MLModelServiceDown firing {fired:.1f}s after the last pod was gone "
          f"({gone + fired:.1f}s after replicas: 0)")
    monitored.patch_spec(name, {"serving": {"replicas": 1}})
    resolved = wait_seconds(lambda: not prometheus.firing("MLModelServiceDown", ns), 180,
                            "MLModelServiceDown resolved once a pod is back")
    print(f"MLModelServiceDown resolved {resolved:.1f}s after replicas: 1")
