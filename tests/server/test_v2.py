"""Open Inference Protocol v2 routes against a real server, in the shapes MLServer's
sklearn/xgboost runtimes use (so KServe/MLServer/Triton clients work unchanged)."""

from __future__ import annotations

import numpy as np
import pytest


def v2_matrix(X, outputs=("predict", "predict_proba")):
    return {"id": "req-1", "inputs": [{"name": "input-0", "shape": list(X.shape),
                                       "datatype": "FP64", "data": X.ravel().tolist()}],
            "outputs": [{"name": o} for o in outputs]}


@pytest.mark.parametrize("name", ["sk-binary", "sk-multi", "xgb-binary", "xgb-multi"])
def test_v2_infer_classifier_equals_framework(zoo, zoo_server, name):
    est, X = zoo.estimators[name], zoo.X[name]
    r = zoo_server.client.post(f"/v2/models/{name}/infer", json=v2_matrix(X))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == name and body["model_version"] == "1.0.0"
    assert body["id"] == "req-1"
    pred, proba = body["outputs"]
    assert pred["name"] == "predict" and pred["shape"] == [len(X), 1]
    assert pred["datatype"] == "INT64" and pred["data"] == est.predict(X).tolist()
    want = est.predict_proba(X).astype(np.float64)
    assert proba["name"] == "predict_proba" and proba["shape"] == list(want.shape)
    np.testing.assert_array_equal(np.asarray(proba["data"]), want.ravel())


@pytest.mark.parametrize("name", ["sk-reg", "xgb-reg"])
def test_v2_infer_regressor_default_output(zoo, zoo_server, name):
    est, X = zoo.estimators[name], zoo.X[name]
    body = v2_matrix(X)
    del body["outputs"]  # MLServer's default: predict only
    r = zoo_server.client.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "predict"
    np.testing.assert_array_equal(np.asarray(out["data"]), est.predict(X).astype(np.float64))


def test_v2_one_input_per_feature_and_nested_data(zoo, zoo_server):
    est, X = zoo.estimators["sk-binary"], zoo.X["sk-binary"][:7]
    inputs = [{"name": f"f{i}", "shape": [7], "datatype": "FP64", "data": X[:, i].tolist()}
              for i in reversed(range(6))]  # any order: matched by name
    r = zoo_server.client.post("/v2/models/sk-binary/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == est.predict(X).tolist()
    nested = {"inputs": [{"name": "x", "shape": [7, 6], "datatype": "FP32",
                          "data": X.tolist()}]}
    r = zoo_server.client.post("/v2/models/sk-binary/infer", json=nested)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == est.predict(X).tolist()


@pytest.mark.parametrize("body,status,fragment", [
    ({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1] * 5}]}, 422,
     "input 'x' has shape [1, 5]; the model takes one input of shape [rows, 6]"),
    ({"inputs": [{"name": "x", "shape": [2, 6], "datatype": "FP64", "data": [1] * 6}]}, 422,
     "shape [2, 6] needs 12 values, data has 6"),
    ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "BYTES", "data": ["a"] * 6}]}, 422,
     "datatype 'BYTES' is not supported"),
    ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                  "data": [1, 2, "z", 4, 5, 6]}]}, 422, "non-numeric values in input 'x'"),
    ({"inputs": [{"name": "f0", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "q", "shape": [1], "datatype": "FP64", "data": [1]}]}, 422,
     "missing features: f1, f2, f3, f4, f5; unknown features: q"),
    ({"inputs": []}, 422, "'inputs' must be a non-empty list"),
    ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", "data": [1] * 6}],
      "outputs": [{"name": "transform"}]}, 422,
     "unknown outputs: transform; model sk-binary has: predict, predict_proba"),
])
def test_v2_errors(zoo_server, body, status, fragment):
    r = zoo_server.client.post("/v2/models/sk-binary/infer", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


def test_v2_regressor_has_no_proba_output(zoo_server):
    body = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [0] * 5}],
            "outputs": [{"name": "predict_proba"}]}
    r = zoo_server.client.post("/v2/models/sk-reg/infer", json=body)
    assert r.status_code == 422
    assert r.json()["error"] == ("unknown outputs: predict_proba; "
                                 "model sk-reg has: predict, contributions")


def test_v2_unknown_model_and_malformed(zoo_server):
    r = zoo_server.client.post("/v2/models/ghost/infer", json={"inputs": []})
    assert r.status_code == 404 and r.json() == {"error": "Model ghost not found"}
    r = zoo_server.client.post("/v2/models/sk-binary/infer", content=b"{nope")
    assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON body")


def test_v2_health_and_metadata(zoo_server):
    c = zoo_server.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/v2/models/xgb-multi/ready").json() == {"name": "xgb-multi", "ready": True}
    assert c.get("/v2/models/ghost/ready").status_code == 404
    meta = c.get("/v2/models/xgb-multi").json()
    assert meta["name"] == "xgb-multi" and meta["versions"] == ["1.0.0"]
    assert meta["platform"] == "xgboost"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 6]}]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["outputs"][1]["shape"] == [-1, 3]
    assert c.get("/v2/models/xgb-multi/versions/1.0.0").status_code == 200
    r = c.get("/v2/models/xgb-multi/versions/9")
    assert r.status_code == 404 and "not found" in r.json()["error"]
    assert c.get("/v2").json()["name"] == "n1v1-ml-serving"
