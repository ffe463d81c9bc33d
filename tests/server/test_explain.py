"""Explanations through a real server: `POST /explain`, the V2 `contributions` output over
REST and over gRPC (tritonclient), and the engine's client in local, REST and gRPC mode, all
the same numbers; errors named; explanations counted as requests but kept out of the
latency histogram the alerts and autoscaler read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg

from serving_runtime import save_model
from serving_runtime.client import InferenceClient, InvalidInputError, ModelNotFoundError
from tests.support.metrics_text import metric_sum
from tests.support.runtime_helpers import RuntimeServer

NAMES = ["spread", "momentum", "volume", "volatility", "skew"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    import xgboost as xgb
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("explain") / "models"
    Xm, ym = make_classification(n_samples=400, n_features=5, n_informative=3, n_classes=3,
                                 random_state=0)
    Xr, yr = make_regression(n_samples=400, n_features=5, random_state=1)
    for name, est, X, y in [
        ("rf-multi", RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0),
         Xm, ym),
        ("xgb-binary", xgb.XGBClassifier(n_estimators=10, max_depth=3), Xm, ym == 1),
        ("gb-reg", GradientBoostingRegressor(n_estimators=10, random_state=0), Xr, yr),
        ("logit", LogisticRegression(max_iter=500), Xm, ym),
    ]:
        save_model(est.fit(X, y), root / name, version="3.1", feature_names=NAMES,
                   sample=X[:5])
    return root, {"multi": Xm[:20], "reg": Xr[:20]}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory) -> Iterator[RuntimeServer]:
    srv = RuntimeServer(models[0], grpc=True,
                        log_path=tmp_path_factory.mktemp("log") / "explain.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _features(X: np.ndarray) -> dict[str, list[float]]:
    return {n: X[:, i].tolist() for i, n in enumerate(NAMES)}


def _same(a: dict, b: dict, exact: bool = True) -> None:
    assert a["output"] == b["output"]
    assert list(a["explanations"]) == list(b["explanations"])
    for key, ea in a["explanations"].items():
        eb = b["explanations"][key]
        assert list(ea["contributions"]) == NAMES == list(eb["contributions"])
        if exact:
            assert ea == eb, key
        else:
            np.testing.assert_allclose(ea["base_value"], eb["base_value"], rtol=1e-12)
            for n in NAMES:
                np.testing.assert_allclose(ea["contributions"][n], eb["contributions"][n],
                                           rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "data", "keys", "output"), [
    ("rf-multi", "multi", ["class_0", "class_1", "class_2"], "probability"),
    ("xgb-binary", "multi", ["class_1"], "margin"),  # the positive class's log-odds
    ("gb-reg", "reg", ["value"], "margin"),
])
def test_every_way_gives_the_same_explanation(server, models, name, data, keys, output):
    root, rows = models
    X = rows[data]
    local = InferenceClient(remote=False, models_dir=root).explain(name, _features(X), "e-1")
    assert list(local["explanations"]) == keys and local["output"] == output
    with InferenceClient(remote=True, url=server.url) as rest, \
            InferenceClient(remote=True, url=f"grpc://{server.grpc_address}") as grpc:
        _same(local, rest.explain(name, _features(X), "e-1"))
        _same(local, grpc.explain(name, _features(X), "e-1"), exact=False)  # FP64 raw
    # the V2 output through Triton's client: [rows, (outputs,) features + 1]
    client = tg.InferenceServerClient(server.grpc_address)
    inp = tg.InferInput("input-0", list(X.shape), "FP64")
    inp.set_data_from_numpy(X)
    res = client.infer(name, [inp], outputs=[tg.InferRequestedOutput("contributions")])
    client.close()
    m = res.as_numpy("contributions")
    m = m[:, None, :] if m.ndim == 2 else m
    assert m.shape == (len(X), len(keys), len(NAMES) + 1)
    params = res.get_output("contributions").parameters
    assert json.loads(params["outputs"].string_param) == keys
    assert json.loads(params["features"].string_param) == [*NAMES, "base_value"]
    for k, key in enumerate(keys):
        e = local["explanations"][key]
        np.testing.assert_allclose(m[:, k, -1], e["base_value"], rtol=1e-12)
        np.testing.assert_allclose(m[:, k, :-1].T, [e["contributions"][n] for n in NAMES],
                                   rtol=1e-12, atol=1e-15)


def test_errors_are_named(server, models):
    X = models[1]["multi"][:2]
    with InferenceClient(remote=True, url=server.url) as rest:
        with pytest.raises(InvalidInputError, match="model logit cannot be explained: "
                           "LogisticRegression is not a tree model"):
            rest.explain("logit", _features(X))
        with pytest.raises(ModelNotFoundError, match="Model nope not found"):
            rest.explain("nope", _features(X))
        with pytest.raises(InvalidInputError, match="missing features: skew"):
            rest.explain("rf-multi", {n: X[:, i].tolist() for i, n in enumerate(NAMES[:4])})
    body = {"inputs": [{"name": "input-0", "shape": [2, 5], "datatype": "FP64",
                        "data": X.ravel().tolist()}], "outputs": [{"name": "contributions"}]}
    resp = server.client.post("/v2/models/logit/infer", json=body)
    assert resp.status_code == 422 and "LogisticRegression" in resp.json()["error"]


def test_explanations_are_counted_but_not_timed(server, models):
    X = models[1]["reg"][:3]

    def series() -> tuple[float, float]:
        text = server.client.get("/metrics").text
        return (metric_sum(text, "inference_requests_total", model_name="gb-reg",
                           status="success"),
                metric_sum(text, "inference_latency_seconds_count", model_name="gb-reg"))

    before = series()
    with InferenceClient(remote=True, url=server.url) as rest:
        rest.explain("gb-reg", _features(X))
        rest.explain("gb-reg", _features(X))
        rest.predict("gb-reg", _features(X))
    after = series()
    assert after[0] - before[0] == 3  # every request counts
    assert after[1] - before[1] == 1  # only the prediction is timed
