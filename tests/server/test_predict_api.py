"""POST /predict and /predict/batch against a real server: predictions equal the
framework's own, and every bad input gets its status and a message naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.runtime_helpers import columns

MODELS = ["sk-binary", "sk-multi", "sk-reg", "xgb-binary", "xgb-multi", "xgb-reg"]


@pytest.mark.parametrize("name", MODELS)
def test_predictions_equal_framework(zoo, zoo_server, name):
    est, X = zoo.estimators[name], zoo.X[name]
    r = zoo_server.client.post("/predict", json={"model_name": name, "features": columns(X)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1.0.0"
    want = est.predict(X)
    if name.endswith("reg"):
        np.testing.assert_array_equal(np.asarray(body["prediction"]), want.astype(np.float64))
        assert body["confidence"] is None and body["probabilities"] is None
        return
    assert body["prediction"] == want.tolist()
    proba = est.predict_proba(X).astype(np.float64)
    classes = est.classes_.tolist()
    assert list(body["probabilities"]) == [f"class_{c}" for c in classes]
    for i, c in enumerate(classes):
        np.testing.assert_array_equal(np.asarray(body["probabilities"][f"class_{c}"]),
                                      proba[:, i])
    np.testing.assert_array_equal(np.asarray(body["confidence"]), proba.max(axis=1))


@pytest.mark.parametrize("name", ["sk-multi", "xgb-reg"])
def test_single_rows_equal_framework(zoo, zoo_server, name):
    """The one-row path (inline, not in a thread) gives the same answers."""
    est, X = zoo.estimators[name], zoo.X[name][:20]
    for row in X:
        r = zoo_server.client.post("/predict", json={"model_name": name,
                                                     "features": columns(row[None, :])})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.asarray(r.json()["prediction"]),
                                      est.predict(row[None, :]))


def test_columns_are_reordered_by_name(zoo, zoo_server):
    X = zoo.X["sk-binary"][:10]
    cols = columns(X)
    reversed_cols = dict(reversed(list(cols.items())))
    a = zoo_server.client.post("/predict", json={"model_name": "sk-binary", "features": cols})
    b = zoo_server.client.post("/predict", json={"model_name": "sk-binary",
                                                 "features": reversed_cols})
    assert a.status_code == b.status_code == 200
    assert a.json()["probabilities"] == b.json()["probabilities"]
    assert a.json()["prediction"] == zoo.estimators["sk-binary"].predict(X).tolist()


def test_correlation_id_echo_and_generation(zoo, zoo_server):
    feats = columns(zoo.X["sk-binary"][:1])
    r = zoo_server.client.post("/predict", json={"model_name": "sk-binary", "features": feats,
                                                 "correlation_id": "order-42"})
    assert r.json()["correlation_id"] == "order-42"
    assert r.headers["x-correlation-id"] == "order-42"
    r = zoo_server.client.post("/predict", json={"model_name": "sk-binary", "features": feats},
                               headers={"X-Correlation-ID": "from-header"})
    assert r.json()["correlation_id"] == "from-header"
    assert r.headers["x-correlation-id"] == "from-header"
    r = zoo_server.client.post("/predict", json={"model_name": "sk-binary", "features": feats})
    cid = r.json()["correlation_id"]
    assert len(cid) == 32 and r.headers["x-correlation-id"] == cid
    assert isinstance(r.json()["latency_ms"], float) and r.json()["latency_ms"] > 0
    # errors carry it too
    r = zoo_server.client.post("/predict", json={"model_name": "nope", "features": feats},
                               headers={"X-Correlation-ID": "err-1"})
    assert r.headers["x-correlation-id"] == "err-1" and r.json()["correlation_id"] == "err-1"


def six(**override):
    feats = {f"f{i}": [0.5, -0.5] for i in range(6)}
    feats.update(override)
    return feats


ERROR_CASES = [
    # (id, body, status, message fragments)
    ("unknown-model", {"model_name": "nope", "features": six()}, 404, ["Model nope not found"]),
    ("missing", {"model_name": "sk-binary", "features": {"f0": [1.0], "f1": [1.0]}}, 422,
     ["missing features: f2, f3, f4, f5"]),
    ("unknown", {"model_name": "sk-binary", "features": six(zz=[1.0, 2.0])}, 422,
     ["unknown features: zz"]),
    ("misnamed", {"model_name": "sk-binary",
                  "features": {**{f"f{i}": [1.0] for i in range(5)}, "F5": [1.0]}}, 422,
     ["missing features: f5", "unknown features: F5"]),
    ("non-numeric", {"model_name": "sk-binary", "features": six(f3=["abc", 1.0])}, 422,
     ["non-numeric values in features: f3"]),
    ("null-value", {"model_name": "sk-binary", "features": six(f1=[None, 1.0])}, 422,
     ["non-numeric values in features: f1"]),
    ("boolean", {"model_name": "sk-binary", "features": six(f2=[True, 1.0])}, 422,
     ["non-numeric values in features: f2"]),
    ("not-a-list", {"model_name": "sk-binary", "features": six(f4=1.5)}, 422,
     ["not a list: f4 (number)"]),
    ("ragged", {"model_name": "sk-binary", "features": six(f2=[1.0])}, 422,
     ["unequal lengths", "f2=1", "f0=2"]),
    ("empty-features", {"model_name": "sk-binary", "features": {}}, 422,
     ["empty input", "f0, f1"]),
    ("empty-columns", {"model_name": "sk-binary", "features": {f"f{i}": [] for i in range(6)}},
     422, ["empty input", "no rows"]),
    ("features-not-object", {"model_name": "sk-binary", "features": [1, 2]}, 422,
     ["'features' must be an object"]),
    ("no-features", {"model_name": "sk-binary"}, 422, ["missing field 'features'"]),
    ("no-model-name", {"features": six()}, 422, ["missing field 'model_name'"]),
    ("model-name-type", {"model_name": 3, "features": six()}, 422,
     ["'model_name' must be a non-empty string"]),
    ("extra-field", {"model_name": "sk-binary", "features": six(), "feature": {}}, 422,
     ["unknown fields in request body: feature"]),
    ("body-array", [1, 2], 422, ["request body must be a JSON object, got array"]),
    ("bad-correlation", {"model_name": "sk-binary", "features": six(), "correlation_id": 5},
     422, ["'correlation_id' must be a non-empty string"]),
    ("huge-int", {"model_name": "sk-binary", "features": six(f0=[10**400, 1])}, 422,
     ["NaN or infinite values in features: f0"]),
]


@pytest.mark.parametrize("body,status,fragments",
                         [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_error_cases(zoo_server, body, status, fragments):
    r = zoo_server.client.post("/predict", content=json.dumps(body))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    for frag in fragments:
        assert frag in detail, detail


@pytest.mark.parametrize("literal,feature", [("NaN", "f1"), ("Infinity", "f3"),
                                             ("-Infinity", "f5")])
def test_nan_and_inf_literals_name_the_feature(zoo_server, literal, feature):
    # Python's json.dumps writes these literals; they must get a 422, not a vague 400.
    feats = {f"f{i}": ([literal] if f"f{i}" == feature else ["0.5"]) for i in range(6)}
    raw = '{"model_name": "sk-binary", "features": {' + ", ".join(
        f'"{k}": [{v[0]}]' for k, v in feats.items()) + "}}"
    r = zoo_server.client.post("/predict", content=raw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"NaN or infinite values in features: {feature}"


def test_malformed_json_is_400(zoo_server):
    r = zoo_server.client.post("/predict", content=b'{"model_name": "sk-binary", "feat')
    assert r.status_code == 400
    assert r.json()["detail"].startswith("malformed JSON body")


def test_oversized_body_is_413(zoo, start_server):
    srv = start_server(zoo.models_dir, args=["--max-body-bytes", "2000"])
    srv.wait_startup_done()
    big = {"model_name": "sk-binary", "features": {f"f{i}": [0.123456] * 100 for i in range(6)}}
    r = srv.client.post("/predict", json=big)
    assert r.status_code == 413
    assert "exceeds the limit of 2000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold while streaming too
        raw = json.dumps(big).encode()
        for i in range(0, len(raw), 500):
            yield raw[i:i + 500]

    r = srv.client.post("/predict", content=chunks())
    assert r.status_code == 413
    assert "exceeds the limit of 2000 bytes" in r.json()["detail"]
    small = {"model_name": "sk-binary", "features": {f"f{i}": [0.1] for i in range(6)}}
    assert srv.client.post("/predict", json=small).status_code == 200


def test_batch(zoo, zoo_server):
    reqs = []
    for name in ("sk-binary", "sk-binary", "xgb-reg", "sk-binary"):
        X = zoo.X[name][:3]
        reqs.append({"model_name": name, "features": columns(X)})
    reqs[1]["correlation_id"] = "mine"
    r = zoo_server.client.post("/predict/batch", json={"requests": reqs, "batch_size": 2},
                               headers={"X-Correlation-ID": "batch-7"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out) == 4
    for req, res in zip(reqs, out, strict=True):
        one = zoo_server.client.post("/predict", json=req).json()
        assert res["prediction"] == one["prediction"]
        assert res["probabilities"] == one["probabilities"]
    assert [o["correlation_id"] for o in out] == ["batch-7-0", "mine", "batch-7-2", "batch-7-3"]
    assert r.headers["x-correlation-id"] == "batch-7"


def test_batch_size_may_be_an_integral_double(zoo_server):
    # JSON Schema's integer (the OpenAPI document's) includes 2.0; the fuzzer sent one
    body = {"requests": [{"model_name": "sk-binary", "features": six()}] * 3, "batch_size": 2.0}
    r = zoo_server.client.post("/predict/batch", json=body)
    assert r.status_code == 200 and len(r.json()) == 3, r.text


@pytest.mark.parametrize("body,status,fragment", [
    ({"requests": []}, 422, "'requests' must be a non-empty list"),
    ({"requests": [{"model_name": "sk-binary", "features": six()}], "batch_size": 0}, 422,
     "'batch_size' must be a positive integer"),
    ({"requests": [{"model_name": "sk-binary", "features": six()}], "batch_size": 1.5}, 422,
     "'batch_size' must be a positive integer"),
    ({"requests": [{"model_name": "sk-binary", "features": six()}], "batch_size": True}, 422,
     "'batch_size' must be a positive integer"),
    ({"requests": [{"model_name": "sk-binary", "features": six()},
                   {"model_name": "ghost", "features": six()}]}, 404,
     "requests[1]: Model ghost not found"),
    ({"requests": [{"model_name": "sk-binary", "features": six(f0=[1.0])}]}, 422,
     "requests[0]: ragged input"),
    ({"requests": [], "extra": 1}, 422, "unknown fields in batch body: extra"),
])
def test_batch_errors(zoo_server, body, status, fragment):
    r = zoo_server.client.post("/predict/batch", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_openapi_documents_the_wire_shapes(zoo_server):
    doc = zoo_server.client.get("/openapi.json").json()
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/PredictRequest"
    assert "features" in doc["components"]["schemas"]["PredictRequest"]["properties"]
    assert "/v2/models/{name}/infer" in doc["paths"]
    assert zoo_server.client.get("/docs").status_code == 200
