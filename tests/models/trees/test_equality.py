"""The compiled fast path must answer exactly like the frameworks themselves: same classes,
probabilities within 1e-6, on 10,000 random rows, for every model kind the runtime serves;
and a fast path that disagrees must be caught by `verify`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

from serving_runtime.models.runtimes.sklearn.trees import compile_sklearn
from serving_runtime.models.runtimes.xgboost.trees import compile_xgboost
from serving_runtime.models.trees import PROBA_ATOL, NotCompilable, verify

N_ROWS = 10_000


def _rows(n_features: int, seed: int = 123) -> np.ndarray:
    # wider than the training data (make_* is ~N(0, 1..3)) so every branch is reached
    return np.random.default_rng(seed).normal(0, 2.5, size=(N_ROWS, n_features))


def _binary() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=1000, n_features=10, random_state=0)


def _multi() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=1200, n_features=12, n_informative=6, n_classes=4,
                               random_state=1)


def _regression() -> tuple[np.ndarray, np.ndarray]:
    return make_regression(n_samples=1000, n_features=8, noise=5.0, random_state=2)


def _assert_classifier_equal(ev: Any, model: Any, X: np.ndarray) -> None:
    pred, proba = ev.predict(X)
    np.testing.assert_array_equal(pred, model.predict(X))
    assert proba is not None
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=0, atol=PROBA_ATOL)
    # one row at a time is what a single-row /predict does
    for i in range(0, N_ROWS, 997):
        p1, q1 = ev.predict(X[i:i + 1])
        assert p1[0] == pred[i]
        np.testing.assert_array_equal(q1[0], proba[i])


@pytest.mark.parametrize("make", [
    lambda: RandomForestClassifier(n_estimators=10, random_state=0).fit(*_binary()),
    lambda: RandomForestClassifier(n_estimators=25, random_state=0).fit(*_multi()),
    lambda: ExtraTreesClassifier(n_estimators=15, random_state=0).fit(*_multi()),
], ids=["rf-binary", "rf-multiclass", "extratrees-multiclass"])
def test_sklearn_classifiers_match_predict_proba(make: Any) -> None:
    model = make()
    ev = compile_sklearn(model)
    assert ev is not None and ev.is_classifier
    _assert_classifier_equal(ev, model, _rows(model.n_features_in_))


def test_sklearn_string_class_labels_come_back_as_labels() -> None:
    X, y = _multi()
    labels = np.array(["buy", "hold", "sell", "wait"])[y]
    model = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, labels)
    ev = compile_sklearn(model)
    assert ev is not None
    _assert_classifier_equal(ev, model, _rows(12))


@pytest.mark.parametrize("make", [
    lambda: RandomForestRegressor(n_estimators=20, random_state=0).fit(*_regression()),
    lambda: DecisionTreeRegressor(random_state=0).fit(*_regression()),
], ids=["rf-regressor", "tree-regressor"])
def test_sklearn_regressors_match_predict(make: Any) -> None:
    model = make()
    ev = compile_sklearn(model)
    assert ev is not None and not ev.is_classifier
    X = _rows(8)
    pred, proba = ev.predict(X)
    assert proba is None
    ref = model.predict(X)
    np.testing.assert_allclose(pred, ref, rtol=1e-9, atol=0)


@pytest.mark.parametrize("make", [
    lambda: xgb.XGBClassifier(n_estimators=100, random_state=0).fit(*_binary()),
    lambda: xgb.XGBClassifier(n_estimators=40, max_depth=4, random_state=0).fit(*_multi()),
], ids=["xgb-binary", "xgb-multiclass"])
def test_xgboost_classifiers_match_predict_proba(make: Any) -> None:
    model = make()
    ev = compile_xgboost(model)
    assert ev is not None and ev.is_classifier
    _assert_classifier_equal(ev, model, _rows(model.n_features_in_))


def test_xgboost_regressor_matches_predict() -> None:
    X, y = _regression()
    model = xgb.XGBRegressor(n_estimators=80, random_state=0).fit(X, y)
    ev = compile_xgboost(model)
    assert ev is not None
    pred, proba = ev.predict(_rows(8))
    assert proba is None
    ref = model.predict(_rows(8))
    # float32 outputs: allow one float32 rounding step relative to the value
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-6)


def test_xgboost_best_iteration_is_honoured() -> None:
    X, y = _binary()
    model = xgb.XGBClassifier(n_estimators=60, early_stopping_rounds=3, random_state=0)
    model.fit(X[:800], y[:800], eval_set=[(X[800:], y[800:])], verbose=False)
    assert model.best_iteration < 59  # otherwise the test proves nothing
    ev = compile_xgboost(model, iteration_range=(0, model.best_iteration + 1))
    assert ev is not None
    _assert_classifier_equal(ev, model, _rows(10))


def test_unsupported_models_get_no_evaluator() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _binary()
    with pytest.raises(NotCompilable, match="LogisticRegression is not a supported tree"):
        compile_sklearn(LogisticRegression().fit(X, y))
    with pytest.raises(NotCompilable, match="gblinear"):
        compile_xgboost(xgb.XGBClassifier(n_estimators=5, booster="gblinear").fit(X, y))


def test_verify_reports_agreement_for_a_correct_evaluator() -> None:
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(*_binary())
    ev = compile_sklearn(model)
    assert ev is not None

    def reference(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return model.predict(X), model.predict_proba(X)

    report = verify(ev, reference, n_rows=2000, seed=5)
    assert report.ok, str(report)
    assert report.n_rows == 2000


def test_verify_catches_a_deliberately_wrong_evaluator() -> None:
    """Disagreement forced on purpose: the evaluator compiled from a *different* forest
    must be reported, never trusted."""
    X, y = _binary()
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    other = RandomForestClassifier(n_estimators=10, random_state=99).fit(X, y)
    ev = compile_sklearn(other)
    assert ev is not None

    def reference(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return model.predict(X), model.predict_proba(X)

    report = verify(ev, reference, n_rows=2000, seed=5)
    assert not report.ok
    assert report.first_bad_row is not None and report.max_abs_diff > PROBA_ATOL


def test_verify_catches_a_tiny_probability_drift() -> None:
    """A fast path off by 1e-5 in one class probability must fail the 1e-6 check."""
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(*_binary())
    ev = compile_sklearn(model)
    assert ev is not None

    def reference(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba = model.predict_proba(X).copy()
        proba[7, 0] += 1e-5
        return model.predict(X), proba

    report = verify(ev, reference, n_rows=100, seed=0)
    assert not report.ok and report.first_bad_row == 7


def test_verify_treats_a_failure_on_the_sample_as_not_ok() -> None:
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(*_binary())
    ev = compile_sklearn(model)
    assert ev is not None

    def reference(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("reference exploded")

    report = verify(ev, reference, n_rows=10)
    assert not report.ok and "reference exploded" in (report.error or "")
