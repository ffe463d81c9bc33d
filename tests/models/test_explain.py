"""Exact TreeSHAP for every tree model kind, against shap.TreeExplainer on 1,000 rows: the
loaded model folder's explanations (save_model, load_model: what the server explains)
equal shap's to 1e-6 relative, and base + contributions add up to the raw output."""

from __future__ import annotations

import numpy as np
import pytest
import shap
from sklearn import ensemble, tree
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression

from serving_runtime import save_model
from serving_runtime.errors import InvalidInputError
from serving_runtime.models.folder import load_model
from serving_runtime.models.inference import run_explain
from serving_runtime.models.trees.shap import ShapTree, tree_shap

N = 1000
RTOL = 1e-6


def _data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "binary":
        return make_classification(n_samples=N, n_features=8, random_state=1)
    if kind == "multi":
        return make_classification(n_samples=N, n_features=8, n_informative=4, n_classes=3,
                                   random_state=2)
    return make_regression(n_samples=N, n_features=8, noise=1.0, random_state=3)


def _models():
    import lightgbm as lgb
    import xgboost as xgb

    return {
        "sk-rf-binary": (lambda: ensemble.RandomForestClassifier(
            n_estimators=10, max_depth=8, random_state=0), "binary"),
        "sk-et-multi": (lambda: ensemble.ExtraTreesClassifier(
            n_estimators=10, max_depth=8, random_state=0), "multi"),
        "sk-dt-multi": (lambda: tree.DecisionTreeClassifier(max_depth=6, random_state=0),
                        "multi"),
        "sk-rf-reg": (lambda: ensemble.RandomForestRegressor(
            n_estimators=10, max_depth=10, random_state=0), "reg"),
        "sk-gb-binary": (lambda: ensemble.GradientBoostingClassifier(
            n_estimators=30, random_state=0), "binary"),
        "sk-gb-reg": (lambda: ensemble.GradientBoostingRegressor(
            n_estimators=30, random_state=0), "reg"),
        "xgb-binary": (lambda: xgb.XGBClassifier(n_estimators=30, max_depth=4), "binary"),
        "xgb-multi": (lambda: xgb.XGBClassifier(n_estimators=20, max_depth=4), "multi"),
        "xgb-reg": (lambda: xgb.XGBRegressor(n_estimators=30, max_depth=4), "reg"),
        "lgb-binary": (lambda: lgb.LGBMClassifier(n_estimators=20, verbose=-1), "binary"),
        "lgb-multi": (lambda: lgb.LGBMClassifier(n_estimators=20, verbose=-1), "multi"),
        "lgb-reg": (lambda: lgb.LGBMRegressor(n_estimators=20, verbose=-1), "reg"),
    }


def _raw_output(name: str, est, X: np.ndarray) -> np.ndarray:
    """What the contributions add up to, by the framework's own API."""
    if name.startswith("xgb"):
        raw = est.predict(X, output_margin=True)
    elif name.startswith("lgb"):
        raw = est.predict(X, raw_score=True)
    elif "gb-binary" in name or "gb-multi" in name:
        raw = est.decision_function(X)
    elif hasattr(est, "classes_"):
        raw = est.predict_proba(X)
    else:
        raw = est.predict(X)
    return np.asarray(raw, dtype=np.float64).reshape(len(X), -1)


