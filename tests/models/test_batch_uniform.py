"""/predict/batch's one-matrix validation (`inference._prepare_uniform`): a batch of one-row
requests for one model is checked in a few passes over all values instead of request by
request. It must give the same answers as one-by-one /predict calls, and for any body it
does not accept, the per-request path must answer with exactly the error it always gave."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from serving_runtime import load_model, predict_from_body
from serving_runtime.errors import InvalidInputError, ModelNotFoundError, ServingError
from serving_runtime.models.inference import (
    _prepare_each,
    _prepare_uniform,
    group_requests,
    predict_batch_from_body,
    prepare_batch,
    prepare_predict,
    run_batch,
)
from tests.support.runtime_helpers import columns

MODELS = ("sk-binary", "sk-multi", "sk-reg", "xgb-binary", "xgb-multi", "xgb-reg")


@pytest.fixture(scope="module")
def models(zoo):
    return {name: load_model(zoo.models_dir / name) for name in MODELS}


def getter(models):
    def get(name):
        if name not in models:
            raise ModelNotFoundError(name)
        return models[name]
    return get


def one_row_requests(name, X):
    return [{"model_name": name, "features": columns(X[i:i + 1])} for i in range(len(X))]


@pytest.mark.parametrize("name", MODELS)
def test_uniform_batch_equals_the_general_path_and_one_by_one(zoo, models, name):
    X = zoo.X[name][:40]
    reqs = one_row_requests(name, X)
    reqs[3]["correlation_id"] = "own-id"
    get = getter(models)
    fast = _prepare_uniform(get, reqs, "b")
    assert fast is not None  # the one-matrix path is the one taken for this body
    general = group_requests(_prepare_each(get, reqs, "b"))
    assert len(fast) == len(general) == 1
    (a,), (b,) = fast, general
    assert a.model is b.model and a.correlation_ids == b.correlation_ids
    assert a.offsets == b.offsets == list(range(41))
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.dtype == b.X.dtype and a.X.shape == b.X.shape
    out = predict_batch_from_body(get, {"requests": reqs}, correlation_id="b")
    assert [{k: v for k, v in r.items() if k != "latency_ms"} for r in out] == [
        {k: v for k, v in r.items() if k != "latency_ms"} for r in run_batch(general, None)]
    # batch_size splits the model calls, not the answers
    split = predict_batch_from_body(get, {"requests": reqs, "batch_size": 7},
                                    correlation_id="b")
    assert [r["prediction"] for r in split] == [r["prediction"] for r in out]
    assert [r["correlation_id"] for r in out] == [
        "own-id" if i == 3 else f"b-{i}" for i in range(len(reqs))]
    # One-by-one /predict may take another evaluator (a 1-row fast path versus a 40-row
    # framework call) or another BLAS kernel: same labels, probabilities within 1e-6.
    for req, res in zip(reqs, out, strict=True):
        one = predict_from_body(models[name], req)
        if res["probabilities"] is None:
            np.testing.assert_allclose(res["prediction"], one["prediction"], rtol=1e-6)
        else:
            assert res["prediction"] == one["prediction"]
            for key, col in res["probabilities"].items():
                np.testing.assert_allclose(col, one["probabilities"][key], atol=1e-6)


def test_uniform_batch_accepts_any_key_order_and_ints(models):
    names = list(models["sk-binary"].feature_names)
    a = {"model_name": "sk-binary", "features": {n: [i] for i, n in enumerate(names)}}
    b = {"model_name": "sk-binary",
         "features": {n: [float(i)] for i, n in reversed(list(enumerate(names)))}}
    groups = _prepare_uniform(getter(models), [a, b], None)
    assert groups is not None
    X = groups[0].X
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[:1], prepare_predict(models["sk-binary"], a).X)
    # generated ids when neither the batch nor the request has one: distinct
    first, second = groups[0].correlation_ids
    assert first != second


_DROP = object()

# (mutation of request 5, what the per-request path must say)
CASES = [
    ({"f2": [True]}, "non-numeric values in features: f2"),
    ({"f2": ["1.5"]}, "non-numeric values in features: f2"),
    ({"f2": "1"}, "not a list: f2 (string)"),
    ({"f2": []}, "empty columns for features: f2"),
    ({"f2": [1.0, 2.0]}, "ragged input"),
    ({"f2": [[1.0]]}, "non-numeric values in features: f2"),
    ({"f2": [None]}, "non-numeric values in features: f2"),
    ({"f2": {"0": 1.0}}, "not a list: f2 (object)"),
    ({"f2": 3.0}, "not a list: f2 (number)"),
    ({"f2": [float("nan")]}, "NaN or infinite values in features: f2"),
    ({"f2": [float("inf")]}, "NaN or infinite values in features: f2"),
    ({"f2": [10 ** 400]}, "NaN or infinite values in features: f2"),
    ({"extra": [1.0]}, "unknown features: extra"),
    ({"f2": _DROP}, "missing features: f2"),
    ({"correlation_id": 7}, "'correlation_id' must be a non-empty string"),
    ({"correlation_id": ""}, "'correlation_id' must be a non-empty string"),
    ({"correlation_id": "x" * 257}, "'correlation_id' must be a non-empty string"),
    ({"correlation_id": "a\nb"}, "'correlation_id' must be a non-empty string"),
    ({"priority": 1}, "unknown fields in request body: priority"),
    ({"features": [1.0] * 6}, "'features' must be an object"),
]


@pytest.mark.parametrize("change,fragment", CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_rejected_rows_get_the_per_request_error(zoo, models, change, fragment):
    reqs = one_row_requests("sk-binary", zoo.X["sk-binary"][:10])
    bad = copy.deepcopy(reqs[5])
    for key, value in change.items():
        if key in ("correlation_id", "priority", "features"):
            bad[key] = value
        elif value is _DROP:
            bad["features"].pop(key)
        else:
            bad["features"][key] = value
    reqs[5] = bad
    assert _prepare_uniform(getter(models), reqs, "b") is None
    with pytest.raises(InvalidInputError) as got:
        prepare_batch(getter(models), {"requests": reqs}, correlation_id="b")
    with pytest.raises(InvalidInputError) as alone:
        prepare_predict(models["sk-binary"], bad)
    assert got.value.message == f"requests[5]: {alone.value.message}"
    assert fragment in got.value.message


def test_unknown_model_in_a_uniform_looking_batch_is_404_with_index(zoo, models):
    reqs = one_row_requests("sk-binary", zoo.X["sk-binary"][:4])
    for r in reqs:
        r["model_name"] = "ghost"
    with pytest.raises(ServingError) as got:
        prepare_batch(getter(models), {"requests": reqs})
    assert got.value.status_code == 404
    assert got.value.message == "requests[0]: Model ghost not found"


def test_mixed_models_and_multi_row_requests_take_the_general_path(zoo, models):
    a = one_row_requests("sk-binary", zoo.X["sk-binary"][:3])
    b = one_row_requests("xgb-binary", zoo.X["xgb-binary"][:3])
    multi = {"model_name": "sk-binary", "features": columns(zoo.X["sk-binary"][:4])}
    for reqs in (a + b, a + [multi]):
        assert _prepare_uniform(getter(models), reqs, None) is None
        out = predict_batch_from_body(getter(models), {"requests": reqs})
        for req, res in zip(reqs, out, strict=True):
            assert res["prediction"] == predict_from_body(models[req["model_name"]],
                                                          req)["prediction"]
