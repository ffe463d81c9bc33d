"""The direct XGBoost predict (runtimes/xgboost/direct.py) answers bit-for-bit like
`Booster.inplace_predict`, and anything it cannot do goes to the public call."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification, make_regression

import serving_runtime.models.runtimes.xgboost.direct as direct
from serving_runtime.models.runtimes.xgboost.direct import DirectDensePredictor, direct_predictor
from serving_runtime.models.runtimes.xgboost.runtime import XGBoostRuntime


def _models() -> dict[str, tuple[xgb.Booster, tuple[int, int]]]:
    Xc, yc = make_classification(n_samples=500, n_features=8, n_informative=5, n_classes=3,
                                 random_state=0)
    Xb, yb = make_classification(n_samples=500, n_features=8, random_state=1)
    Xr, yr = make_regression(n_samples=500, n_features=8, random_state=2)
    early = xgb.XGBClassifier(n_estimators=200, early_stopping_rounds=5, max_depth=3)
    early.fit(Xb[:400], yb[:400], eval_set=[(Xb[400:], yb[400:])], verbose=False)
    return {
        "binary": (xgb.XGBClassifier(n_estimators=30).fit(Xb, yb).get_booster(), (0, 0)),
        "softprob": (xgb.XGBClassifier(n_estimators=20).fit(Xc, yc).get_booster(), (0, 0)),
        "softmax": (xgb.train({"objective": "multi:softmax", "num_class": 3},
                              xgb.DMatrix(Xc, label=yc), 10), (0, 0)),
        "regressor": (xgb.XGBRegressor(n_estimators=30).fit(Xr, yr).get_booster(), (0, 0)),
        "early-stopped": (early.get_booster(), (0, early.best_iteration + 1)),
    }


MODELS = _models()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_direct_equals_inplace_predict_bit_for_bit(kind: str) -> None:
    booster, rng_ = MODELS[kind]
    pred = direct_predictor(booster, rng_, 8)
    assert pred is not None
    rng = np.random.default_rng(5)
    for rows in (1, 2, 64, 2000):
        for dtype in (np.float64, np.float32):
            X = rng.normal(0, 2, size=(rows, 8)).astype(dtype)
            X[rng.random(X.shape) < 0.1] = np.nan
            want = booster.inplace_predict(X, iteration_range=rng_, validate_features=False)
            got = pred(X)
            assert got is not None and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    if kind == "early-stopped":  # the iteration range is honoured, not all 200 trees
        full = booster.inplace_predict(X, validate_features=False)
        assert not np.array_equal(pred(X), full)


def test_inputs_it_does_not_take_go_to_the_public_call() -> None:
    booster, rng_ = MODELS["binary"]
    runtime = XGBoostRuntime(booster)
    assert runtime._direct is not None
    X = np.random.default_rng(0).normal(size=(20, 16))[:, ::2]  # not C-contiguous
    assert runtime._direct(X) is None
    assert runtime._direct(X.astype(np.int64)) is None
    labels, proba = runtime.predict(X)
    want = booster.inplace_predict(X, validate_features=False)
    np.testing.assert_array_equal(proba[:, 1], want)


def test_missing_internals_mean_the_public_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A future xgboost without `xgboost.core._LIB` cannot be installed here, so its absence
    is simulated where the module looks it up."""

    def gone() -> None:
        raise ImportError("cannot import name '_LIB' from 'xgboost.core'")

    monkeypatch.setattr(direct, "_c_library", gone)
    booster, rng_ = MODELS["regressor"]
    assert direct_predictor(booster, rng_, 8) is None
    runtime = XGBoostRuntime(booster)
    assert runtime._direct is None
    X = np.random.default_rng(1).normal(size=(5, 8))
    np.testing.assert_array_equal(runtime.predict(X)[0],
                                  booster.inplace_predict(X, validate_features=False))


def test_a_direct_call_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disagreement cannot be caused with a healthy xgboost, so the direct call's output is
    perturbed by one float32 step to prove the load-time check refuses it."""
    real_call = DirectDensePredictor.__call__

    def off_by_one_ulp(self: DirectDensePredictor, X: np.ndarray) -> np.ndarray | None:
        out = real_call(self, X)
        return None if out is None else np.nextafter(out, np.float32(np.inf))

    monkeypatch.setattr(direct.DirectDensePredictor, "__call__", off_by_one_ulp)
    booster, rng_ = MODELS["softprob"]
    assert direct_predictor(booster, rng_, 8) is None


def test_concurrent_calls_from_threads_each_get_their_own_answer() -> None:
    """Requests of 256+ rows predict in worker threads: XGBoost's output buffer is per
    thread, and each call copies it out before returning."""
    from concurrent.futures import ThreadPoolExecutor

    booster, rng_ = MODELS["softprob"]
    pred = direct_predictor(booster, rng_, 8)
    assert pred is not None
    rng = np.random.default_rng(9)
    inputs = [rng.normal(0, 2, size=(int(rng.integers(1, 400)), 8)) for _ in range(64)]
    want = [booster.inplace_predict(X, validate_features=False) for X in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(pred, inputs))
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)