@pytest.mark.parametrize("name", sorted(_models()))
def test_explanations_equal_shap(name, tmp_path):
    make, kind = _models()[name]
    X, y = _data(kind)
    est = make().fit(X, y)
    model = load_model(save_model(est, tmp_path / name, version="1", sample=X[:5]))
    got = model.explain(X)
    explainer = shap.TreeExplainer(est)
    ref = np.asarray(explainer.shap_values(X), dtype=np.float64)
    if ref.ndim == 2:
        ref = ref[:, :, None]
    assert got.contributions.shape == ref.shape
    scale = np.abs(ref).max()
    assert scale > 0
    np.testing.assert_allclose(got.contributions, ref, rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(got.base, np.atleast_1d(explainer.expected_value), rtol=RTOL)
    # base + contributions = the raw output (XGBoost sums in float32: 1e-6 of the range)
    raw = _raw_output(name, est, X)
    tol = 2e-6 * np.abs(raw).max() if name.startswith("xgb") else 1e-9
    np.testing.assert_allclose(got.contributions.sum(axis=1) + got.base, raw, atol=tol)


def test_multiclass_gradient_boosting_against_its_trees(tmp_path):
    """shap has no multi-class GradientBoostingClassifier: each class's contributions are
    the learning-rate-scaled sum of its stage trees', each checked by shap alone, and
    they add up to decision_function."""
    X, y = _data("multi")
    est = ensemble.GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y)
    model = load_model(save_model(est, tmp_path / "gb", version="1", sample=X[:5]))
    got = model.explain(X)
    want = np.zeros_like(got.contributions)
    for stage in est.estimators_:
        for k, t in enumerate(stage):
            want[:, :, k] += est.learning_rate * np.asarray(shap.TreeExplainer(t).shap_values(X))
    np.testing.assert_allclose(got.contributions, want, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(got.contributions.sum(axis=1) + got.base,
                               est.decision_function(X), atol=1e-9)
    assert (got.output, got.classes) == ("margin", (0, 1, 2))


def test_the_answer_names_features_and_classes(tmp_path):
    X, y = _data("multi")
    names = [f"feat_{i}" for i in range(8)]
    est = ensemble.RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0)
    model = load_model(save_model(est.fit(X, y), tmp_path / "rf", version="2.0",
                                  feature_names=names, sample=X[:5]))
    from serving_runtime.models.inference import prepare_predict

    body = {"model_name": "rf", "features": {n: X[:4, i].tolist() for i, n in enumerate(names)}}
    out = run_explain(prepare_predict(model, body, correlation_id="why-1"))
    assert out["output"] == "probability"
    assert list(out["explanations"]) == ["class_0", "class_1", "class_2"]
    proba = est.predict_proba(X[:4])
    for k, key in enumerate(out["explanations"]):
        e = out["explanations"][key]
        assert list(e["contributions"]) == names
        total = np.sum([e["contributions"][n] for n in names], axis=0) + e["base_value"]
        np.testing.assert_allclose(total, proba[:, k], atol=1e-12)
    assert (out["correlation_id"], out["model_version"]) == ("why-1", "2.0")


def test_a_model_without_trees_is_refused_by_name(tmp_path):
    X, y = _data("binary")
    model = load_model(save_model(LogisticRegression().fit(X, y), tmp_path / "lr",
                                  version="1", sample=X[:5]))
    with pytest.raises(InvalidInputError,
                       match=r"model lr cannot be explained: LogisticRegression is not a "
                             r"tree model"):
        model.explain(X[:2])


def test_tree_shap_of_a_hand_made_stump():
    """One split at x0 <= 0 with cover 3 left, 1 right, leaf values 1 and 5: the expected
    value is 2, a row going left gets -1 on x0, a row going right +3, others nothing."""
    stump = ShapTree(left=np.array([1, -1, -1]), right=np.array([2, -1, -1]),
                     feature=np.array([0, -2, -2]), cover=np.array([4.0, 3.0, 1.0]),
                     values=np.array([[0.0], [1.0], [5.0]]))
    assert stump.expected_value().tolist() == [2.0]
    goes_left = np.array([[True, False, False], [False, False, False]])
    phi = tree_shap(stump, goes_left, n_features=2)
    assert phi[:, :, 0].tolist() == [[-1.0, 0.0], [3.0, 0.0]]


def test_an_explanation_too_large_to_answer_is_refused(tmp_path, monkeypatch):
    """rows x (features + 1) x outputs beyond MAX_EXPLAIN_VALUES: a 413 naming the sizes,
    before any work (the JSON of a huge one could exhaust the worker's memory)."""
    from serving_runtime.errors import PayloadTooLargeError
    from serving_runtime.models import folder

    X, y = make_classification(n_samples=200, n_features=5, n_informative=3, n_classes=3,
                               random_state=0)
    est = ensemble.RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    model = load_model(save_model(est, tmp_path / "rf", version="1", sample=X[:3]))
    monkeypatch.setattr(folder, "MAX_EXPLAIN_VALUES", 10 * 6 * 3)
    assert model.explain(X[:10]).contributions.shape == (10, 5, 3)
    with pytest.raises(PayloadTooLargeError, match="11 rows x 5 features x 3 outputs is 198 "
                                                   "values; at most 180"):
        model.explain(X[:11])


def test_hist_gradient_boosting_is_refused_by_name(tmp_path):
    X, y = _data("binary")
    est = ensemble.HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    model = load_model(save_model(est, tmp_path / "hgb", version="1", sample=X[:5]))
    with pytest.raises(InvalidInputError, match="model hgb cannot be explained: "
                       "HistGradientBoostingClassifier has no explainer here yet"):
        model.explain(X[:2])
