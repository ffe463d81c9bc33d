"""Health that tells the truth, metrics that count, logs without per-request lines, and
the multi-worker mode (reload reaches every worker; metrics summed over workers)."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
from sklearn.linear_model import LinearRegression

from serving_runtime import save_model


def tiny(bias: float = 0.0) -> LinearRegression:
    X = np.array([[0.0], [1.0], [2.0]])
    return LinearRegression().fit(X, X[:, 0] * 2 + bias)


def test_empty_models_dir_is_live_but_never_ready(tmp_path, start_server):
    (tmp_path / "models").mkdir()
    srv = start_server(tmp_path / "models")
    doc = srv.wait_startup_done()
    assert srv.client.get("/v2/health/live").status_code == 200
    assert srv.client.get("/v2/health/ready").status_code == 503
    assert doc["status"] == "degraded" and doc["ready"] is False
    assert doc["models_loaded"] == []
    assert "no model folders" in doc["reasons"][0]


def test_preload_names_a_missing_model(tmp_path, start_server):
    models = tmp_path / "models"
    save_model(tiny(), models / "present", version="1")
    srv = start_server(models, env={"PRELOAD_MODELS": "present,absent"})
    doc = srv.wait_startup_done()
    assert doc["ready"] is False and doc["status"] == "degraded"
    assert doc["models_loaded"] == ["present"]
    assert any(r.startswith("model absent: load failed") and "does not exist" in r
               for r in doc["reasons"]), doc
    assert srv.client.get("/v2/health/ready").status_code == 503
    assert srv.client.get("/v2/models/present/ready").json()["ready"] is True
    r = srv.client.post("/predict", json={"model_name": "present", "features": {"f0": [1.0]}})
    assert r.status_code == 200 and r.json()["prediction"] == [2.0]


def test_preload_subset_is_ready_with_only_those(tmp_path, start_server):
    models = tmp_path / "models"
    save_model(tiny(), models / "one", version="1")
    save_model(tiny(), models / "two", version="1")
    srv = start_server(models, args=["--preload-models", "two"])
    doc = srv.wait_startup_done()
    assert doc["ready"] is True and doc["status"] == "healthy"
    assert doc["models_loaded"] == ["two"]
    r = srv.client.post("/predict", json={"model_name": "one", "features": {"f0": [1.0]}})
    assert r.status_code == 404 and r.json()["detail"] == "Model one not found"


def metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_and_latency(zoo_server):
    c = zoo_server.client
    before = c.get("/metrics").text
    feats = {f"f{i}": [0.1] for i in range(6)}
    for _ in range(3):
        assert c.post("/predict", json={"model_name": "sk-binary", "features": feats}).is_success
    assert c.post("/predict", json={"model_name": "sk-binary", "features": {}}).status_code == 422
    assert c.post("/predict", json={"model_name": "zzz", "features": feats}).status_code == 404
    after = c.get("/metrics").text
    ok = 'inference_requests_total{model_name="sk-binary",status="success"}'
    bad = 'inference_requests_total{model_name="sk-binary",status="client_error"}'
    unknown = 'inference_requests_total{model_name="unknown",status="client_error"}'
    assert metric(after, ok) - metric(before, ok) == 3
    assert metric(after, bad) - metric(before, bad) == 1
    assert metric(after, unknown) - metric(before, unknown) == 1
    count = 'inference_latency_seconds_count{model_name="sk-binary"}'
    assert metric(after, count) - metric(before, count) == 3
    assert 'inference_latency_seconds_bucket{le="5e-05",model_name="sk-binary"}' in after
    assert 'inference_latency_seconds_bucket{le="0.00025",model_name="sk-binary"}' in after
    assert "inference_requests_in_flight 0.0" in after
    assert 'model_loaded{model_name="xgb-reg",version="1.0.0"} 1.0' in after


def test_batch_metrics_count_requests_and_one_latency_per_model(zoo_server):
    """A /predict/batch counts each of its requests as answered, and observes the time the
    caller waited once per model it used (docs/contracts.md)."""
    c = zoo_server.client
    before = c.get("/metrics").text
    one = {"f0": [0.1], "f1": [0.2], "f2": [0.3], "f3": [0.4], "f4": [0.5]}
    reqs = ([{"model_name": "sk-binary", "features": {**one, "f5": [0.6]}}] * 5
            + [{"model_name": "xgb-reg", "features": one}] * 2)
    assert c.post("/predict/batch", json={"requests": reqs}).status_code == 200
    after = c.get("/metrics").text
    for name, n in (("sk-binary", 5), ("xgb-reg", 2)):
        ok = f'inference_requests_total{{model_name="{name}",status="success"}}'
        count = f'inference_latency_seconds_count{{model_name="{name}"}}'
        assert metric(after, ok) - metric(before, ok) == n
        assert metric(after, count) - metric(before, count) == 1


def test_no_per_request_log_lines(zoo_server):
    before = zoo_server.logs().count("\n")
    feats = {f"f{i}": [0.1] for i in range(6)}
    for _ in range(20):
        zoo_server.client.post("/predict", json={"model_name": "sk-binary", "features": feats})
        zoo_server.client.post("/predict", json={"model_name": "sk-binary", "features": {}})
    time.sleep(0.2)
    assert zoo_server.logs().count("\n") == before


def test_two_workers_reload_everywhere_and_sum_metrics(tmp_path, start_server):
    models = tmp_path / "models"
    save_model(tiny(0.0), models / "m", version="1")
    srv = start_server(models, args=["--workers", "2"])
    srv.wait_live()
    deadline = time.monotonic() + 60
    # Readiness is per worker (each loads its own copy): wait until both have loaded,
    # not just the one that happens to answer the probe.
    while srv.logs().count('"message":"startup loading finished"') < 2:
        assert time.monotonic() < deadline, srv.logs()
        time.sleep(0.1)
    assert srv.client.get("/v2/health/ready").status_code == 200
    pids = set(re.findall(r'"runtime starting".*?"pid":(\d+)', srv.logs()))
    body = {"model_name": "m", "features": {"f0": [1.0]}}

    def fresh_post():  # a new connection each time, so both workers get requests
        return httpx.post(srv.url + "/predict", json=body, timeout=30)

    for _ in range(10):
        assert fresh_post().json()["prediction"] == [2.0]
    save_model(tiny(100.0), models / "m", version="2")
    assert srv.client.post("/reload/m").status_code == 202
    deadline = time.monotonic() + 30
    while True:  # every worker must have swapped: 30 fresh connections all see v2
        answers = [fresh_post().json()["model_version"] for _ in range(30)]
        if set(answers) == {"2"}:
            break
        assert time.monotonic() < deadline, answers
        time.sleep(0.5)
    assert srv.logs().count('"message":"model loaded","model_name":"m","version":"2"') == 2
    assert len(pids) == 2
    text = srv.client.get("/metrics").text
    assert metric(text, 'inference_requests_total{model_name="m",status="success"}') >= 40
