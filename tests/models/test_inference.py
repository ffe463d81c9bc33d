"""The pure request code (`predict_from_body`, `infer_v2`) on model kinds the server tests
do not cover: string class labels, classifiers without predict_proba, pipelines, raw
XGBoost Boosters (incl. multi:softmax), early-stopped XGBoost models."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from serving_runtime import infer_v2, load_model, predict_from_body, save_model
from tests.support.runtime_helpers import columns


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=400, n_features=5, n_informative=3, n_classes=3,
                               random_state=7)
    return X, y


def body(name, X):
    return {"model_name": name, "features": columns(X)}


def test_string_labels(tmp_path, data):
    X, y = data
    labels = np.array(["buy", "hold", "sell"])[y]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, labels)
    model = load_model(save_model(clf, tmp_path / "pipe", version="1", sample=X[:5]))
    out = predict_from_body(model, body("pipe", X))
    assert out["prediction"] == clf.predict(X).tolist()
    assert list(out["probabilities"]) == ["class_buy", "class_hold", "class_sell"]
    np.testing.assert_array_equal(out["probabilities"]["class_sell"], clf.predict_proba(X)[:, 2])
    v2 = infer_v2(model, {"inputs": [{"name": "x", "shape": [3, 5], "datatype": "FP64",
                                      "data": X[:3].ravel().tolist()}]})
    assert v2["outputs"][0]["datatype"] == "BYTES"
    assert v2["outputs"][0]["data"] == clf.predict(X[:3]).tolist()


def test_classifier_without_predict_proba(tmp_path, data):
    X, y = data
    clf = LinearSVC(random_state=0).fit(X, y)
    model = load_model(save_model(clf, tmp_path / "lsvc", version="1", sample=X[:5]))
    out = predict_from_body(model, body("lsvc", X))
    assert out["prediction"] == clf.predict(X).tolist()
    assert out["confidence"] is None and out["probabilities"] is None


def test_raw_booster_and_softmax(tmp_path, data):
    X, y = data
    dtrain = xgb.DMatrix(X, label=y)
    for objective in ("multi:softprob", "multi:softmax"):
        booster = xgb.train({"objective": objective, "num_class": 3, "max_depth": 3}, dtrain,
                            num_boost_round=10)
        name = objective.replace(":", "-")
        model = load_model(save_model(booster, tmp_path / name, version="1", sample=X[:5]))
        out = predict_from_body(model, body(name, X))
        raw = booster.predict(xgb.DMatrix(X))
        if objective == "multi:softprob":
            assert out["prediction"] == np.argmax(raw, axis=1).tolist()
            np.testing.assert_array_equal(out["probabilities"]["class_2"], raw[:, 2])
        else:
            assert out["prediction"] == raw.astype(int).tolist()
            assert out["probabilities"] is None


def test_early_stopped_xgboost_uses_best_iteration(tmp_path, data):
    X, y = data
    clf = xgb.XGBClassifier(n_estimators=200, max_depth=4, learning_rate=0.5,
                            early_stopping_rounds=3)
    clf.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert clf.best_iteration < 199  # really stopped early, else the test proves nothing
    model = load_model(save_model(clf, tmp_path / "early", version="1", sample=X[:5]))
    out = predict_from_body(model, body("early", X))
    assert out["prediction"] == clf.predict(X).tolist()
    np.testing.assert_array_equal(out["probabilities"]["class_1"],
                                  clf.predict_proba(X)[:, 1].astype(np.float64))


def test_correlation_id_precedence(tmp_path, data):
    X, y = data
    model = load_model(save_model(LinearSVC().fit(X, y), tmp_path / "c", version="1"))
    b = body("c", X[:1])
    assert predict_from_body(model, b, correlation_id="hdr")["correlation_id"] == "hdr"
    b["correlation_id"] = "own"
    assert predict_from_body(model, b, correlation_id="hdr")["correlation_id"] == "own"


def test_json_nested_deeper_than_the_parsers_go_is_a_400():
    from serving_runtime.errors import BadRequestError
    from serving_runtime.models.inference import parse_json

    with pytest.raises(BadRequestError, match="malformed JSON body"):
        parse_json(b"[" * 5000 + b"]" * 5000)
