"""The names of the original design document (`your_model`, `test_model`) and the kinds
trading teams use (`Fraud.v2`) serve end to end: save_model, a real runtime process, every
route that takes a name, /health, the metrics' model_name label, the client in both modes.
One model per framework, LightGBM with string labels among them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from serving_runtime import save_model
from serving_runtime.client import InferenceClient
from tests.support.runtime_helpers import RuntimeServer, columns

X, Y = make_classification(n_samples=400, n_features=5, random_state=3)
LABELS = np.array(["buy", "sell"])[Y]
ROWS = X[:7]


def _models() -> dict[str, object]:
    return {
        "your_model": RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y),
        "test_model": lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(X, LABELS),
        "Fraud.v2": xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X, Y),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeServer, dict]]:
    root = tmp_path_factory.mktemp("names") / "models"
    models = _models()
    for name, est in models.items():
        save_model(est, root / name, version="1", sample=X[:3])
    srv = RuntimeServer(root, env={"FAST_PATH_CHECK_ROWS": "200"})
    try:
        srv.wait_ready()
        yield srv, models
    finally:
        srv.stop()


def _expected(est: object) -> list:
    return np.asarray(est.predict(ROWS)).tolist()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["your_model", "test_model", "Fraud.v2"])
def test_predict_batch_v2_and_reload_take_the_name(served, name: str) -> None:
    srv, models = served
    want = _expected(models[name])
    r = srv.client.post("/predict", json={"model_name": name, "features": columns(ROWS)})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == want

    r = srv.client.post("/predict/batch", json={"requests": [
        {"model_name": name, "features": columns(ROWS[:2])},
        {"model_name": name, "features": columns(ROWS[2:])}]})
    assert r.status_code == 200, r.text
    assert [p for one in r.json() for p in one["prediction"]] == want

    body = {"inputs": [{"name": "input-0", "shape": list(ROWS.shape), "datatype": "FP64",
                        "data": ROWS.ravel().tolist()}]}
    r = srv.client.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == name
    assert srv.client.get(f"/v2/models/{name}/ready").status_code == 200
    assert srv.client.get(f"/v2/models/{name}").json()["name"] == name

    r = srv.client.post(f"/reload/{name}")
    assert r.status_code in (200, 202), r.text


def test_health_and_metrics_name_the_models_as_served(served) -> None:
    srv, models = served
    doc = srv.client.get("/health").json()
    assert sorted(doc["models_loaded"]) == sorted(models)
    assert doc["ignored"] == []
    srv.client.post("/predict", json={"model_name": "your_model", "features": columns(ROWS)})
    text = srv.client.get("/metrics").text
    assert 'model_name="your_model"' in text and 'model_name="Fraud.v2"' in text


def test_the_lightgbm_model_answers_with_its_string_labels_on_the_fast_path(served) -> None:
    srv, models = served
    r = srv.client.post("/predict", json={"model_name": "test_model", "features": columns(ROWS)})
    doc = r.json()
    assert set(doc["prediction"]) <= {"buy", "sell"}
    want = models["test_model"].predict_proba(ROWS)  # type: ignore[attr-defined]
    got = np.column_stack([doc["probabilities"]["class_buy"], doc["probabilities"]["class_sell"]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    metrics = srv.client.get("/metrics").text
    assert 'model_fast_path{model_name="test_model"} 1.0' in metrics, metrics[-3000:]


def test_the_client_uses_the_names_in_both_modes(served, tmp_path: Path) -> None:
    srv, models = served
    with InferenceClient(remote=True, url=srv.url) as remote:
        for name in models:
            assert remote.predict(name, columns(ROWS))["prediction"] == _expected(models[name])
    local_root = tmp_path / "models"
    for name, est in models.items():
        save_model(est, local_root / name, version="1")
    with InferenceClient(remote=False, models_dir=local_root) as local:
        for name in models:
            assert local.predict(name, columns(ROWS))["prediction"] == _expected(models[name])


@pytest.mark.parametrize("bad", ["..", ".hidden", "-x", "a b", "x" * 129])
def test_a_name_that_cannot_be_a_model_is_a_clear_4xx(served, bad: str) -> None:
    srv, _ = served
    r = srv.client.post("/predict", json={"model_name": bad, "features": columns(ROWS)})
    assert r.status_code == 404, r.text
    assert r.json()["detail"].startswith(f"Model {bad[:100]}") and "not found" in r.text
