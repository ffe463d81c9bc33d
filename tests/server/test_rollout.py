"""A model's challenger in a real server (`python -m serving_runtime` on loopback): the
canary's split, pinning, per-version metrics, the shadow's exact disagreement counts, and
the runtime's own rollback (docs/rollouts.md)."""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier

from serving_runtime import save_model
from serving_runtime.models.folder_format import challenger_folder
from serving_runtime.server.rollout import (
    SPLIT_BUCKETS,
    Challenger,
    ChallengerConfig,
    compare_outputs,
    parse_challengers,
    split_bucket,
)
from tests.support.metrics_text import metric_sum as metric

N_SPLIT = 10_000


def linear(bias: float) -> LinearRegression:
    """y = a + b + bias: the answer tells which version produced it."""
    X = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    return LinearRegression().fit(X, X.sum(axis=1) + bias)


def stump(threshold_point: float) -> DecisionTreeClassifier:
    """One split on x at the midpoint of `threshold_point` and 1.0: label 1 above it."""
    X = np.array([[threshold_point], [1.0]])
    return DecisionTreeClassifier().fit(X, [0, 1])


def write_pair(models_dir: Path, name: str, champion, challenger, *, versions=("1", "2"),
               feature_names=None) -> None:
    save_model(champion, models_dir / name, version=versions[0], feature_names=feature_names)
    save_model(challenger, challenger_folder(models_dir, name), version=versions[1],
               feature_names=feature_names)


