"""Local and remote mode give the same answers and raise the same errors.

The remote side is a real runtime (`python -m serving_runtime`, uvicorn) on a loopback
port serving real model folders; the local side loads the same folders in-process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pytest

from serving_runtime.client import (
    ClientSettings,
    InferenceClient,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PredictResult,
)
from serving_runtime.schemas import PredictResponse
from tests.support.client_support import IRIS_FEATURES, columns, make_models, run_runtime

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("client-models")
    return root, make_models(root)


@pytest.fixture(scope="module")
def remote_url(models, tmp_path_factory) -> Iterator[str]:
    root, _ = models
    log = tmp_path_factory.mktemp("client-log") / "runtime.log"
    with run_runtime(root, log, "--max-body-bytes", str(MAX_BODY)) as rt:
        yield rt.url


@pytest.fixture(scope="module")
def clients(models, remote_url) -> Iterator[tuple[InferenceClient, InferenceClient]]:
    root, _ = models
    settings = ClientSettings(max_body_bytes=MAX_BODY)
    local = InferenceClient(settings, remote=False, models_dir=root)
    remote = InferenceClient(settings, remote=True, url=remote_url, timeout=30)
    assert (local.mode, remote.mode) == ("local", "remote")
    yield local, remote
    remote.close()


def same_result(a: dict, b: dict) -> None:
    """Everything but latency must match exactly (same code path, exact float JSON)."""
    assert set(a) == set(b)
    for key in a:
        if key != "latency_ms":
            assert a[key] == b[key], key
    assert a["latency_ms"] >= 0 and b["latency_ms"] >= 0


@pytest.mark.parametrize(
    "name", ["sk-iris-rf", "sk-cancer-lr", "sk-diabetes-gbr", "xgb-iris", "xgb-diabetes"]
)
def test_local_and_remote_agree(models, clients, name):
    _, specs = models
    names, X = specs[name]
    local, remote = clients
    rows = X[::3][:50]
    body = columns(names, rows)
    got_local = local.predict(name, body, correlation_id=f"parity-{name}")
    got_remote = remote.predict(name, body, correlation_id=f"parity-{name}")
    same_result(got_local, got_remote)
    assert got_local["correlation_id"] == f"parity-{name}"
    assert got_local["model_version"] == "1.0.0"
    assert len(got_local["prediction"]) == len(rows)
    if "diabetes" in name:
        assert got_local["confidence"] is None and got_local["probabilities"] is None
    else:
        probs = got_local["probabilities"]
        assert all(math.isclose(sum(p), 1.0, abs_tol=1e-6) for p in zip(*probs.values(),
                                                                          strict=True))


def test_results_equal_the_framework(models, clients):
    """The shared path is not just self-consistent: it matches the estimator's own output."""
    import skops.io as sio

    root, specs = models
    names, X = specs["sk-iris-rf"]
    est = sio.load(root / "sk-iris-rf" / "model.skops",
                   trusted=sio.get_untrusted_types(file=root / "sk-iris-rf" / "model.skops"))
    local, remote = clients
    got = remote.predict("sk-iris-rf", columns(names, X))
    assert got["prediction"] == est.predict(X).tolist()
    np.testing.assert_array_equal(np.array(got["probabilities"]["class_2"]),
                                  est.predict_proba(X)[:, 2])
    same_result(local.predict("sk-iris-rf", columns(names, X), correlation_id="c"),
                remote.predict("sk-iris-rf", columns(names, X), correlation_id="c"))


def test_numpy_columns_and_feature_order(models, clients):
    _, specs = models
    names, X = specs["xgb-iris"]
    local, remote = clients
    # Columns given in reverse order, as numpy arrays: reordered by name on both sides.
    body = {n: X[:7, i] for i, n in reversed(list(enumerate(names)))}
    same_result(local.predict("xgb-iris", body, "np"), remote.predict("xgb-iris", body, "np"))


def test_batch_parity_and_sub_correlation_ids(models, clients):
    _, specs = models
    local, remote = clients
    reqs = []
    for name in ("sk-iris-rf", "sk-iris-rf", "xgb-diabetes", "sk-cancer-lr"):
        names, X = specs[name]
        reqs.append({"model_name": name, "features": columns(names, X[:4])})
    reqs[2]["correlation_id"] = "own-id"
    a = local.predict_batch(reqs, batch_size=2, correlation_id="batch-1")
    b = remote.predict_batch(reqs, batch_size=2, correlation_id="batch-1")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        same_result(x, y)
    assert [r["correlation_id"] for r in a] == ["batch-1-0", "batch-1-1", "own-id", "batch-1-3"]
    single = remote.predict("xgb-diabetes", reqs[2]["features"])
    assert single["prediction"] == b[2]["prediction"]


def test_generated_correlation_ids(models, clients):
    _, specs = models
    names, X = specs["sk-iris-rf"]
    for client in clients:
        first = client.predict("sk-iris-rf", columns(names, X[:1]))
        second = client.predict("sk-iris-rf", columns(names, X[:1]))
        assert len(first["correlation_id"]) == 32
        assert first["correlation_id"] != second["correlation_id"]


def iris_row(**override: object) -> dict:
    row: dict = {n: [1.0] for n in IRIS_FEATURES}
    row.update(override)
    return row


BAD_INPUTS = [
    ("missing feature", "sk-iris-rf",
     {n: [1.0] for n in IRIS_FEATURES[:3]}, InvalidInputError, "missing features: petal_width"),
    ("unknown feature", "sk-iris-rf", iris_row(colour=[1.0]), InvalidInputError, "colour"),
    ("NaN", "sk-iris-rf", iris_row(sepal_width=[float("nan")]), InvalidInputError,
     "NaN or infinite values in features: sepal_width"),
    ("infinity", "xgb-iris", iris_row(petal_length=[float("inf")]), InvalidInputError,
     "NaN or infinite values in features: petal_length"),
    ("numpy NaN", "xgb-iris", iris_row(petal_width=np.array([np.nan])), InvalidInputError,
     "NaN or infinite values in features: petal_width"),
    ("null", "sk-iris-rf", iris_row(sepal_length=[None]), InvalidInputError,
     "non-numeric values in features: sepal_length"),
    ("string", "xgb-iris", iris_row(sepal_length=["5.1"]), InvalidInputError,
     "non-numeric values in features: sepal_length"),
    ("ragged", "sk-iris-rf", iris_row(sepal_length=[1.0, 2.0]), InvalidInputError,
     "ragged input"),
    ("empty", "sk-iris-rf", {n: [] for n in IRIS_FEATURES}, InvalidInputError,
     "empty input"),
    ("no features", "sk-iris-rf", {}, InvalidInputError, "'features' has no columns"),
    ("unknown model", "no-such-model", iris_row(), ModelNotFoundError,
     "Model no-such-model not found"),
    ("path-like model name", "../etc", iris_row(), ModelNotFoundError, "Model ../etc not found"),
    ("oversized body", "sk-iris-rf", iris_row(sepal_length=[1.0] * 20000),
     PayloadTooLargeError, "MAX_BODY_BYTES"),
]


@pytest.mark.parametrize(("label", "model", "features", "exc_type", "needle"), BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_same_error_both_modes(clients, label, model, features, exc_type, needle):
    local, remote = clients
    errors = []
    for client in (local, remote):
        with pytest.raises(exc_type) as info:
            client.predict(model, features, correlation_id="err-1")
        errors.append(info.value)
    loc, rem = errors
    assert type(loc) is type(rem)
    assert loc.status_code == rem.status_code == exc_type.status_code
    assert loc.message == rem.message, label
    assert needle in loc.message
    assert loc.correlation_id == rem.correlation_id == "err-1"


def test_batch_errors_name_the_index_in_both_modes(models, clients):
    _, specs = models
    names, X = specs["sk-iris-rf"]
    ok = {"model_name": "sk-iris-rf", "features": columns(names, X[:1])}
    cases = [
        ([ok, {"model_name": "gone", "features": {}}], ModelNotFoundError,
         "requests[1]: Model gone not found"),
        ([ok, ok, {"model_name": "sk-iris-rf", "features": iris_row(x=[1.0])}],
         InvalidInputError, "requests[2]: "),
        ([], InvalidInputError, "'requests' must be a non-empty list"),
    ]
    local, remote = clients
    for reqs, exc_type, needle in cases:
        msgs = []
        for client in (local, remote):
            with pytest.raises(exc_type) as info:
                client.predict_batch(reqs)
            msgs.append(info.value.message)
        assert msgs[0] == msgs[1]
        assert needle in msgs[0]


def test_errors_are_serving_errors(clients):
    for client in clients:
        with pytest.raises(InferenceError):
            client.predict("sk-iris-rf", {})


def test_predict_result_is_the_response_shape():
    """The client's PredictResult (a TypedDict) and the server's PredictResponse (pydantic)
    live side by side in serving_runtime.schemas and must name the same keys and types."""
    fields = {name: f.annotation for name, f in PredictResponse.model_fields.items()}
    assert get_type_hints(PredictResult) == fields
    assert list(get_type_hints(PredictResult)) == list(fields)