def wait_for(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def predict(client: httpx.Client, name: str, feats: dict, cid: str | None = None,
            pin: str | None = None) -> httpx.Response:
    headers = {"X-Correlation-ID": cid} if cid else {}
    if pin is not None:
        headers["X-Model-Version"] = pin
    return client.post("/predict", json={"model_name": name, "features": feats},
                       headers=headers)


# --- pure parts ---------------------------------------------------------------------


def test_split_bucket_is_stable_and_uniform() -> None:
    assert split_bucket("order-42") == split_bucket("order-42")
    buckets = [split_bucket(uuid.uuid4().hex) for _ in range(N_SPLIT)]
    assert min(buckets) >= 0 and max(buckets) < SPLIT_BUCKETS
    # 10 equal ranges: each within 5 standard deviations of N/10 (binomial, p = 0.1)
    counts = np.bincount(np.array(buckets) * 10 // SPLIT_BUCKETS, minlength=10)
    sd = (N_SPLIT * 0.1 * 0.9) ** 0.5
    assert all(abs(c - N_SPLIT / 10) < 5 * sd for c in counts), counts


@pytest.mark.parametrize("text, message", [
    ("[1]", "must be a JSON object"),
    ("{bad", "is not JSON"),
    ('{"../x": {"mode": "canary"}}', "cannot name a model"),
    ('{"m": {"mode": "blue"}}', "mode"),
    ('{"m": {"mode": "canary", "weight": 101}}', "weight"),
    ('{"m": {"mode": "shadow", "weight": 5}}', "apply to canary only"),
    ('{"m": {"mode": "canary", "colour": 1}}', "colour"),
    ('{"m": {"mode": "shadow", "max_error_rate_percent": 5}}', "the limits apply to canary"),
])
def test_challengers_setting_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_challengers(text)


def test_limits_roll_back_after_min_requests_only() -> None:
    ch = Challenger("m", ChallengerConfig(mode="canary", weight=50, max_error_rate_percent=10,
                                          min_requests=40))
    ch.state = "serving"
    for _ in range(20):
        assert ch.observe(False, 0.0) is None  # 100 % errors, but under min_requests
    for _ in range(19):
        assert ch.observe(True, 0.001) is None
    assert ch.observe(True, 0.001) == "error_rate"  # 20/40 = 50 % > 10 %
    assert ch.state == "rolled_back" and "above the limit of 10%" in ch.reason
    assert not ch.takes("any")
    for _ in range(100):  # answers still in flight at the rollback: not counted, no 2nd trip
        assert ch.observe(False, 0.0) is None
    assert (ch.requests, ch.errors) == (40, 20)


def test_a_latency_limit_applies_with_min_requests_beyond_the_window() -> None:
    ch = Challenger("m", ChallengerConfig(mode="canary", weight=50, max_latency_p95_ms=1,
                                          min_requests=5000))
    ch.state = "serving"
    kinds = [ch.observe(True, 0.5) for _ in range(5000)]
    assert kinds[-1] == "latency" and kinds.count("latency") == 1


def test_compare_outputs_counts_exactly() -> None:
    labels_a, labels_b = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    pa = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    pb = np.array([[0.8, 0.2], [0.6, 0.4], [0.4, 0.6], [0.1, 0.9]])
    n, delta = compare_outputs("classification", (labels_a, pa), (labels_b, pb), True)
    assert n == 2 and delta is not None
    np.testing.assert_allclose(delta, [0.1, 0.4, 0.0, 0.6])
    n, delta = compare_outputs("classification", (labels_a, pa), (labels_b, pb), False)
    assert n == 2 and delta is None  # other classes: no probability to compare
    n, delta = compare_outputs("regression", (np.array([1.0, 2.0, 1e9]), None),
                               (np.array([1.0 + 1e-9, 2.5, 1e9 + 10]), None), True)
    assert n == 1  # 1e-9 and 1e9+10 are within the relative tolerance; 2.5 is not


# --- a canary in a real server ------------------------------------------------------


def test_canary_split_pin_and_metrics(tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    write_pair(models, "price", linear(0.0), linear(100.0), feature_names=["a", "b"])
    srv = start_server(models, env={"CHALLENGERS": json.dumps(
        {"price": {"mode": "canary", "weight": 10}})})
    srv.wait_ready()
    feats = {"a": [1.0], "b": [2.0]}
    ids = [f"order-{i}" for i in range(N_SPLIT)]

    def ask(chunk: list[str]) -> list[tuple[str, str, float]]:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            out = []
            for cid in chunk:
                r = predict(c, "price", feats, cid)
                assert r.status_code == 200, r.text
                b = r.json()
                out.append((cid, b["model_version"], b["prediction"][0]))
            return out

    with ThreadPoolExecutor(4) as pool:
        answers = [a for part in pool.map(ask, [ids[i::4] for i in range(4)]) for a in part]
    by_version = {v: [a for a in answers if a[1] == v] for v in ("1", "2")}
    n_canary = len(by_version["2"])
    sd = (N_SPLIT * 0.1 * 0.9) ** 0.5
    assert abs(n_canary - N_SPLIT * 0.1) < 5 * sd, n_canary
    assert len(by_version["1"]) + n_canary == N_SPLIT
    # each version's own answer, and the split is the hash's
    assert {round(p) for _, _, p in by_version["1"]} == {3}
    assert {round(p) for _, _, p in by_version["2"]} == {103}
    assert {cid for cid, _, _ in by_version["2"]} == {
        cid for cid in ids if split_bucket(cid) < 1000}
    # the same id meets the same version again
    canary_id = by_version["2"][0][0]
    assert predict(srv.client, "price", feats, canary_id).json()["model_version"] == "2"

    text = srv.client.get("/metrics").text
    assert metric(text, "rollout_requests_total", model_name="price", version="2",
                  role="canary", status="success") == n_canary + 1
    assert metric(text, "rollout_requests_total", model_name="price", version="1",
                  role="champion", status="success") == N_SPLIT - n_canary
    assert metric(text, "rollout_latency_seconds_count", version="2") == n_canary + 1

    # pinning: either version by name, whatever the id; an unknown one is a 404 naming both
    champion_id = by_version["1"][0][0]
    assert predict(srv.client, "price", feats, champion_id, pin="2").json()["model_version"] == "2"
    assert predict(srv.client, "price", feats, canary_id, pin="1").json()["model_version"] == "1"
    r = predict(srv.client, "price", feats, pin="7")
    assert r.status_code == 404
    assert "has no version 7 answering" in r.json()["detail"] and "2 (canary)" in r.json()["detail"]

    # a batch goes to one version per model, by the batch's id
    batch = {"requests": [{"model_name": "price", "features": feats}] * 3}
    r = srv.client.post("/predict/batch", json=batch, headers={"X-Correlation-ID": canary_id})
    assert [b["model_version"] for b in r.json()] == ["2", "2", "2"]

    # V2 splits on the same id, and its /versions/{v}/infer pins
    v2 = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    r = srv.client.post("/v2/models/price/infer", json=v2,
                        headers={"X-Correlation-ID": canary_id})
    assert r.json()["model_version"] == "2" and round(r.json()["outputs"][0]["data"][0]) == 103
    r = srv.client.post("/v2/models/price/infer", json=v2,
                        headers={"X-Correlation-ID": champion_id})
    assert r.json()["model_version"] == "1"
    r = srv.client.post("/v2/models/price/versions/2/infer", json=v2,
                        headers={"X-Correlation-ID": champion_id})
    assert r.json()["model_version"] == "2"

    health = srv.client.get("/health").json()
    (entry,) = health["models"]
    assert entry["challenger"]["state"] == "serving" and entry["challenger"]["version"] == "2"
    assert entry["challenger"]["weight"] == 10 and health["status"] == "healthy"


def test_canary_over_its_latency_limit_is_rolled_back_without_a_failed_request(
        tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    write_pair(models, "price", linear(0.0), linear(100.0), feature_names=["a", "b"])
    # no answer takes under a microsecond: the limit trips once min_requests answered
    srv = start_server(models, env={"CHALLENGERS": json.dumps({"price": {
        "mode": "canary", "weight": 50, "max_latency_p95_ms": 0.001, "min_requests": 20}})})
    srv.wait_ready()
    feats = {"a": [1.0], "b": [2.0]}
    versions = []
    for i in range(300):
        r = predict(srv.client, "price", feats, f"id-{i}")
        assert r.status_code == 200, r.text
        versions.append(r.json()["model_version"])
    first_rollback = versions.count("2")
    assert 20 <= first_rollback <= 40  # checked every 20 canary answers once past 20
    tail = versions[-100:]
    assert tail == ["1"] * 100
    health = srv.client.get("/health").json()
    ch = health["models"][0]["challenger"]
    assert ch["state"] == "rolled_back" and "p95 latency" in ch["reason"]
    assert health["status"] == "degraded" and health["ready"] is True
    assert any("rolled back" in r for r in health["reasons"])
    text = srv.client.get("/metrics").text
    assert metric(text, "rollout_rollbacks_total", model_name="price", reason="latency") == 1
    assert metric(text, "rollout_challenger_serving", model_name="price", version="2") == 0
    # pinning a rolled-back version is a 404 that names what serves
    assert predict(srv.client, "price", feats, pin="2").status_code == 404


def test_a_challenger_that_cannot_stand_in_is_refused_and_the_champion_serves(
        tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    save_model(linear(0.0), models / "price", version="1", feature_names=["a", "b"])
    save_model(linear(1.0), challenger_folder(models, "price"), version="2",
               feature_names=["a", "c"])
    srv = start_server(models, env={"CHALLENGERS": json.dumps(
        {"price": {"mode": "canary", "weight": 100}})})
    srv.wait_ready()
    for i in range(50):
        r = predict(srv.client, "price", {"a": [1.0], "b": [2.0]}, f"id-{i}")
        assert r.status_code == 200 and r.json()["model_version"] == "1"
    ch = srv.client.get("/health").json()["models"][0]["challenger"]
    assert ch["state"] == "failed"
    assert "features differ" in ch["reason"] and "missing: ['b']" in ch["reason"]


def test_a_canary_must_take_the_features_in_the_champions_order(
        tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    X = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    save_model(LinearRegression().fit(X, X[:, 0] * 2 + X[:, 1]), models / "price",
               version="1", feature_names=["a", "b"])
    save_model(LinearRegression().fit(X[:, ::-1], X[:, 0] * 2 + X[:, 1]),
               challenger_folder(models, "price"), version="2", feature_names=["b", "a"])
    srv = start_server(models, env={"CHALLENGERS": json.dumps(
        {"price": {"mode": "canary", "weight": 100}})})
    srv.wait_ready()
    ch = srv.client.get("/health").json()["models"][0]["challenger"]
    assert ch["state"] == "failed" and "another order" in ch["reason"]
    v2 = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 0.0]}]}
    r = srv.client.post("/v2/models/price/infer", json=v2)
    assert r.json()["model_version"] == "1" and round(r.json()["outputs"][0]["data"][0]) == 2


def test_a_broken_challenger_folder_is_refused(tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    write_pair(models, "price", linear(0.0), linear(1.0), feature_names=["a", "b"])
    meta = challenger_folder(models, "price") / "metadata.json"
    doc = json.loads(meta.read_text())
    doc["sha256"] = "0" * 64
    meta.write_text(json.dumps(doc))
    srv = start_server(models, env={"CHALLENGERS": json.dumps(
        {"price": {"mode": "shadow"}})})
    srv.wait_ready()
    r = predict(srv.client, "price", {"a": [1.0], "b": [2.0]})
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    ch = srv.client.get("/health").json()["models"][0]["challenger"]
    assert ch["state"] == "failed" and "sha256" in ch["reason"]
    text = srv.client.get("/metrics").text
    assert metric(text, "rollout_rollbacks_total", model_name="price",
                  reason="load_failed") == 1
    assert metric(text, "shadow_rows_total", model_name="price") == 0


# --- a shadow in a real server ------------------------------------------------------


def test_shadow_counts_exact_disagreements_and_never_answers(
        tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    # champion: label 1 for x > 0.5; shadow: for x > 0.7. Rows x = (i + 0.5)/100 (off
    # both thresholds) disagree for i = 50..69: 20 of 100, each by a probability of 1.
    write_pair(models, "risk", stump(0.0), stump(0.4), feature_names=["x"])
    write_pair(models, "price", linear(0.0), linear(0.0), feature_names=["a", "b"])
    srv = start_server(models, env={"CHALLENGERS": json.dumps(
        {"risk": {"mode": "shadow"}, "price": {"mode": "shadow"}})})
    srv.wait_ready()
    xs = [(i + 0.5) / 100 for i in range(100)]
    for i in range(0, 100, 10):  # ten requests of ten rows
        r = predict(srv.client, "risk", {"x": xs[i:i + 10]})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert r.json()["prediction"] == [int(x > 0.5) for x in xs[i:i + 10]]
    for i in range(30):
        r = predict(srv.client, "price", {"a": [float(i)], "b": [1.0]})
        assert r.json()["model_version"] == "1"

    def done() -> str | None:
        text = srv.client.get("/metrics").text
        ok = (metric(text, "shadow_rows_total", model_name="risk", result="evaluated") == 100
              and metric(text, "shadow_rows_total", model_name="price",
                         result="evaluated") == 30)
        return text if ok else None

    text = wait_for(done)
    assert text, srv.client.get("/metrics").text
    assert metric(text, "shadow_disagreements_total", model_name="risk") == 20
    assert metric(text, "shadow_delta_bucket", model_name="risk", le="1e-06") == 80
    assert metric(text, "shadow_delta_count", model_name="risk") == 100
    # a retrained identical regressor: no disagreement
    assert metric(text, "shadow_disagreements_total", model_name="price") == 0
    assert metric(text, "shadow_predict_seconds_count", model_name="risk", role="shadow") >= 1
    # the shadow answers only when asked by name
    r = predict(srv.client, "risk", {"x": [0.6]}, pin="2")
    assert r.json()["model_version"] == "2" and r.json()["prediction"] == [0]


def test_a_large_request_reaches_the_shadow_in_callback_sized_pieces(
        tmp_path: Path, start_server) -> None:
    from serving_runtime.server.rollout import SHADOW_BATCH_ROWS

    models = tmp_path / "models"
    write_pair(models, "risk", stump(0.0), stump(0.4), feature_names=["x"])
    srv = start_server(models, env={"CHALLENGERS": json.dumps({"risk": {"mode": "shadow"}}),
                                    "SHADOW_BUDGET_PERCENT": "100"})
    srv.wait_ready()
    xs = [(i % 100 + 0.5) / 100 for i in range(1000)]  # 20 % of them disagree
    assert predict(srv.client, "risk", {"x": xs}).status_code == 200
    text = wait_for(lambda: (t := srv.client.get("/metrics").text) and metric(
        t, "shadow_rows_total", model_name="risk", result="evaluated") == 1000 and t)
    assert text, srv.client.get("/metrics").text
    assert metric(text, "shadow_disagreements_total", model_name="risk") == 200
    calls = metric(text, "shadow_predict_seconds_count", model_name="risk", role="shadow")
    assert calls >= 1000 / SHADOW_BATCH_ROWS


def test_shadow_rows_beyond_the_queue_are_dropped_and_counted(
        tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    write_pair(models, "price", linear(0.0), linear(1.0), feature_names=["a", "b"])
    srv = start_server(models, env={"CHALLENGERS": json.dumps({"price": {"mode": "shadow"}}),
                                    "SHADOW_QUEUE_ROWS": "1"})
    srv.wait_ready()
    for _ in range(5):  # two rows each: never fit a one-row queue
        r = predict(srv.client, "price", {"a": [1.0, 2.0], "b": [2.0, 3.0]})
        assert r.status_code == 200
    text = srv.client.get("/metrics").text
    assert metric(text, "shadow_rows_total", model_name="price", result="dropped") == 10
    assert metric(text, "shadow_rows_total", model_name="price", result="evaluated") == 0


def test_invalid_challengers_setting_exits_2_naming_it(tmp_path: Path, start_server) -> None:
    models = tmp_path / "models"
    save_model(linear(0.0), models / "price", version="1", feature_names=["a", "b"])
    srv = start_server(models, env={"CHALLENGERS": '{"price": {"mode": "blue"}}'})
    assert srv.proc.wait(60) == 2
    assert "CHALLENGERS" in srv.logs() and "mode" in srv.logs()


def test_a_canary_that_fails_requests_never_fails_a_caller(tmp_path: Path) -> None:
    """A challenger that raises while predicting. Its files load and pass their golden
    check, so the fault is injected: the loaded canary's predict is replaced in-process
    (the one fake here), the rest is the real app."""
    from fastapi.testclient import TestClient

    from serving_runtime.server.app import create_app
    from serving_runtime.server.settings import Settings

    models = tmp_path / "models"
    write_pair(models, "price", linear(0.0), linear(100.0), feature_names=["a", "b"])
    app = create_app(Settings(models_dir=models, challengers=json.dumps({"price": {
        "mode": "canary", "weight": 50, "max_error_rate_percent": 20, "min_requests": 40}})))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/health").json()["ready"])
        canary = app.state.registry.challengers["price"].model

        def broken(X):
            raise RuntimeError("injected predict failure")

        object.__setattr__(canary.runtime, "predict", broken)
        feats = {"a": [1.0], "b": [2.0]}
        answers = [predict(client, "price", feats, f"id-{i}") for i in range(200)]
        assert {r.status_code for r in answers} == {200}
        assert {r.json()["model_version"] for r in answers} == {"1"}
        # a bad request is the request's fault: 422, and the canary is not charged for it
        bad = [predict(client, "price", {"a": [1.0]}, f"id-{i}") for i in range(10)]
        assert {r.status_code for r in bad} == {422}
        ch = client.get("/health").json()["models"][0]["challenger"]
        assert ch["state"] == "rolled_back" and "error rate 100.0% over 40" in ch["reason"]
        assert ch["errors"] == ch["requests"] == 40
        text = client.get("/metrics").text
        assert metric(text, "rollout_requests_total", version="2", status="server_error") == 40
        assert metric(text, "rollout_rollbacks_total", reason="error_rate") == 1
        assert metric(text, "inference_requests_total", model_name="price",
                      status="success") == 200
